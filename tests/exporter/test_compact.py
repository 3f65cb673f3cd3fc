"""Records through ``exporter.compact`` map to exactly the rows the SDK's own objects map to."""

from __future__ import annotations

import time

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from exporter.compact import Interned, Rebuilt, decode_log_record, decode_span, encode_log_record, encode_span
from exporter.mapping import log_record_to_rows, span_to_rows
from tests.support.telemetry import device_state_log, event_log, failing_request_span, job_span, request_span


def _through(record: ReadableSpan | ReadableLogRecord) -> ReadableSpan | ReadableLogRecord:
    interned = Interned()
    if isinstance(record, ReadableSpan):
        data = encode_span(record, interned)
        return decode_span(data, Rebuilt(interned.descriptions()))
    data = encode_log_record(record, interned)
    return decode_log_record(data, Rebuilt(interned.descriptions()))


def test_every_kind_of_record_maps_to_the_same_rows_after_the_trip() -> None:
    records = [
        request_span("/devices/{id}", 200, **{"enduser.id": "alice", "client.address": "10.1.2.3"}),
        request_span("/x", 404, **{"http.error_message": "not found"}),
        failing_request_span(),
        job_span(),
        device_state_log(),
        event_log("homepot.user_activity", **{"activity.type": "click", "session.id": "s1"}),
    ]
    for record in records:
        original = span_to_rows(record) if isinstance(record, ReadableSpan) else log_record_to_rows(record)
        rebuilt = _through(record)
        again = span_to_rows(rebuilt) if isinstance(rebuilt, ReadableSpan) else log_record_to_rows(rebuilt)
        assert again == original and original


def test_a_parent_keeps_whether_it_is_remote() -> None:
    # A local server parent makes a span a second layer of one request (no row of its own).
    span = request_span("/inner")
    parent = span.context
    assert parent is not None
    child = ReadableSpan(
        name=span.name,
        context=span.context,
        parent=parent,
        kind=span.kind,
        attributes=dict(span.attributes or {}),
        resource=span.resource,
        start_time=span.start_time,
        end_time=span.end_time,
    )
    rebuilt = _through(child)
    assert isinstance(rebuilt, ReadableSpan) and rebuilt.parent is not None
    assert rebuilt.parent.is_remote is False and span_to_rows(rebuilt) == span_to_rows(child) == []


class _AppObject:
    def __reduce__(self) -> object:
        raise TypeError("cannot pickle this")

    def __str__(self) -> str:
        return "an object of the app"


def test_a_body_pickle_cannot_take_is_kept_as_text() -> None:
    record = ReadableLogRecord(
        log_record=LogRecord(
            timestamp=time.time_ns(),
            severity_number=SeverityNumber.ERROR,
            body=_AppObject(),  # type: ignore[arg-type]
        ),
        resource=Resource({"service.name": "odd"}),
    )
    rebuilt = _through(record)
    assert isinstance(rebuilt, ReadableLogRecord)
    assert rebuilt.log_record.body == "an object of the app"
    ((table, row),) = log_record_to_rows(rebuilt)
    assert table == "error_logs" and row["error_message"] == "an object of the app"
    assert row["service_name"] == "odd"


def test_resources_are_sent_once_per_object() -> None:
    interned = Interned()
    one, other = request_span(), request_span()
    encode_span(one, interned)
    encode_span(other, interned)  # the same resource object: the same key
    assert len(interned.descriptions()) == 2  # that resource and the (absent) scope
