"""Log records to rows: a device state change, an error log or a user activity, chosen by event name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from exporter import conventions as c
from exporter.columns import text_limits
from exporter.mapping.actors import stored_actor
from exporter.mapping.fingerprints import error_category, error_fingerprint, short_type
from exporter.mapping.values import (
    Row,
    TableRow,
    bounded_text,
    canonical_uuid,
    clamped_int,
    event_id,
    first,
    hex_span_id,
    hex_trace_id,
    json_text,
    plain,
    service_columns,
    timestamp,
)
from exporter.privacy import PASS_THROUGH, Privacy
from exporter.routing import log_table

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import ReadableLogRecord

_SEVERITY_BY_NUMBER = ((21, "critical"), (17, "error"), (13, "warning"), (0, "info"))

# Longest text per column, read once: what each row's values are truncated to.
_DEVICE_STATE = text_limits("device_state_history")
_ERROR = text_limits("error_logs")
_ACTIVITY = text_limits("user_activities")


def log_record_to_rows(record: ReadableLogRecord, privacy: Privacy = PASS_THROUGH) -> list[TableRow]:
    """The row one log record yields, chosen by its event name (or nothing)."""
    log = record.log_record
    attributes = plain(log.attributes)
    severity = log.severity_number.value if log.severity_number is not None else None
    table = log_table(log.event_name, attributes, severity)
    if table is None:
        return []
    return [(table, _LOG_ROWS[table](record, attributes, privacy))]


def _log_context(record: ReadableLogRecord, attributes: Mapping[str, Any], limits: Mapping[str, int]) -> Row:
    log = record.log_record
    given = attributes.get(c.EVENT_ID)
    identity = canonical_uuid(given) if given else None
    if identity is None:
        # No identity given (a foreign producer): derive one from everything the record says.
        identity = event_id(
            log.timestamp, log.trace_id, log.span_id, log.event_name, log.body, sorted(attributes.items())
        )
    return {
        "trace_id": hex_trace_id(log.trace_id),
        "span_id": hex_span_id(log.span_id),
        **service_columns(record.resource, limits),
        "event_id": identity,
    }


def _log_timestamp(record: ReadableLogRecord) -> datetime:
    return timestamp(record.log_record.timestamp or record.log_record.observed_timestamp)


def _device_state_row(record: ReadableLogRecord, attributes: Mapping[str, Any], privacy: Privacy) -> Row:
    limits = _DEVICE_STATE
    row = {
        "timestamp": _log_timestamp(record),
        "device_id": bounded_text(attributes.get(c.DEVICE_ID) or "unknown", limits["device_id"]),
        "previous_state": bounded_text(attributes.get(c.DEVICE_PREVIOUS_STATE), limits["previous_state"]),
        "new_state": bounded_text(attributes.get(c.DEVICE_NEW_STATE) or "unknown", limits["new_state"]),
        "changed_by": bounded_text(
            stored_actor(attributes.get(c.DEVICE_CHANGED_BY), privacy), limits["changed_by"]
        ),
        "reason": bounded_text(privacy.text(attributes.get(c.DEVICE_REASON)), limits["reason"]),
        "extra_data": json_text(attributes.get(c.EXTRA), privacy),
    }
    row.update(_log_context(record, attributes, limits))
    return row


def _severity_of(record: ReadableLogRecord, attributes: Mapping[str, Any]) -> str:
    given = attributes.get(c.ERROR_SEVERITY)
    if given in c.ERROR_SEVERITIES:
        return str(given)
    number = record.log_record.severity_number
    value = number.value if number is not None else 17
    return next(name for threshold, name in _SEVERITY_BY_NUMBER if value >= threshold)


def _error_log_row(record: ReadableLogRecord, attributes: Mapping[str, Any], privacy: Privacy) -> Row:
    log = record.log_record
    error_type = attributes.get(c.EXCEPTION_TYPE)
    exception_message = attributes.get(c.EXCEPTION_MESSAGE)
    # The developer's message (``logger.exception("lookup failed")``) first; the exception's
    # own text goes to the context when it says something else.
    message = log.body or exception_message or error_type or "unknown error"
    if not isinstance(message, str):
        message = json.dumps(message, default=str)
    category = attributes.get(c.ERROR_CATEGORY) or error_category(error_type)
    error_code = attributes.get(c.ERROR_CODE) or short_type(error_type)
    endpoint = attributes.get(c.ERROR_ENDPOINT) or first(attributes, c.HTTP_PATH)
    limits = _ERROR
    row = {
        "timestamp": _log_timestamp(record),
        "category": bounded_text(category, limits["category"]),
        "severity": _severity_of(record, attributes),
        "error_code": bounded_text(error_code, limits["error_code"]),
        "error_message": bounded_text(privacy.text(message), limits["error_message"]),
        "stack_trace": bounded_text(
            privacy.text(attributes.get(c.EXCEPTION_STACKTRACE)), limits["stack_trace"]
        ),
        "endpoint": bounded_text(
            privacy.url(endpoint and str(endpoint).split("?", 1)[0]), limits["endpoint"]
        ),
        "user_id": bounded_text(privacy.user(first(attributes, c.USER_ID)), limits["user_id"]),
        "device_id": bounded_text(attributes.get(c.DEVICE_ID), limits["device_id"]),
        "context": json_text(_error_context(record, attributes, exception_message, message), privacy),
        "fingerprint": error_fingerprint(
            _grouped(error_code or error_type, attributes.get(c.ERROR_GROUP)), message
        ),
    }
    row.update(_log_context(record, attributes, limits))
    return row


def _grouped(error_type: Any, group: Any) -> str | None:
    """The type part of a fingerprint: with the group when the record names one (a route)."""
    if group is None:
        return str(error_type) if error_type is not None else None
    return f"{error_type or ''} {group}"


def _error_context(
    record: ReadableLogRecord, attributes: Mapping[str, Any], exception_message: Any, message: str
) -> Any:
    """The context the record gave (``homepot.extra``), else the logger it came from (its
    instrumentation scope); with the exception's own text when it says something else than the
    message (rows are matched on it: exporter/trace_links.py)."""
    context: Any = attributes.get(c.EXTRA)
    if context is None:
        scope = record.instrumentation_scope
        context = {"logger": scope.name} if scope is not None and scope.name else None
    if not exception_message or exception_message == message:
        return context
    if isinstance(context, str):
        try:
            context = json.loads(context)
        except ValueError:
            context = {"value": context}
    if context is None:
        context = {}
    if isinstance(context, dict):
        context.setdefault("exception_message", exception_message)
    return context


def _activity_row(record: ReadableLogRecord, attributes: Mapping[str, Any], privacy: Privacy) -> Row:
    limits = _ACTIVITY
    row = {
        "timestamp": _log_timestamp(record),
        "user_id": bounded_text(privacy.user(first(attributes, c.USER_ID)), limits["user_id"]),
        "session_id": bounded_text(attributes.get(c.SESSION_ID), limits["session_id"]),
        "activity_type": bounded_text(attributes.get(c.ACTIVITY_TYPE) or "custom", limits["activity_type"]),
        "page_url": bounded_text(privacy.url(attributes.get(c.PAGE_URL)), limits["page_url"]),
        "element_id": bounded_text(attributes.get(c.ELEMENT_ID), limits["element_id"]),
        "search_query": bounded_text(privacy.text(attributes.get(c.SEARCH_QUERY)), limits["search_query"]),
        "extra_data": json_text(attributes.get(c.EXTRA), privacy),
        "duration_ms": clamped_int(attributes.get(c.DURATION_MS)),
    }
    row.update(_log_context(record, attributes, limits))
    return row


# The row builder of each table a log record can go to (``routing.log_table``).
_LOG_ROWS = {
    "device_state_history": _device_state_row,
    "user_activities": _activity_row,
    "error_logs": _error_log_row,
}
