"""Which tables a span or a log record becomes: decided here once, for the mapping and the drop counts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanContext, SpanKind

from exporter import conventions as c

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import ReadableLogRecord
    from opentelemetry.sdk.trace import ReadableSpan

_SERVER_KINDS = (SpanKind.SERVER, SpanKind.CONSUMER)
_EVENT_TABLES = {
    c.DEVICE_STATE_EVENT: "device_state_history",
    c.USER_ACTIVITY_EVENT: "user_activities",
    c.ERROR_EVENT: "error_logs",
}


def span_destination(
    kind: SpanKind | None, attributes: Mapping[str, Any], parent: SpanContext | None = None
) -> str | None:
    """The table of a span's own row: a job (any kind) or a request (a server span with an
    HTTP method); None when the span is neither.

    A SERVER span whose parent is a span of the same process (not remote) is a second layer of
    one request (two instrumentations of one app, a mounted sub-app): the outer one has the row,
    so each request is stored once whatever is stacked on it."""
    if c.JOB_ID in attributes:
        return "job_outcomes"
    if kind is SpanKind.SERVER and parent is not None and not parent.is_remote:
        return None
    if kind in _SERVER_KINDS:
        for key in c.HTTP_METHOD:
            if attributes.get(key) is not None:
                return "api_request_logs"
    return None


# A span of these kinds yields an error row per exception event: a request's own span, and the
# work inside it (Express records a handler's exception on its INTERNAL "request handler" span;
# a manual span inside a handler). Client spans are left out: a failed outgoing call the code
# handles is not an error of this service. The same exception on a child and on its server
# span is stored once (exporter/trace_links.py).
_EXCEPTION_KINDS = (SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.INTERNAL)

# OpenTelemetry's severity number of an ERROR record: plain log records at or above it are errors.
ERROR_SEVERITY = 17


def records_exceptions(kind: SpanKind | None, attributes: Mapping[str, Any]) -> bool:
    """Whether a span yields an ``error_logs`` row for each of its exception events (a job's
    span does not: its failure is its ``job_outcomes`` row)."""
    return kind in _EXCEPTION_KINDS and c.JOB_ID not in attributes


def span_tables(span: ReadableSpan) -> list[str]:
    """The tables a span's rows go to, without mapping it (cheap: it runs on the request
    thread when a queue overflows)."""
    kind = span.kind
    attributes = span.attributes or {}
    destination = span_destination(kind, attributes, span.parent)
    tables = [destination] if destination is not None else []
    if records_exceptions(kind, attributes):
        tables.extend("error_logs" for event in span.events if event.name == c.EXCEPTION_EVENT)
    return tables


def log_table(
    event_name: str | None, attributes: Mapping[str, Any], severity: int | None = None
) -> str | None:
    """The table of a log record's row, by its event name (the ``event.name`` attribute when
    the record has none). A record that names no event is an error when it carries an exception
    or its severity is ERROR or above (``logger.error("...")`` from any language); else None."""
    name = event_name or attributes.get("event.name")
    # Only a string names an event (a decoded attribute may be a map, which cannot be hashed).
    table = _EVENT_TABLES.get(name) if isinstance(name, str) else None
    if table is None and (c.EXCEPTION_TYPE in attributes or (severity or 0) >= ERROR_SEVERITY):
        return "error_logs"
    return table


def log_tables(record: ReadableLogRecord) -> list[str]:
    """The table a log record's row goes to, as a list (empty when it yields no row)."""
    log = record.log_record
    severity = log.severity_number.value if log.severity_number is not None else None
    table = log_table(log.event_name, log.attributes or {}, severity)
    return [table] if table is not None else []
