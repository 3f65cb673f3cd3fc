"""Pure mapping from OpenTelemetry spans and log records to rows of the five tables.

No I/O here: ``span_to_rows`` and ``log_record_to_rows`` take SDK objects (the in-process
exporter's, or those the OTLP sink decodes) and return ``(table, row)`` pairs whose values are
ready for COPY: bounded strings without NUL bytes, tz-aware UTC datetimes, JSON as text.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from exporter import conventions as c
from exporter.privacy import PASS_THROUGH, Privacy
from exporter.routing import log_table, records_exceptions, span_destination
from exporter.schema import MESSAGE, NAME, SHORT, STACK_TRACE, URL

Row = dict[str, Any]
TableRow = tuple[str, Row]

_SEVERITY_BY_NUMBER = ((21, "critical"), (17, "error"), (13, "warning"), (0, "info"))


# --- attribute access ------------------------------------------------------------------------
# The mapping reads ~15 attributes per record, many of them absent (each key is looked up in
# both semantic-convention sets). Through the SDK's public views every lookup runs Python code:
# ``ReadableSpan.attributes`` is a mappingproxy over ``BoundedAttributes``, whose ``get`` is
# ``collections.abc.Mapping.get`` (a miss raises and catches KeyError). Read straight from the
# plain dict inside instead: same values, a fraction of the cost. Read only, never modified.
_READABLE_SPAN_ATTRIBUTES = ReadableSpan.__dict__["attributes"]
_READABLE_SPAN_EVENTS = ReadableSpan.__dict__["events"]


def _plain(attributes: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The dict holding ``attributes`` when it is (or wraps) one; else ``attributes`` itself."""
    if attributes is None:
        return {}
    if type(attributes) is dict:
        return attributes
    if isinstance(attributes, BoundedAttributes):
        inner = getattr(attributes, "_dict", None)
        if type(inner) is dict:
            return inner
    return attributes


def _span_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """``span.attributes``, as a plain dict when the SDK's own property would wrap one."""
    if type(span).attributes is _READABLE_SPAN_ATTRIBUTES:  # not overridden by a subclass
        return _plain(span._attributes)
    return _plain(span.attributes)


def _has_events(span: ReadableSpan) -> bool:
    """Whether ``span.events`` is not empty, without the tuple the property copies them into."""
    if type(span).events is _READABLE_SPAN_EVENTS:
        return len(span._events) > 0
    return len(span.events) > 0


