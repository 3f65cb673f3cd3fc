"""Finished spans to rows: a request or a job outcome, and an error log per exception event."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind, StatusCode

from exporter import conventions as c
from exporter.columns import text_limits
from exporter.mapping.actors import stored_actor
from exporter.mapping.fingerprints import error_category, error_fingerprint, short_type
from exporter.mapping.values import (
    INT8_MAX,
    Row,
    TableRow,
    bounded_text,
    clamped_int,
    first,
    has_events,
    hex_span_id,
    hex_trace_id,
    json_text,
    path_of,
    service_columns,
    span_attributes,
    str_or_none,
    timestamp,
    uuid_of,
)
from exporter.privacy import PASS_THROUGH, Privacy
from exporter.routing import records_exceptions, span_destination

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

_SERVER_KINDS = (SpanKind.SERVER, SpanKind.CONSUMER)

# Longest text per column, read once: what each row's values are truncated to.
_REQUEST = text_limits("api_request_logs")
_JOB = text_limits("job_outcomes")
_ERROR = text_limits("error_logs")


def span_to_rows(span: ReadableSpan, privacy: Privacy = PASS_THROUGH) -> list[TableRow]:
    """The rows one finished span yields: a request, a job outcome, error logs (or nothing)."""
    attributes = span_attributes(span)
    kind = span.kind
    rows: list[TableRow] = []
    table = span_destination(kind, attributes, span.parent)
    if table is not None:
        rows.append((table, _SPAN_ROWS[table](span, attributes, privacy)))
    if has_events(span) and records_exceptions(kind, attributes):
        rows.extend(_exception_rows(span, attributes, privacy))
    return rows


def _with_span_context(row: Row, span: ReadableSpan, suffix: str, limits: Mapping[str, int]) -> Row:
    """``row`` with the trace, the service and the row's identity added (in place)."""
    context = span.context
    trace_id = context.trace_id if context else 0
    span_id = context.span_id if context else 0
    row["trace_id"] = hex_trace_id(trace_id)
    row["span_id"] = hex_span_id(span_id)
    row.update(service_columns(span.resource, limits))
    # The text values.event_id(trace_id, span_id, suffix) hashes, built without its generic join.
    row["event_id"] = uuid_of(f"{trace_id!s}|{span_id!s}|{suffix}")
    return row


def _duration_ms(span: ReadableSpan) -> float:
    if span.start_time is None or span.end_time is None:
        return 0.0
    return max(span.end_time - span.start_time, 0) / 1e6


def _exception_event(span: ReadableSpan) -> Mapping[str, Any] | None:
    for event in span.events:
        if event.name == c.EXCEPTION_EVENT:
            return event.attributes or {}
    return None


def _request_row(span: ReadableSpan, attributes: Mapping[str, Any], privacy: Privacy) -> Row:
    status_code = clamped_int(first(attributes, c.HTTP_STATUS_CODE))
    is_error = span.status is not None and span.status.status_code is StatusCode.ERROR
    if status_code is None:
        status_code = 500 if is_error else 0
    error_message = None
    if status_code >= 400 or is_error:
        exception = _exception_event(span)
        # An unhandled exception says more than the generic 500 body; a 4xx detail says most.
        error_message = (
            (exception and _exception_summary(exception))
            or attributes.get(c.HTTP_ERROR_MESSAGE)
            or (span.status.description if span.status else None)
            or attributes.get(c.ERROR_TYPE)
            or _reason_phrase(status_code)
        )
    limits = _REQUEST
    row = {
        "timestamp": timestamp(span.start_time),
        "endpoint": bounded_text(privacy.url(path_of(attributes, span.name)), limits["endpoint"]),
        "route": bounded_text(attributes.get(c.HTTP_ROUTE), limits["route"]),
        "method": bounded_text(first(attributes, c.HTTP_METHOD), limits["method"]),
        "status_code": status_code,
        "response_time_ms": _duration_ms(span),
        "user_id": bounded_text(privacy.user(first(attributes, c.USER_ID)), limits["user_id"]),
        "ip_address": bounded_text(privacy.ip(first(attributes, c.CLIENT_ADDRESS)), limits["ip_address"]),
        "user_agent": bounded_text(first(attributes, c.USER_AGENT), limits["user_agent"]),
        "error_message": bounded_text(
            privacy.text(error_message and str(error_message)), limits["error_message"]
        ),
        "request_size_bytes": clamped_int(first(attributes, c.REQUEST_BODY_SIZE), INT8_MAX),
        "response_size_bytes": clamped_int(first(attributes, c.RESPONSE_BODY_SIZE), INT8_MAX),
    }
    return _with_span_context(row, span, "request", limits)


