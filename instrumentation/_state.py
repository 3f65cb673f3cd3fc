"""Where the helpers find the tracer and event logger that ``setup_telemetry`` configured.

Before ``setup_telemetry`` runs (or in a process that never calls it) the global OpenTelemetry
API is used, which is a no-op unless the application set up OpenTelemetry itself: the helpers
then cost nothing and never fail.
"""

from __future__ import annotations

from opentelemetry import _logs, trace

from exporter.conventions import INSTRUMENTATION_NAME

_tracer: trace.Tracer | None = None
_event_logger: _logs.Logger | None = None


def configure(tracer: trace.Tracer | None, event_logger: _logs.Logger | None) -> None:
    global _tracer, _event_logger
    _tracer, _event_logger = tracer, event_logger


def tracer() -> trace.Tracer:
    return _tracer or trace.get_tracer(INSTRUMENTATION_NAME)


def event_logger() -> _logs.Logger:
    return _event_logger or _logs.get_logger(INSTRUMENTATION_NAME)