# --- small value helpers ---------------------------------------------------------------------
def _first(attributes: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def _text(value: Any, limit: int) -> str | None:
    """A bounded string PostgreSQL accepts (text columns reject NUL bytes)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text if len(text) <= limit else text[: limit - 1] + "…"


_INT4_MAX = 2**31 - 1
_INT8_MAX = 2**63 - 1


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any, limit: int = _INT4_MAX) -> int | None:
    """An integer clamped to what its column holds (a huge value must not fail the batch)."""
    if type(value) is int:  # what the SDK nearly always holds: no conversion needed
        return value if -limit <= value <= limit else (limit if value > 0 else -limit)
    try:
        number = int(value) if value is not None and value != "" else None
    except (TypeError, ValueError, OverflowError):
        return None
    return None if number is None else max(-limit, min(number, limit))


def _timestamp(nanoseconds: int | None) -> datetime:
    if not nanoseconds:
        return datetime.now(UTC)
    return datetime.fromtimestamp(nanoseconds / 1e9, tz=UTC)


def _hex_trace(trace_id: int | None) -> str | None:
    if not trace_id:
        return None
    try:
        return trace_id.to_bytes(16, "big").hex()  # the digits of format(.., "032x"), 4x faster
    except (OverflowError, AttributeError):  # not a 128-bit id: as it always was
        return format(trace_id, "032x")


def _hex_span(span_id: int | None) -> str | None:
    if not span_id:
        return None
    try:
        return span_id.to_bytes(8, "big").hex()
    except (OverflowError, AttributeError):
        return format(span_id, "016x")


def _event_id(*parts: object) -> uuid.UUID:
    """A deterministic row identity, so the same telemetry maps to the same key every time."""
    return _uuid_of("|".join(map(str, parts)))


def _uuid_of(text: str) -> uuid.UUID:
    return uuid.UUID(bytes=hashlib.md5(text.encode()).digest())


# What json.dumps(value, default=str, ensure_ascii=False) builds on every call, built once.
_JSON_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


def _json_text(value: Any, privacy: Privacy) -> str | None:
    """JSON text for a jsonb column from a JSON-encoded attribute (or any value)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = {"value": value}
    if not isinstance(value, dict):
        value = {"value": value}
    cleaned = privacy.json(value)
    encoded = _JSON_ENCODER.encode(cleaned)
    # jsonb rejects \u0000 as well; the escaped form survives json.dumps.
    return encoded.replace("\\u0000", "\\ufffd")


def _path_of(attributes: Mapping[str, Any], fallback: str) -> str:
    path = _first(attributes, c.HTTP_PATH)
    if path is None:
        url = _first(attributes, c.HTTP_URL)
        if url is not None:
            # scheme://host/path?query -> /path
            after_scheme = str(url).split("://", 1)[-1]
            path = "/" + after_scheme.split("/", 1)[1] if "/" in after_scheme else "/"
        else:
            path = fallback
    return str(path).split("?", 1)[0]


# --- error fingerprints ------------------------------------------------------------------------
_VOLATILE = [
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<uuid>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "<ip>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
]


def normalise_message(message: str) -> str:
    """The message with ids, numbers and quoted values replaced, so occurrences group."""
    for pattern, placeholder in _VOLATILE:
        message = pattern.sub(placeholder, message)
    return " ".join(message.split())[:500]


def error_fingerprint(error_type: str | None, message: str | None) -> str:
    """md5 of error type and normalised message: one group per kind of error."""
    basis = f"{error_type or ''}|{normalise_message(message or '')}"
    return hashlib.md5(basis.encode()).hexdigest()


_CATEGORY_HINTS = (
    ("validation", ("validation", "decodeerror", "invalid")),
    (
        "database",
        ("operationalerror", "integrityerror", "programmingerror", "databaseerror", "sql", "psycopg"),
    ),
    ("external_service", ("connect", "timeout", "httperror", "httpstatus", "requestexception", "mqtt")),
)


def error_category(error_type: str | None) -> str:
    """A spec category (api, database, external_service, validation) guessed from the type."""
    lowered = (error_type or "").lower()
    for category, hints in _CATEGORY_HINTS:
        if any(hint in lowered for hint in hints):
            return category
    return "api"


def _short_type(error_type: str | None) -> str | None:
    return error_type.rsplit(".", 1)[-1] if error_type else None


# --- spans ---------------------------------------------------------------------------------------
def span_to_rows(span: ReadableSpan, privacy: Privacy = PASS_THROUGH) -> list[TableRow]:
    """The rows one finished span yields: a request, a job outcome, error logs (or nothing)."""
    attributes = _span_attributes(span)
    kind = span.kind
    rows: list[TableRow] = []
    table = span_destination(kind, attributes)
    if table is not None:
        rows.append((table, _SPAN_ROWS[table](span, attributes, privacy)))
    if records_exceptions(kind) and _has_events(span):
        rows.extend(_exception_rows(span, attributes, privacy))
    return rows


def _with_span_context(row: Row, span: ReadableSpan, suffix: str) -> Row:
    """``row`` with the trace, the service and the row's identity added (in place)."""
    context = span.context
    trace_id = context.trace_id if context else 0
    span_id = context.span_id if context else 0
    resource = _plain(span.resource.attributes) if span.resource else {}
    row["trace_id"] = _hex_trace(trace_id)
    row["span_id"] = _hex_span(span_id)
    row["service_name"] = _text(resource.get(c.SERVICE_NAME), NAME)
    # The text _event_id(trace_id, span_id, suffix) hashes, built without its generic join.
    row["event_id"] = _uuid_of(f"{trace_id!s}|{span_id!s}|{suffix}")
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
    status_code = _int(_first(attributes, c.HTTP_STATUS_CODE))
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
    row = {
        "timestamp": _timestamp(span.start_time),
        "endpoint": _text(privacy.url(_path_of(attributes, span.name)), URL),
        "route": _text(attributes.get(c.HTTP_ROUTE), URL),
        "method": _text(_first(attributes, c.HTTP_METHOD), 16),
        "status_code": status_code,
        "response_time_ms": _duration_ms(span),
        "user_id": _text(privacy.user(_first(attributes, c.USER_ID)), NAME),
        "ip_address": _text(privacy.ip(_first(attributes, c.CLIENT_ADDRESS)), SHORT),
        "user_agent": _text(_first(attributes, c.USER_AGENT), 1024),
        "error_message": _text(privacy.text(error_message and str(error_message)), MESSAGE),
        "request_size_bytes": _int(_first(attributes, c.REQUEST_BODY_SIZE), _INT8_MAX),
        "response_size_bytes": _int(_first(attributes, c.RESPONSE_BODY_SIZE), _INT8_MAX),
    }
    return _with_span_context(row, span, "request")


def _exception_summary(event_attributes: Mapping[str, Any]) -> str | None:
    error_type = _short_type(event_attributes.get(c.EXCEPTION_TYPE))
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
    for index, event in enumerate(span.events):
        if event.name != c.EXCEPTION_EVENT:
            continue
        event_attributes = event.attributes or {}
        error_type = _str(event_attributes.get(c.EXCEPTION_TYPE))
        message = event_attributes.get(c.EXCEPTION_MESSAGE) or error_type or "unknown error"
        context = {
            "exception_type": error_type,
            "method": _first(attributes, c.HTTP_METHOD),
            "route": attributes.get(c.HTTP_ROUTE),
            "status_code": _int(_first(attributes, c.HTTP_STATUS_CODE)),
            "span_name": span.name,
        }
        row = {
            "timestamp": _timestamp(event.timestamp),
            "category": error_category(error_type),
            "severity": "error",
            "error_code": _text(_short_type(error_type), 128),
            "error_message": _text(privacy.text(str(message)), MESSAGE),
            "stack_trace": _text(
                privacy.text(_str(event_attributes.get(c.EXCEPTION_STACKTRACE))), STACK_TRACE
            ),
            "endpoint": _text(privacy.url(_path_of(attributes, span.name)), URL),
            "user_id": _text(privacy.user(_first(attributes, c.USER_ID)), NAME),
            "device_id": _text(attributes.get(c.DEVICE_ID), NAME),
            "context": _json_text({k: v for k, v in context.items() if v is not None}, privacy),
            "fingerprint": error_fingerprint(error_type, str(message)),
        }
        rows.append(("error_logs", _with_span_context(row, span, f"exception-{index}")))
    return rows


def _job_row(span: ReadableSpan, attributes: Mapping[str, Any], privacy: Privacy) -> Row:
    status = attributes.get(c.JOB_STATUS)
    exception = _exception_event(span)
    if status not in c.JOB_STATUSES:
        failed = span.status is not None and span.status.status_code is StatusCode.ERROR
        status = "failed" if failed else "success"
    error_code = attributes.get(c.JOB_ERROR_CODE)
    error_message = attributes.get(c.JOB_ERROR_MESSAGE)
    if exception is not None:
        error_code = error_code or _short_type(exception.get(c.EXCEPTION_TYPE))
        error_message = error_message or exception.get(c.EXCEPTION_MESSAGE)
    duration = _int(attributes.get(c.JOB_DURATION_MS))
    initiated_by = attributes.get(c.JOB_INITIATED_BY)
    row = {
        "timestamp": _timestamp(span.end_time or span.start_time),
        "job_id": _text(attributes.get(c.JOB_ID), NAME),
        "job_type": _text(attributes.get(c.JOB_TYPE) or "unknown", 128),
        "device_id": _text(attributes.get(c.DEVICE_ID), NAME),
        "status": status,
        "duration_ms": duration if duration is not None else _int(round(_duration_ms(span))),
        "error_code": _text(error_code, 128),
        "error_message": _text(privacy.text(error_message and str(error_message)), MESSAGE),
        "retry_count": _int(attributes.get(c.JOB_RETRY_COUNT)) or 0,
        "initiated_by": _text(stored_actor(initiated_by, privacy), NAME),
        "extra_data": _json_text(attributes.get(c.EXTRA), privacy),
    }
    return _with_span_context(row, span, "job")


# The row builder of each table a span's own row can go to (``routing.span_destination``).
_SPAN_ROWS = {"job_outcomes": _job_row, "api_request_logs": _request_row}


def stored_actor(value: Any, privacy: Privacy) -> str | None:
    """``changed_by``/``initiated_by``: "system" stays readable, a user is treated as a user id."""
    if value is None:
        return None
    value = str(value)
    return value if value == "system" else privacy.user(value)


# --- log records -----------------------------------------------------------------------------------
def log_record_to_rows(record: ReadableLogRecord, privacy: Privacy = PASS_THROUGH) -> list[TableRow]:
    """The row one log record yields, chosen by its event name (or nothing)."""
    log = record.log_record
    attributes = _plain(log.attributes)
    table = log_table(log.event_name, attributes)
    if table is None:
        return []
    return [(table, _LOG_ROWS[table](record, attributes, privacy))]


def _log_context(record: ReadableLogRecord, attributes: Mapping[str, Any]) -> Row:
    log = record.log_record
    resource = _plain(record.resource.attributes) if record.resource else {}
    event_id: uuid.UUID | None = None
    given = attributes.get(c.EVENT_ID)
    if given:
        try:
            event_id = uuid.UUID(str(given))
        except ValueError:
            event_id = None
    if event_id is None:
        # No identity given (a foreign producer): derive one from everything the record says.
        event_id = _event_id(
            log.timestamp, log.trace_id, log.span_id, log.event_name, log.body, sorted(attributes.items())
        )
    return {
        "trace_id": _hex_trace(log.trace_id),
        "span_id": _hex_span(log.span_id),
        "service_name": _text(resource.get(c.SERVICE_NAME), NAME),
        "event_id": event_id,
    }


def _log_timestamp(record: ReadableLogRecord) -> datetime:
    return _timestamp(record.log_record.timestamp or record.log_record.observed_timestamp)


def _device_state_row(record: ReadableLogRecord, attributes: Mapping[str, Any], privacy: Privacy) -> Row:
    row = {
        "timestamp": _log_timestamp(record),
        "device_id": _text(attributes.get(c.DEVICE_ID) or "unknown", NAME),
        "previous_state": _text(attributes.get(c.DEVICE_PREVIOUS_STATE), SHORT),
        "new_state": _text(attributes.get(c.DEVICE_NEW_STATE) or "unknown", SHORT),
        "changed_by": _text(stored_actor(attributes.get(c.DEVICE_CHANGED_BY), privacy), NAME),
        "reason": _text(privacy.text(attributes.get(c.DEVICE_REASON)), MESSAGE),
        "extra_data": _json_text(attributes.get(c.EXTRA), privacy),
    }
    row.update(_log_context(record, attributes))
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
    message = attributes.get(c.EXCEPTION_MESSAGE) or log.body or error_type or "unknown error"
    if not isinstance(message, str):
        message = json.dumps(message, default=str)
    category = attributes.get(c.ERROR_CATEGORY) or error_category(error_type)
    error_code = attributes.get(c.ERROR_CODE) or _short_type(error_type)
    endpoint = attributes.get(c.ERROR_ENDPOINT) or _first(attributes, c.HTTP_PATH)
    row = {
        "timestamp": _log_timestamp(record),
        "category": _text(category, SHORT),
        "severity": _severity_of(record, attributes),
        "error_code": _text(error_code, 128),
        "error_message": _text(privacy.text(message), MESSAGE),
        "stack_trace": _text(privacy.text(attributes.get(c.EXCEPTION_STACKTRACE)), STACK_TRACE),
        "endpoint": _text(privacy.url(endpoint and str(endpoint).split("?", 1)[0]), URL),
        "user_id": _text(privacy.user(_first(attributes, c.USER_ID)), NAME),
        "device_id": _text(attributes.get(c.DEVICE_ID), NAME),
        "context": _json_text(attributes.get(c.EXTRA), privacy),
        "fingerprint": error_fingerprint(error_code or error_type, message),
    }
    row.update(_log_context(record, attributes))
    return row


def _activity_row(record: ReadableLogRecord, attributes: Mapping[str, Any], privacy: Privacy) -> Row:
    row = {
        "timestamp": _log_timestamp(record),
        "user_id": _text(privacy.user(_first(attributes, c.USER_ID)), NAME),
        "session_id": _text(attributes.get(c.SESSION_ID), 128),
        "activity_type": _text(attributes.get(c.ACTIVITY_TYPE) or "custom", SHORT),
        "page_url": _text(privacy.url(attributes.get(c.PAGE_URL)), URL),
        "element_id": _text(attributes.get(c.ELEMENT_ID), NAME),
        "search_query": _text(privacy.text(attributes.get(c.SEARCH_QUERY)), 512),
        "extra_data": _json_text(attributes.get(c.EXTRA), privacy),
        "duration_ms": _int(attributes.get(c.DURATION_MS)),
    }
    row.update(_log_context(record, attributes))
    return row


# The row builder of each table a log record can go to (``routing.log_table``).
_LOG_ROWS = {
    "device_state_history": _device_state_row,
    "user_activities": _activity_row,
    "error_logs": _error_log_row,
}