def _exception_summary(event_attributes: Mapping[str, Any]) -> str | None:
    error_type = short_type(event_attributes.get(c.EXCEPTION_TYPE))
    message = event_attributes.get(c.EXCEPTION_MESSAGE)
    if error_type and message:
        return f"{error_type}: {message}"
    return error_type or message


def _reason_phrase(status_code: int) -> str | None:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return None


def _exception_rows(span: ReadableSpan, attributes: Mapping[str, Any], privacy: Privacy) -> list[TableRow]:
    rows: list[TableRow] = []
    limits = _ERROR
    server = span.kind in _SERVER_KINDS
    kind_name = span.kind.name.lower() if span.kind is not None else None
    # Which request a child's error belongs to, when one trace holds several (trace_links.py).
    parent_span_id = hex_span_id(span.parent.span_id) if span.parent is not None and not server else None
    # A child span names no endpoint of its own (its name is not a path): the request's endpoint
    # and user are joined from the request row of the same trace (exporter/trace_links.py).
    endpoint = (
        bounded_text(privacy.url(path_of(attributes, span.name)), limits["endpoint"]) if server else None
    )
    for index, event in enumerate(span.events):
        if event.name != c.EXCEPTION_EVENT:
            continue
        event_attributes = event.attributes or {}
        error_type = str_or_none(event_attributes.get(c.EXCEPTION_TYPE))
        message = event_attributes.get(c.EXCEPTION_MESSAGE) or error_type or "unknown error"
        context = {
            "exception_type": error_type,
            "span_kind": kind_name,
            "parent_span_id": parent_span_id,
            "method": first(attributes, c.HTTP_METHOD),
            "route": attributes.get(c.HTTP_ROUTE),
            "status_code": clamped_int(first(attributes, c.HTTP_STATUS_CODE)),
            "span_name": span.name,
        }
        row = {
            "timestamp": timestamp(event.timestamp),
            "category": error_category(error_type),
            "severity": "error",
            "error_code": bounded_text(short_type(error_type), limits["error_code"]),
            "error_message": bounded_text(privacy.text(str(message)), limits["error_message"]),
            "stack_trace": bounded_text(
                privacy.text(str_or_none(event_attributes.get(c.EXCEPTION_STACKTRACE))), limits["stack_trace"]
            ),
            "endpoint": endpoint,
            "user_id": bounded_text(privacy.user(first(attributes, c.USER_ID)), limits["user_id"]),
            "device_id": bounded_text(attributes.get(c.DEVICE_ID), limits["device_id"]),
            "context": json_text({k: v for k, v in context.items() if v is not None}, privacy),
            "fingerprint": error_fingerprint(error_type, str(message)),
        }
        rows.append(("error_logs", _with_span_context(row, span, f"exception-{index}", limits)))
    return rows


def _job_row(span: ReadableSpan, attributes: Mapping[str, Any], privacy: Privacy) -> Row:
    # The spec's status, an alias of one ("completed"), or an unknown one as given ("pending");
    # with none reported, the span's status decides (a foreign SDK's job span).
    status = c.job_status(attributes.get(c.JOB_STATUS))
    exception = _exception_event(span)
    if status is None:
        failed = span.status is not None and span.status.status_code is StatusCode.ERROR
        status = "failed" if failed else "success"
    error_code = attributes.get(c.JOB_ERROR_CODE)
    error_message = attributes.get(c.JOB_ERROR_MESSAGE)
    if exception is not None:
        error_code = error_code or short_type(exception.get(c.EXCEPTION_TYPE))
        error_message = error_message or exception.get(c.EXCEPTION_MESSAGE)
    duration = clamped_int(attributes.get(c.JOB_DURATION_MS))
    initiated_by = attributes.get(c.JOB_INITIATED_BY)
    limits = _JOB
    row = {
        "timestamp": timestamp(span.end_time or span.start_time),
        "job_id": bounded_text(attributes.get(c.JOB_ID), limits["job_id"]),
        "job_type": bounded_text(attributes.get(c.JOB_TYPE) or "unknown", limits["job_type"]),
        "device_id": bounded_text(attributes.get(c.DEVICE_ID), limits["device_id"]),
        "status": bounded_text(status, limits["status"]),
        "duration_ms": duration if duration is not None else clamped_int(round(_duration_ms(span))),
        "error_code": bounded_text(error_code, limits["error_code"]),
        "error_message": bounded_text(
            privacy.text(error_message and str(error_message)), limits["error_message"]
        ),
        "retry_count": clamped_int(attributes.get(c.JOB_RETRY_COUNT)) or 0,
        "initiated_by": bounded_text(stored_actor(initiated_by, privacy), limits["initiated_by"]),
        "extra_data": json_text(attributes.get(c.EXTRA), privacy),
    }
    return _with_span_context(row, span, "job", limits)


# The row builder of each table a span's own row can go to (``routing.span_destination``).
_SPAN_ROWS = {"job_outcomes": _job_row, "api_request_logs": _request_row}
