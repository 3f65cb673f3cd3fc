"""Exporters for ``opentelemetry-instrument`` (zero-code), built from entry points with no arguments:

    opentelemetry-instrument --traces_exporter homepot_analytics --logs_exporter homepot_analytics \\
        uvicorn app:app

(or ``OTEL_TRACES_EXPORTER`` / ``OTEL_LOGS_EXPORTER=homepot_analytics``). The SDK wraps each in
its own batch processor, whose queue would drop silently under load; so each exporter hands what
it is given straight on to a processor of our pipeline (``exporter.pipeline``: drops counted per
table, the outage spool, the privacy policy, queue sizes from ``HOMEPOT_ANALYTICS_*``). Handing on
is a queue append, so the SDK's queue in front empties as fast as it fills.

Sampling must never cost a row (``OTEL_TRACES_SAMPLER=traceidratio``, a caller's not-sampled
``traceparent``), but the SDK's batch processor hands an exporter sampled spans only. So the span
exporter, built while ``opentelemetry-instrument`` configures the global provider (before any
instrumentation made a tracer), makes that provider record every span (``exporter.sampling``)
and adds a processor to it that hands on the spans it did not sample; the sampled ones come
through the SDK's processor as usual. Every span, sampled or not, reaches the tables.

Plain ``logging`` records reach the tables' log processor through the SDK's logging handler
(``OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED=true``); those at
``HOMEPOT_ANALYTICS_LOG_CAPTURE_LEVEL`` and up become error rows (OFF: none).

Both exporters of a process share one pipeline (one writer connection, one spool), shut down when
the last of them is.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import _logs, trace
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from exporter.containment import never_raise
from exporter.conventions import ERROR_EVENT
from exporter.own_logging import exporter_logger
from exporter.pipeline import OurLogProcessor, OurSpanProcessor, ServicePipeline, build_pipeline
from exporter.routing import ERROR_SEVERITY
from exporter.sampling import record_all
from exporter.termination import shut_down_on_sigterm
from homepot_foundation.settings import get_settings

logger = exporter_logger(__name__)

ENTRY_POINT_NAME = "homepot_analytics"


class _SharedPipeline:
    """The process's one zero-code pipeline, built by its first user, shut down by its last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pipeline: ServicePipeline | None = None
        self._users = 0
        self._sigterm_registered = False  # once per process, however often a pipeline is rebuilt

    def acquire(self) -> ServicePipeline:
        with self._lock:
            if self._pipeline is None:
                settings = get_settings()
                name = settings.service_name or os.environ.get("OTEL_SERVICE_NAME") or "zero-code"
                self._pipeline = build_pipeline(settings, name)
                logger.info("opentelemetry-instrument: exporting into the analytics tables (spool %s)", name)
                if not self._sigterm_registered:
                    # uvicorn re-raises SIGTERM once it has stopped: the SDK's providers (and so
                    # these exporters) would never be shut down, and what they hold never written.
                    shut_down_on_sigterm(_shut_down_providers)
                    self._sigterm_registered = True
            self._users += 1
            return self._pipeline

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            pipeline = self._pipeline if self._users <= 0 else None
            if pipeline is not None:
                self._pipeline, self._users = None, 0
        if pipeline is not None:
            pipeline.shutdown()


_SHARED = _SharedPipeline()


def _shut_down_providers() -> None:
    """Shut down the global providers opentelemetry-instrument made: their queues are exported
    into our exporters, whose shutdown writes (or spools) everything."""
    for provider in (trace.get_tracer_provider(), _logs.get_logger_provider()):
        shutdown = getattr(provider, "shutdown", None)
        if callable(shutdown):
            with never_raise("could not shut down %s at SIGTERM", type(provider).__name__, logger=logger):
                shutdown()


class _HandOn:
    """What both zero-code exporters do: hand each record to a processor of the shared pipeline,
    flush it, shut it down (and release the pipeline) once."""

    def __init__(self, processor: OurSpanProcessor | OurLogProcessor) -> None:
        self._processor = processor
        self._shut_down = False

    def _hand_on(self, records: Sequence[Any]) -> bool:
        if self._shut_down:
            return False
        for record in records:
            self._processor.enqueue(record)
        return True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._processor.force_flush(timeout_millis)

    def shutdown(self) -> None:
        if self._shut_down:
            logger.warning("shutdown called twice")
            return
        self._shut_down = True
        self._processor.shutdown()
        _SHARED.release()


class ZeroCodeSpanExporter(_HandOn, SpanExporter):
    """``--traces_exporter homepot_analytics``: spans into our counting span processor, the
    not-sampled ones too."""

    def __init__(self) -> None:
        super().__init__(_SHARED.acquire().span_processor())
        provider = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider):
            record_all(provider)
            provider.add_span_processor(_NotSampledSpans(self))

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS if self._hand_on(spans) else SpanExportResult.FAILURE


class _NotSampledSpans(SpanProcessor):
    """On the global provider: hands on the spans its sampler recorded but did not sample, which
    the SDK's batch processor never gives an exporter (the sampled ones come through it)."""

    def __init__(self, exporter: ZeroCodeSpanExporter) -> None:
        self._exporter = exporter

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is not None and not context.trace_flags.sampled:
            self._exporter._hand_on((span,))


class ZeroCodeLogExporter(_HandOn, LogRecordExporter):
    """``--logs_exporter homepot_analytics``: log records into our counting log processor;
    plain ``logging`` records below the capture level (all of them when it is OFF) are let go,
    the others become error rows (``exporter.routing.log_table``)."""

    def __init__(self) -> None:
        pipeline = _SHARED.acquire()
        super().__init__(pipeline.log_processor())
        level = pipeline.settings.log_capture_level
        self._plain_from = _SEVERITY_OF_LEVEL.get(level)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        kept = [record for record in batch if self._keeps(record)]
        return LogRecordExportResult.SUCCESS if self._hand_on(kept) else LogRecordExportResult.FAILURE

    def _keeps(self, record: ReadableLogRecord) -> bool:
        log = record.log_record
        if log.event_name or (log.attributes and "event.name" in log.attributes):
            return True  # one of ours (record_error, record_device_state...) or a named event
        severity = log.severity_number.value if log.severity_number is not None else 0
        if self._plain_from is None or severity < self._plain_from:
            return False
        if severity < ERROR_SEVERITY:  # WARNING captured: routed as an error by its name
            log.event_name = ERROR_EVENT
        return True


# HOMEPOT_ANALYTICS_LOG_CAPTURE_LEVEL as OpenTelemetry severity numbers (OFF: absent).
_SEVERITY_OF_LEVEL = {"CRITICAL": 21, "ERROR": ERROR_SEVERITY, "WARNING": 13}
