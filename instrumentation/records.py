"""One-line helpers that record a device state change or an error as an OpenTelemetry log record.

The record carries the current trace context, so a state change or error reported while
handling a request is tied to that request's trace.
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from typing import Any

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
