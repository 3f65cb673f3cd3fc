"""One-line helpers that record a device state change, an error or a user action as an
OpenTelemetry log record (built by ``exporter.events``).

The record carries the current trace context, so a state change or error reported while
handling a request is tied to that request's trace; one made after that request ended (a worker
it started) carries none and names it as ``linked_trace_id`` (``instrumentation.detached``).
None of them ever raises into the caller, whatever it is given: free-form context goes in as a
mapping (``context=`` / ``extra_data=``) or as keywords, and a key that is also a parameter's
name (``message``) is context, never a clash.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from opentelemetry import _logs
from opentelemetry.context import Context

from exporter.containment import never_raise
from exporter.events import device_state_event, error_event, user_activity_event
from instrumentation import _state
from instrumentation.detached import ended_request, hex_trace_id


def _detached_context(extra: dict[str, Any]) -> Context | None:
    """The context to emit in: the current one (None), or none at all when its request has
    ended, naming that request's trace in ``extra``."""
    ended = ended_request()
    if ended is None:
        return None
    extra.setdefault("linked_trace_id", hex_trace_id(ended))
    return Context()


def record_device_state(
    device_id: str,
    previous_state: str | None,
    new_state: str,
    changed_by: str = "system",
    reason: str | None = None,
    *,
    extra_data: Mapping[str, Any] | None = None,
    **extra: Any,
) -> None:
    """Record that a device went from ``previous_state`` to ``new_state``; never raises."""
    with never_raise("record_device_state failed; state change not recorded"):
        merged = {**(extra_data or {}), **extra}
        context = _detached_context(merged)
        event = device_state_event(device_id, previous_state, new_state, changed_by, reason, merged)
        event.emit(_state.event_logger(), context)


def record_error(
    category: str,
    severity: str,
    error_code: str | None,
    message: str,
    /,
    *,
    exception: BaseException | None = None,
    stack_trace: str | None = None,
    endpoint: str | None = None,
    user_id: str | None = None,
    device_id: str | None = None,
    context: Mapping[str, Any] | None = None,
    **extra: Any,
) -> None:
    """Record an error: category (api, database, external_service, validation, ...), severity
    (critical, error, warning, info), code and message; the stack trace of ``exception`` (or of
    the exception being handled) is kept; ``context`` and keywords become the row's context.
    Never raises."""
    with never_raise("record_error failed; error not recorded"):
        merged = {**(context or {}), **extra}
        emit_context = _detached_context(merged)
        if stack_trace is None:
            if exception is not None:
                stack_trace = "".join(traceback.format_exception(exception))
            else:
                current = traceback.format_exc()
                stack_trace = current if not current.startswith("NoneType: None") else None
        event = error_event(
            category,
            severity,
            error_code,
            message,
            exception_type=type(exception).__name__ if exception is not None else None,
            stack_trace=stack_trace,
            endpoint=endpoint,
            user_id=user_id,
            device_id=device_id,
            context=merged,
        )
        event.emit(_state.event_logger(), emit_context)


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

    ``extra_data`` takes context as a dict (its keys may clash with parameter names), ``extra``
    as keyword arguments; ``event_id`` makes a resent action stored once. A backend calls this
    for actions that never pass through a browser; the frontend intake has its own path."""
    with never_raise("record_user_activity failed; activity not recorded"):
        merged = {**(extra_data or {}), **extra}
        context = _detached_context(merged)
        event = user_activity_event(
            activity_type,
            user_id=user_id,
            session_id=session_id,
            page_url=page_url,
            element_id=element_id,
            search_query=search_query,
            duration_ms=duration_ms,
            timestamp_ns=timestamp_ns,
            event_id=event_id,
            extra_data=merged,
        )
        event.emit(event_logger or _state.event_logger(), context)
