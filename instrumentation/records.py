"""One-line helpers that record a device state change or an error as an OpenTelemetry log record.

The record carries the current trace context, so a state change or error reported while
handling a request is tied to that request's trace.
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from collections.abc import Mapping
from typing import Any

from opentelemetry import _logs
from opentelemetry._logs import SeverityNumber

from exporter import conventions as c
from instrumentation import _state

logger = logging.getLogger(__name__)

_SEVERITY_NUMBERS = {
    "critical": SeverityNumber.FATAL,
    "error": SeverityNumber.ERROR,
    "warning": SeverityNumber.WARN,
    "info": SeverityNumber.INFO,
}


def _extra(extra: dict[str, Any]) -> str | None:
    return json.dumps(extra, default=str) if extra else None


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    attributes = {key: value for key, value in values.items() if value is not None}
    attributes[c.EVENT_ID] = str(uuid.uuid4())
    return attributes


def record_device_state(
    device_id: str,
    previous_state: str | None,
    new_state: str,
    changed_by: str = "system",
    reason: str | None = None,
    **extra: Any,
) -> None:
    """Record that a device went from ``previous_state`` to ``new_state``; never raises."""
    try:
        _state.event_logger().emit(
            event_name=c.DEVICE_STATE_EVENT,
            severity_number=SeverityNumber.INFO,
            body=f"device {device_id}: {previous_state} -> {new_state}",
            attributes=_attributes(
                {
                    c.DEVICE_ID: str(device_id),
                    c.DEVICE_PREVIOUS_STATE: previous_state,
                    c.DEVICE_NEW_STATE: new_state,
                    c.DEVICE_CHANGED_BY: str(changed_by) if changed_by is not None else None,
                    c.DEVICE_REASON: reason,
                    c.EXTRA: _extra(extra),
                }
            ),
        )
    except Exception:
        logger.exception("record_device_state failed; state change not recorded")


def record_error(
    category: str,
    severity: str,
    error_code: str | None,
    message: str,
    *,
    exception: BaseException | None = None,
    stack_trace: str | None = None,
    endpoint: str | None = None,
    user_id: str | None = None,
    device_id: str | None = None,
    **context: Any,
) -> None:
    """Record an error: category (api, database, external_service, validation, ...), severity
    (critical, error, warning, info), code and message; the stack trace of ``exception`` (or of
    the exception being handled) is kept. Never raises."""
    try:
        if stack_trace is None:
            if exception is not None:
                stack_trace = "".join(traceback.format_exception(exception))
            else:
                current = traceback.format_exc()
                stack_trace = current if not current.startswith("NoneType: None") else None
        _state.event_logger().emit(
            event_name=c.ERROR_EVENT,
            severity_number=_SEVERITY_NUMBERS.get(severity, SeverityNumber.ERROR),
            severity_text=severity.upper(),
            body=message,
            attributes=_attributes(
                {
                    c.ERROR_CATEGORY: category,
                    c.ERROR_SEVERITY: severity,
                    c.ERROR_CODE: error_code,
                    c.EXCEPTION_TYPE: type(exception).__name__ if exception is not None else None,
                    c.EXCEPTION_STACKTRACE: stack_trace,
                    c.ERROR_ENDPOINT: endpoint,
                    c.USER_ID[0]: user_id,
                    c.DEVICE_ID: device_id,
                    c.EXTRA: _extra(context),
                }
            ),
        )
    except Exception:
        logger.exception("record_error failed; error not recorded")


def record_user_activity(
    activity_type: str,
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    page_url: str | None = None,
    element_id: str | None = None,
    search_query: str | None = None,
    duration_ms: int | None = None,
    timestamp_ns: int | None = None,
    event_id: str | None = None,
    extra_data: Mapping[str, Any] | None = None,
    event_logger: _logs.Logger | None = None,
    **extra: Any,
) -> None:
    """Record a user action (page_view, click, search, form_submit, ...); never raises.

    The frontend intake of the query service calls this for every event it accepts, on the
    service's own ``event_logger`` and with the event's ``event_id`` (so a resent event is stored
    once) and its ``extra_data`` as a dict (its keys may clash with parameter names); a backend
    may call it too (e.g. for actions that never pass through a browser)."""
    try:
        attributes = _attributes(
            {
                c.ACTIVITY_TYPE: activity_type,
                c.USER_ID[0]: user_id,
                c.SESSION_ID: session_id,
                c.PAGE_URL: page_url,
                c.ELEMENT_ID: element_id,
                c.SEARCH_QUERY: search_query,
                c.DURATION_MS: duration_ms,
                c.EXTRA: _extra({**(extra_data or {}), **extra}),
            }
        )
        if event_id is not None:
            attributes[c.EVENT_ID] = event_id
        (event_logger or _state.event_logger()).emit(
            event_name=c.USER_ACTIVITY_EVENT,
            timestamp=timestamp_ns,
            severity_number=SeverityNumber.INFO,
            body=activity_type,
            attributes=attributes,
        )
    except Exception:
        logger.exception("record_user_activity failed; activity not recorded")
