"""The log records this project emits: a device state change, a recorded error, a user activity.

Each is built here, once, as an ``Event`` (event name, body, severity, attributes under the keys
of ``exporter.conventions``), so the instrumentation helpers (``record_*``) and the service's
frontend intake emit exactly what the mapping reads. Pure: building an event does no I/O.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.context import Context

from exporter import conventions as c

SEVERITY_NUMBERS = {
    "critical": SeverityNumber.FATAL,
    "error": SeverityNumber.ERROR,
    "warning": SeverityNumber.WARN,
    "info": SeverityNumber.INFO,
}


@dataclass(frozen=True)
class Event:
    """One log record to emit."""

    name: str
    body: str
    severity: SeverityNumber
    attributes: dict[str, Any]
    severity_text: str | None = None
    timestamp_ns: int | None = None

    def emit(self, event_logger: Logger, context: Context | None = None) -> None:
        """Emit on ``event_logger``; the record carries the trace of ``context`` (default: the
        current one)."""
        event_logger.emit(
            context=context,
            event_name=self.name,
            timestamp=self.timestamp_ns,
            severity_number=self.severity,
            severity_text=self.severity_text,
            body=self.body,
            attributes=self.attributes,
        )


def _extra(extra: Mapping[str, Any]) -> str | None:
    """Free-form context as JSON text: log record attributes cannot hold maps."""
    return json.dumps(dict(extra), default=str) if extra else None


def _attributes(values: Mapping[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """The attributes that are set, plus the record's identity (so a retried record is stored once)."""
    attributes = {key: value for key, value in values.items() if value is not None}
    attributes[c.EVENT_ID] = event_id or str(uuid.uuid4())
    return attributes


def device_state_event(
    device_id: str,
    previous_state: str | None,
    new_state: str,
    changed_by: str | None,
    reason: str | None,
    extra: Mapping[str, Any],
) -> Event:
    return Event(
        name=c.DEVICE_STATE_EVENT,
        body=f"device {device_id}: {previous_state} -> {new_state}",
        severity=SeverityNumber.INFO,
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


def error_event(
    category: str,
    severity: str,
    error_code: str | None,
    message: str,
    *,
    exception_type: str | None,
    stack_trace: str | None,
    endpoint: str | None,
    user_id: str | None,
    device_id: str | None,
    context: Mapping[str, Any],
    group: str | None = None,
) -> Event:
    return Event(
        name=c.ERROR_EVENT,
        body=message,
        severity=SEVERITY_NUMBERS.get(severity, SeverityNumber.ERROR),
        severity_text=severity.upper(),
        attributes=_attributes(
            {
                c.ERROR_CATEGORY: category,
                c.ERROR_SEVERITY: severity,
                c.ERROR_CODE: error_code,
                c.EXCEPTION_TYPE: exception_type,
                c.EXCEPTION_STACKTRACE: stack_trace,
                c.ERROR_ENDPOINT: endpoint,
                c.USER_ID[0]: user_id,
                c.DEVICE_ID: device_id,
                c.ERROR_GROUP: group,
                c.EXTRA: _extra(context),
            }
        ),
    )


def user_activity_event(
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
) -> Event:
    return Event(
        name=c.USER_ACTIVITY_EVENT,
        body=activity_type,
        severity=SeverityNumber.INFO,
        timestamp_ns=timestamp_ns,
        attributes=_attributes(
            {
                c.ACTIVITY_TYPE: activity_type,
                c.USER_ID[0]: user_id,
                c.SESSION_ID: session_id,
                c.PAGE_URL: page_url,
                c.ELEMENT_ID: element_id,
                c.SEARCH_QUERY: search_query,
                c.DURATION_MS: duration_ms,
                c.EXTRA: _extra(extra_data or {}),
            },
            event_id,
        ),
    )
