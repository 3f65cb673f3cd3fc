"""Python ``logging`` into ``error_logs``: what a developer logs at ERROR (configurable) becomes
an error row, as Sentry's logging integration does.

The row keeps the developer's message as ``error_message``; an exception, when the record has
one, gives the error code (its type), the stack trace and ``context.exception_message``. The
record is emitted in the request's context, so the row carries its trace; the endpoint (and the
user, once the request's user is known) come from the request's server span. The last lines the
same request logged (INFO and up, a few, each bounded) travel along as ``context.breadcrumbs``.
The project's own loggers never feed it (they do not propagate, and are skipped by name too).
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections import OrderedDict, deque
from typing import Any

from opentelemetry import trace

from exporter import conventions as c
from exporter.containment import never_raise
from exporter.events import error_event
from exporter.mapping import error_category
from exporter.own_logging import exporter_logger
from instrumentation import _state

logger = exporter_logger(__name__)

BREADCRUMBS = 10
BREADCRUMB_CHARS = 300
# Requests whose breadcrumbs are kept at once: a bound, not a per-request cleanup on the hot path.
_TRACKED_REQUESTS = 1024
_OWN_LOGGERS = ("exporter.", "instrumentation.", "query_api.", "homepot_analytics")
_SEVERITIES = ((logging.CRITICAL, "critical"), (logging.ERROR, "error"), (logging.WARNING, "warning"))
_GUARD = never_raise("could not turn a log record into an error row", logger=logger)
# Set on an exception once a span holds it: a server logging the same exception again (uvicorn's
# "Exception in ASGI application") must not make a second row of it.
RECORDED_FLAG = "_homepot_analytics_recorded"


def mark_recorded(exception: BaseException) -> None:
    """Note that ``exception`` is on a span already (its error row will come from there)."""
    # An exception type with __slots__ takes no flag: it may then be recorded twice.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exception, RECORDED_FLAG, True)


def _severity(levelno: int) -> str:
    return next((name for level, name in _SEVERITIES if levelno >= level), "info")


class ErrorLogCapture(logging.Handler):
    """Records at ``capture_level`` and up become ``error_logs`` rows; INFO and up are kept as
    breadcrumbs of the request they were logged in."""

    def __init__(self, capture_level: int = logging.ERROR) -> None:
        super().__init__(level=min(capture_level, logging.INFO))
        self.capture_level = capture_level
        self._crumbs: OrderedDict[int, deque[str]] = OrderedDict()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(_OWN_LOGGERS):
            return
        with _GUARD:
            span = trace.get_current_span()
            span_id = span.get_span_context().span_id if span.get_span_context().is_valid else 0
            message = record.getMessage()
            if record.levelno >= self.capture_level:
                self._record(record, message, span)
            if span_id:
                self._remember(span_id, f"{record.levelname} {record.name}: {message}")

    def _remember(self, span_id: int, line: str) -> None:
        crumbs = self._crumbs.get(span_id)
        if crumbs is None:
            crumbs = self._crumbs[span_id] = deque(maxlen=BREADCRUMBS)
            if len(self._crumbs) > _TRACKED_REQUESTS:
                self._crumbs.popitem(last=False)
        crumbs.append(line[:BREADCRUMB_CHARS])

    def _record(self, record: logging.LogRecord, message: str, span: trace.Span) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and getattr(error, RECORDED_FLAG, False):
            return
        attributes: dict[str, Any] = dict(getattr(span, "attributes", None) or {})
        context: dict[str, Any] = {"logger": record.name}
        if error is not None:
            context["exception_message"] = str(error)
        crumbs = self._crumbs.get(span.get_span_context().span_id)
        if crumbs:
            context["breadcrumbs"] = list(crumbs)
        exception_type = type(error).__name__ if error is not None else None
        user = next((attributes[key] for key in c.USER_ID if attributes.get(key) is not None), None)
        event = error_event(
            error_category(exception_type) if exception_type else "other",
            _severity(record.levelno),
            exception_type,
            message,
            exception_type=exception_type,
            stack_trace="".join(traceback.format_exception(*record.exc_info)) if record.exc_info else None,
            endpoint=attributes.get(c.HTTP_PATH[0]),
            user_id=None if user is None else str(user),
            device_id=None,
            context=context,
        )
        event.emit(_state.event_logger())


def install(capture_level: int) -> ErrorLogCapture:
    """The handler on the root logger (once per process: a second setup reuses it)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, ErrorLogCapture):
            handler.capture_level = capture_level
            handler.setLevel(min(capture_level, logging.INFO))
            return handler
    handler = ErrorLogCapture(capture_level)
    root.addHandler(handler)
    return handler


def uninstall(handler: ErrorLogCapture) -> None:
    logging.getLogger().removeHandler(handler)
