"""The pure mapping, with spans and log records built by hand (fixed ids and times)."""

from __future__ import annotations

import gc
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from bench.workload import generate
from exporter import conventions as c
from exporter.mapping import error_fingerprint, log_record_to_rows, normalise_message, span_to_rows
from exporter.schema import WRITE_COLUMNS

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
START = 1_764_942_323_000_000_000  # 2025-12-05 13:45:23 UTC
RESOURCE = Resource({"service.name": "homepot-api"})


def make_span(
    attributes: dict[str, Any],
    *,
    kind: SpanKind = SpanKind.SERVER,
    duration_ns: int = 45_000_000,
    events: list[Event] | None = None,
    status: Status | None = None,
    name: str = "GET /api/v1/devices",
) -> ReadableSpan:
    return ReadableSpan(
        name=name,
        context=SpanContext(TRACE_ID, SPAN_ID, is_remote=False),
        kind=kind,
        attributes=attributes,
        events=events or [],
        status=status or Status(StatusCode.UNSET),
        start_time=START,
        end_time=START + duration_ns,
        resource=RESOURCE,
    )


def make_log(
    attributes: dict[str, Any],
    *,
    event_name: str | None,
    body: Any = None,
    severity: SeverityNumber = SeverityNumber.ERROR,
) -> ReadableLogRecord:
    record = LogRecord(
        timestamp=START,
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        severity_number=severity,
        body=body,
        attributes=attributes,
        event_name=event_name,
    )
    return ReadableLogRecord(log_record=record, resource=RESOURCE)


def only_row(rows: list[tuple[str, dict[str, Any]]], table: str) -> dict[str, Any]:
    matching = [row for name, row in rows if name == table]
    assert len(matching) == 1, rows
    assert set(matching[0]) == set(WRITE_COLUMNS[table]), "every written column, nothing else"
    return matching[0]


OLD_SEMCONV = {
    "http.method": "GET",
    "http.target": "/api/v1/devices?page=2",
    "http.route": "/api/v1/devices",
    "http.status_code": 200,
    "net.peer.ip": "203.0.113.7",
    "http.user_agent": "curl/8.5",
    "http.request.body.size": 0,
    "http.response.body.size": 512,
    "enduser.id": "user123",
}
STABLE_SEMCONV = {
    "http.request.method": "GET",
    "url.path": "/api/v1/devices",
    "url.query": "page=2",
    "http.route": "/api/v1/devices",
    "http.response.status_code": 200,
    "client.address": "203.0.113.7",
    "user_agent.original": "curl/8.5",
    "http.request.body.size": 0,
    "http.response.body.size": 512,
    "user.id": "user123",
}


