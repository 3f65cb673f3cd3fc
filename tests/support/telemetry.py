"""Spans, log records and mapped rows built by hand, with unique ids, for writer/delivery tests."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from exporter import conventions as c
from exporter.mapping import Row, log_record_to_rows, span_to_rows

START = 1_764_942_323_000_000_000  # 2025-12-05 13:45:23 UTC
RESOURCE = Resource({"service.name": "reliability-test"})
_ids = itertools.count(1)


def _context(n: int) -> SpanContext:
    # Sampled, as the SDK's batch processors only take sampled spans.
    return SpanContext(0x1000 + n, 0x2000 + n, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def request_span(path: str = "/ping", status: int = 200, /, **attributes: Any) -> ReadableSpan:
    n = next(_ids)
    base: dict[str, Any] = {
        "http.method": "GET",
        "http.target": path,
        "http.route": path,
        "http.status_code": status,
    }
    return ReadableSpan(
        name=f"GET {path}",
        context=_context(n),
        kind=SpanKind.SERVER,
        attributes={**base, **attributes},
        events=[],
        status=Status(StatusCode.UNSET),
        start_time=START + n * 1000,
        end_time=START + n * 1000 + 5_000_000,
        resource=RESOURCE,
    )


def failing_request_span(path: str = "/boom") -> ReadableSpan:
    """A 500 with an exception event: one api_request_logs row and one error_logs row."""
    n = next(_ids)
    event = Event(
        c.EXCEPTION_EVENT,
        {c.EXCEPTION_TYPE: "ValueError", c.EXCEPTION_MESSAGE: "bad", c.EXCEPTION_STACKTRACE: "tb"},
        timestamp=START + n * 1000 + 1,
    )
    return ReadableSpan(
        name=f"GET {path}",
        context=_context(n),
        kind=SpanKind.SERVER,
        attributes={"http.method": "GET", "http.target": path, "http.status_code": 500},
        events=[event],
        status=Status(StatusCode.ERROR),
        start_time=START + n * 1000,
        end_time=START + n * 1000 + 5_000_000,
        resource=RESOURCE,
    )


def job_span(job_id: str | None = None, /, **attributes: Any) -> ReadableSpan:
    n = next(_ids)
    base: dict[str, Any] = {c.JOB_ID: job_id or f"job-{n}", c.JOB_TYPE: "restart", c.JOB_STATUS: "success"}
    return ReadableSpan(
        name="job restart",
        context=_context(n),
        kind=SpanKind.INTERNAL,
        attributes={**base, **attributes},
        events=[],
        status=Status(StatusCode.UNSET),
        start_time=START + n * 1000,
        end_time=START + n * 1000 + 5_000_000,
        resource=RESOURCE,
    )


def event_log(event_name: str, **attributes: Any) -> ReadableLogRecord:
    record = LogRecord(
        timestamp=START + next(_ids) * 1000,
        severity_number=SeverityNumber.INFO,
        body=event_name,
        attributes={c.EVENT_ID: str(uuid.uuid4()), **attributes},
        event_name=event_name,
    )
    return ReadableLogRecord(log_record=record, resource=RESOURCE)


def device_state_log(device_id: str = "dev_001") -> ReadableLogRecord:
    return event_log(c.DEVICE_STATE_EVENT, **{c.DEVICE_ID: device_id, c.DEVICE_NEW_STATE: "online"})


def request_rows(count: int, path: str = "/ping") -> list[Row]:
    return [row for _ in range(count) for _, row in span_to_rows(request_span(path))]


def rows_by_table(*records: ReadableSpan | ReadableLogRecord) -> dict[str, list[Row]]:
    batch: dict[str, list[Row]] = {}
    for record in records:
        mapped = span_to_rows(record) if isinstance(record, ReadableSpan) else log_record_to_rows(record)
        for table, row in mapped:
            batch.setdefault(table, []).append(row)
    return batch