def test_server_span_maps_to_request_row_with_old_and_stable_semconv_alike() -> None:
    old = only_row(span_to_rows(make_span(OLD_SEMCONV)), "api_request_logs")
    stable = only_row(span_to_rows(make_span(STABLE_SEMCONV)), "api_request_logs")
    assert old == stable
    assert old["timestamp"] == datetime(2025, 12, 5, 13, 45, 23, tzinfo=UTC)
    assert old["endpoint"] == "/api/v1/devices"  # the query string is never stored
    assert old["route"] == "/api/v1/devices"
    assert (old["method"], old["status_code"], old["response_time_ms"]) == ("GET", 200, 45.0)
    assert (old["user_id"], old["ip_address"], old["user_agent"]) == ("user123", "203.0.113.7", "curl/8.5")
    assert (old["request_size_bytes"], old["response_size_bytes"]) == (0, 512)
    assert old["error_message"] is None
    assert old["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert old["span_id"] == "b7ad6b7169203331"
    assert old["service_name"] == "homepot-api"
    assert old["event_id"] == str(uuid.UUID(old["event_id"]))  # a uuid's canonical text


def test_no_row_is_tracked_by_the_garbage_collector() -> None:
    """Rows hold text, numbers, datetimes and None only, so no row dict is ever tracked: the
    collector walks none of a batch's rows however long it waits (a uuid.UUID id made every row
    tracked)."""
    stream = generate(400)
    rows = [
        *(row for span in stream.spans for row in span_to_rows(span)),
        *(row for record in stream.logs for row in log_record_to_rows(record)),
    ]
    assert {table for table, _ in rows} == set(WRITE_COLUMNS)
    tracked = [
        (table, column, type(value).__name__)
        for table, row in rows
        for column, value in row.items()
        if gc.is_tracked(value)
    ]
    assert tracked == []
    assert not any(gc.is_tracked(row) for _, row in rows)


def test_event_id_is_deterministic_per_span_and_differs_between_tables() -> None:
    exception = Event("exception", {"exception.type": "ValueError", "exception.message": "bad"}, START + 1)
    span = make_span({**OLD_SEMCONV, "http.status_code": 500}, events=[exception])
    first, second = span_to_rows(span), span_to_rows(span)
    assert [row["event_id"] for _, row in first] == [row["event_id"] for _, row in second]
    assert first[0][1]["event_id"] != first[1][1]["event_id"]


def test_4xx_keeps_the_error_detail_and_5xx_the_exception() -> None:
    not_found = {**OLD_SEMCONV, "http.status_code": 404, c.HTTP_ERROR_MESSAGE: "Device not found"}
    assert (
        only_row(span_to_rows(make_span(not_found)), "api_request_logs")["error_message"]
        == "Device not found"
    )
    bare_404 = {**OLD_SEMCONV, "http.status_code": 404}
    assert only_row(span_to_rows(make_span(bare_404)), "api_request_logs")["error_message"] == "Not Found"
    exception = Event(
        "exception",
        {"exception.type": "builtins.KeyError", "exception.message": "'sales'", "exception.stacktrace": "Tb"},
        START + 5,
    )
    crashed = make_span(
        {**OLD_SEMCONV, "http.status_code": 500, c.HTTP_ERROR_MESSAGE: "Internal Server Error"},
        events=[exception],
        status=Status(StatusCode.ERROR, "KeyError: 'sales'"),
    )
    rows = span_to_rows(crashed)
    assert only_row(rows, "api_request_logs")["error_message"] == "KeyError: 'sales'"
    error = only_row(rows, "error_logs")
    assert error["category"] == "api"
    assert error["severity"] == "error"
    assert error["error_code"] == "KeyError"
    assert error["error_message"] == "'sales'"
    assert error["stack_trace"] == "Tb"
    assert error["endpoint"] == "/api/v1/devices"
    assert error["user_id"] == "user123"
    assert error["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert json.loads(error["context"])["route"] == "/api/v1/devices"
    assert error["fingerprint"] == error_fingerprint("builtins.KeyError", "'sales'")


def test_client_and_internal_spans_are_not_requests() -> None:
    assert span_to_rows(make_span(OLD_SEMCONV, kind=SpanKind.CLIENT)) == []
    assert span_to_rows(make_span({"db.system": "postgresql"}, kind=SpanKind.INTERNAL)) == []


def test_job_span_maps_status_duration_retry_and_extra() -> None:
    attributes = {
        c.JOB_ID: "job_458",
        c.JOB_TYPE: "config_change",
        c.DEVICE_ID: "dev_003",
        c.JOB_INITIATED_BY: "user456",
        c.JOB_STATUS: "failed",
        c.JOB_DURATION_MS: 5000,
        c.JOB_RETRY_COUNT: 3,
        c.JOB_ERROR_CODE: "E_TIMEOUT",
        c.JOB_ERROR_MESSAGE: "no answer",
        c.EXTRA: json.dumps({"firmware": "1.2.3"}),
    }
    row = only_row(span_to_rows(make_span(attributes, kind=SpanKind.INTERNAL)), "job_outcomes")
    assert row["timestamp"] == datetime(2025, 12, 5, 13, 45, 23, 45000, tzinfo=UTC)  # completion time
    assert (row["job_id"], row["job_type"], row["device_id"]) == ("job_458", "config_change", "dev_003")
    assert (row["status"], row["duration_ms"], row["retry_count"]) == ("failed", 5000, 3)
    assert (row["error_code"], row["error_message"]) == ("E_TIMEOUT", "no answer")
    assert row["initiated_by"] == "user456"
    assert json.loads(row["extra_data"]) == {"firmware": "1.2.3"}


def test_job_span_from_a_foreign_sdk_derives_status_and_duration() -> None:
    exception = Event("exception", {"exception.type": "IOError", "exception.message": "disk full"}, START)
    span = make_span(
        {c.JOB_ID: "j1", c.JOB_TYPE: "restart"},
        kind=SpanKind.INTERNAL,
        events=[exception],
        status=Status(StatusCode.ERROR),
        duration_ns=1_200_000_000,
    )
    row = only_row(span_to_rows(span), "job_outcomes")
    assert (row["status"], row["duration_ms"]) == ("failed", 1200)
    assert (row["error_code"], row["error_message"]) == ("IOError", "disk full")
    assert row["retry_count"] == 0
    ok = only_row(span_to_rows(make_span({c.JOB_ID: "j2"}, kind=SpanKind.INTERNAL)), "job_outcomes")
    assert (ok["status"], ok["job_type"]) == ("success", "unknown")


def _job_status(status: Any, span_status: StatusCode = StatusCode.UNSET) -> Any:
    attributes = {c.JOB_ID: "j1", c.JOB_TYPE: "restart"} | ({} if status is None else {c.JOB_STATUS: status})
    span = make_span(attributes, kind=SpanKind.INTERNAL, status=Status(span_status))
    return only_row(span_to_rows(span), "job_outcomes")["status"]


# The documented table (conventions.JOB_STATUS_ALIASES, README "Job statuses"), in any case.
JOB_STATUS_TABLE = {
    "success": [
        "success",
        "completed",
        "Completed",
        "COMPLETE",
        "succeeded",
        "successful",
        "done",
        "ok",
        "OK",
    ],
    "failed": ["failed", "error", "Error", "errored", "failure", "FAILURE", "fail"],
    "timeout": ["timeout", "timed_out", "Timed Out", "timed-out", "timedout", "time_out"],
    "cancelled": ["cancelled", "canceled", "Canceled", "aborted", "revoked", "REVOKED", "cancel"],
}


@pytest.mark.parametrize(
    ("reported", "stored"),
    [(reported, stored) for stored, words in JOB_STATUS_TABLE.items() for reported in words],
)
def test_job_statuses_map_by_the_documented_table(reported: str, stored: str) -> None:
    assert _job_status(reported) == stored
    # The reported status decides, whatever the span's status says.
    assert _job_status(reported, StatusCode.ERROR) == stored
    assert c.job_status(reported) == stored


def test_every_alias_names_a_spec_status() -> None:
    assert set(c.JOB_STATUS_ALIASES.values()) == set(c.JOB_STATUSES)
    assert not set(c.JOB_STATUS_ALIASES) & set(c.JOB_STATUSES)


@pytest.mark.parametrize("status", ["pending", "Partial", "in_progress", "rolled back", "42"])
def test_an_unknown_job_status_is_stored_as_given(status: str) -> None:
    assert _job_status(status) == status
    assert _job_status(status, StatusCode.ERROR) == status  # never turned into "failed"


def test_an_unknown_job_status_is_bounded_to_its_column() -> None:
    stored = _job_status("waiting-for-device-" + "x" * 100)
    assert len(stored) == 32 and stored.startswith("waiting-for-device-")


@pytest.mark.parametrize(
    ("status", "span_status", "stored"),
    [
        (None, StatusCode.UNSET, "success"),
        (None, StatusCode.OK, "success"),
        (None, StatusCode.ERROR, "failed"),
        ("", StatusCode.ERROR, "failed"),
        ("  ", StatusCode.UNSET, "success"),
    ],
)
def test_without_a_job_status_the_span_status_decides(
    status: str | None, span_status: StatusCode, stored: str
) -> None:
    assert _job_status(status, span_status) == stored


def test_device_state_log_record() -> None:
    attributes = {
        c.DEVICE_ID: "dev_001",
        c.DEVICE_PREVIOUS_STATE: "online",
        c.DEVICE_NEW_STATE: "offline",
        c.DEVICE_CHANGED_BY: "user123",
        c.DEVICE_REASON: "Maintenance",
        c.EXTRA: json.dumps({"site": "s1"}),
        c.EVENT_ID: "6f1c0b9e-3b9a-4c53-9d0e-6a8a4f0b7a11",
    }
    row = only_row(
        log_record_to_rows(make_log(attributes, event_name=c.DEVICE_STATE_EVENT)), "device_state_history"
    )
    assert row["timestamp"] == datetime(2025, 12, 5, 13, 45, 23, tzinfo=UTC)
    assert (row["device_id"], row["previous_state"], row["new_state"]) == ("dev_001", "online", "offline")
    assert (row["changed_by"], row["reason"]) == ("user123", "Maintenance")
    assert json.loads(row["extra_data"]) == {"site": "s1"}
    assert row["event_id"] == "6f1c0b9e-3b9a-4c53-9d0e-6a8a4f0b7a11"
    assert row["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_error_and_activity_log_records() -> None:
    error = only_row(
        log_record_to_rows(
            make_log(
                {c.ERROR_CATEGORY: "database", c.ERROR_SEVERITY: "critical", c.ERROR_CODE: "E_DB_TIMEOUT"},
                event_name=c.ERROR_EVENT,
                body="Connection timeout after 30 s",
            )
        ),
        "error_logs",
    )
    assert (error["category"], error["severity"], error["error_code"]) == (
        "database",
        "critical",
        "E_DB_TIMEOUT",
    )
    assert error["error_message"] == "Connection timeout after 30 s"
    activity = only_row(
        log_record_to_rows(
            make_log(
                {
                    c.ACTIVITY_TYPE: "search",
                    c.PAGE_URL: "/devices",
                    c.SEARCH_QUERY: "temperature",
                    "user.id": "u1",
                },
                event_name=c.USER_ACTIVITY_EVENT,
            )
        ),
        "user_activities",
    )
    assert (activity["activity_type"], activity["search_query"], activity["user_id"]) == (
        "search",
        "temperature",
        "u1",
    )


def test_a_foreign_exception_log_record_becomes_an_error_and_other_logs_nothing() -> None:
    java = make_log(
        {"exception.type": "java.sql.SQLTimeoutException", "exception.message": "timeout after 30000 ms"},
        event_name=None,
        body="query failed",
        severity=SeverityNumber.WARN,
    )
    row = only_row(log_record_to_rows(java), "error_logs")
    assert (row["category"], row["error_code"]) == ("database", "SQLTimeoutException")
    # The developer's message is the row's; the exception's own text is kept beside it.
    assert row["error_message"] == "query failed"
    assert json.loads(row["context"])["exception_message"] == "timeout after 30000 ms"
    # A plain record at ERROR or above is an error (logger.error("...") from any language) ...
    plain_error = only_row(
        log_record_to_rows(make_log({}, event_name=None, body="disk almost full")), "error_logs"
    )
    assert (plain_error["error_message"], plain_error["error_code"], plain_error["severity"]) == (
        "disk almost full",
        None,
        "error",
    )
    # ... and one below it, nothing.
    info = make_log({"foo": "bar"}, event_name=None, body="hello", severity=SeverityNumber.WARN)
    assert log_record_to_rows(info) == []
    # Without an explicit identity, the same record always maps to the same key.
    assert only_row(log_record_to_rows(java), "error_logs")["event_id"] == row["event_id"]


def test_oversized_and_hostile_values_are_made_storable() -> None:
    attributes = {
        **OLD_SEMCONV,
        "http.target": "/x" * 5000,
        "http.user_agent": "ua\x00with-nul",
        "http.response.body.size": 10**30,
        "http.status_code": "not-a-number",
    }
    row = only_row(span_to_rows(make_span(attributes)), "api_request_logs")
    assert len(row["endpoint"]) == 2048
    assert "\x00" not in row["user_agent"]
    assert row["response_size_bytes"] == 2**63 - 1
    assert row["status_code"] == 0
    job = only_row(
        span_to_rows(
            make_span(
                {c.JOB_ID: "j", c.JOB_RETRY_COUNT: 10**12, c.EXTRA: "not json \x00"}, kind=SpanKind.INTERNAL
            )
        ),
        "job_outcomes",
    )
    assert job["retry_count"] == 2**31 - 1
    assert json.loads(job["extra_data"]) == {"value": "not json \ufffd"}


def test_messages_that_differ_only_in_ids_share_a_fingerprint() -> None:
    assert (
        normalise_message("Device dev 42 timed out after 3000 ms") == "Device dev <n> timed out after <n> ms"
    )
    assert error_fingerprint(
        "TimeoutError", "job 6f1c0b9e-3b9a-4c53-9d0e-6a8a4f0b7a11 failed"
    ) == error_fingerprint("TimeoutError", "job 0e1c0b9e-3b9a-4c53-9d0e-6a8a4f0b7a12 failed")
    assert error_fingerprint("TimeoutError", "a") != error_fingerprint("KeyError", "a")


def test_short_hex_ids_after_an_underscore_group_together() -> None:
    from exporter.mapping.fingerprints import error_fingerprint, normalise_message

    first = "Job job_1a2b3c4d failed on device dev_00af31"
    second = "Job job_9f8e7d6c failed on device dev_17bb02"
    assert normalise_message(first) == "Job job_<hex> failed on device dev_<hex>"
    assert error_fingerprint("JobFailed", first) == error_fingerprint("JobFailed", second)
    assert normalise_message("accessed the deadbeef cache") == "accessed the deadbeef cache"  # a word
