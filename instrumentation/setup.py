"""``setup_telemetry``: the one call that instruments a FastAPI service.

    app = FastAPI()
    telemetry = setup_telemetry(app, service_name="homepot-api")

Requests, unhandled exceptions, ``job_span`` blocks and ``record_*`` calls then flow as spans
and log records through batching processors into the PostgreSQL exporters. Nothing touches the
database on the request path: the processors' worker threads do, in batches.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from opentelemetry import _logs, trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from starlette.concurrency import run_in_threadpool
from starlette.middleware.errors import ServerErrorMiddleware

from exporter import PostgresLogExporter, PostgresSpanExporter, create_delivery
from exporter.conventions import INSTRUMENTATION_NAME
from exporter.delivery import Delivery
from exporter.privacy import privacy_from_settings
from exporter.processor import CountingBatchLogRecordProcessor, CountingBatchSpanProcessor
from homepot_analytics.settings import Settings, get_settings
from instrumentation import _state
from instrumentation.client_ip import parse_networks
from instrumentation.middleware import RequestDetailsMiddleware
from instrumentation.users import UserResolver, default_user_resolver

logger = logging.getLogger(__name__)


def excluded_urls_pattern(paths: Sequence[str]) -> str:
    """FastAPIInstrumentor matches regexes against ``scheme://host/path``: anchor each path.

    A trailing ``*`` makes a prefix (``/static/*``); otherwise the path must match exactly,
    so excluding ``/health`` does not exclude ``/api/health-report``.
    """
    patterns = []
    for path in paths:
        if path.endswith("*"):
            patterns.append(r"^[a-z]+://[^/]+" + re.escape(path[:-1]))
        else:
            patterns.append(r"^[a-z]+://[^/]+" + re.escape(path.rstrip("/") or "/") + "/?$")
    return ",".join(patterns)


class Telemetry:
    """The handle ``setup_telemetry`` returns: flush or shut down what it set up."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        logger_provider: LoggerProvider,
        processors: list[Any],
        delivery: Delivery | None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.logger_provider = logger_provider
        self.delivery = delivery
        self._processors = processors
        self._shut_down = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write (or spool) everything recorded so far; True when it all went out in time."""
        return all(processor.force_flush(timeout_millis) for processor in self._processors)

    def shutdown(self) -> None:
        """Flush, stop the exporters, and keep what the database could not take in the spool."""
        if self._shut_down:
            return
        self._shut_down = True
        for processor in self._processors:
            try:
                processor.shutdown()
            except Exception:
                logger.exception("error shutting down %s", type(processor).__name__)
        if self.delivery is not None:
            self.delivery.shutdown()
        _state.configure(None, None)


def _providers(resource: Resource) -> tuple[TracerProvider, LoggerProvider]:
    """Providers of our own (so each instrumented app keeps its service name), installed as
    the global ones when the application has none, so other instrumentations' spans join."""
    tracer_provider = TracerProvider(resource=resource)
    logger_provider = LoggerProvider(resource=resource)
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(tracer_provider)
    if not isinstance(_logs.get_logger_provider(), LoggerProvider):
        _logs.set_logger_provider(logger_provider)
    return tracer_provider, logger_provider


def _insert_details_middleware(app: FastAPI, middleware: Callable[[Any], Any]) -> None:
    """Place our middleware between the OTel middleware and Starlette's error handler.

    FastAPIInstrumentor builds ``ServerErrorMiddleware(OpenTelemetryMiddleware(
    ServerErrorMiddleware(...)))``; inside the OTel middleware the server span is current,
    and outside the inner error handler we see the 500 an unhandled exception becomes.
    """
    instrumented_build = app.build_middleware_stack

    def build_middleware_stack() -> Any:
        stack = instrumented_build()
        otel = getattr(stack, "app", None)
        inner = getattr(otel, "app", None)
        if isinstance(stack, ServerErrorMiddleware) and isinstance(inner, ServerErrorMiddleware):
            otel.app = middleware(inner)  # type: ignore[union-attr]
            return stack
        logger.warning("unexpected middleware stack; request details recorded from inside it")
        return middleware(stack)

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def _flush_on_shutdown(app: FastAPI, telemetry: Telemetry) -> None:
    """After the app's own lifespan ends (uvicorn's SIGTERM path), write what is pending."""
    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(running_app: Any) -> AsyncIterator[Any]:
        async with original(running_app) as state:
            yield state
        await run_in_threadpool(telemetry.shutdown)

    app.router.lifespan_context = lifespan


_FLUSH_ON_SIGTERM: weakref.WeakSet[Telemetry] = weakref.WeakSet()


def _on_sigterm(signum: int, frame: Any) -> None:
    for telemetry in list(_FLUSH_ON_SIGTERM):
        telemetry.shutdown()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def _flush_on_sigterm(telemetry: Telemetry) -> None:
    """Without a server that handles SIGTERM (uvicorn does, then runs the lifespan shutdown),
    the default action kills the process before atexit runs: flush first, then let the signal
    do what it would have done. Another handler already installed is left alone."""
    _FLUSH_ON_SIGTERM.add(telemetry)
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def setup_telemetry(
    app: FastAPI,
    service_name: str | None = None,
    *,
    settings: Settings | None = None,
    database_url: str | None = None,
    user_resolver: UserResolver = default_user_resolver,
    excluded_paths: Sequence[str] | None = None,
    export_to_postgres: bool = True,
    export: Sequence[str] | None = None,
) -> Telemetry:
    """Instrument ``app`` and export its telemetry into the analytics tables.

    ``database_url`` overrides ``HOMEPOT_ANALYTICS_DATABASE_URL`` (unset: embedded PostgreSQL).
    ``user_resolver(scope, status_code)`` names the user of a request.
    ``excluded_paths`` replaces the default list (health, docs, metrics).
    ``export`` says where telemetry goes: "postgres" (the tables), "otlp" (a collector, configured
    by the standard OTEL_EXPORTER_OTLP_* variables) or both; default HOMEPOT_ANALYTICS_EXPORT.
    """
    settings = settings or get_settings()
    service_name = service_name or settings.service_name or os.environ.get("OTEL_SERVICE_NAME") or "unknown"
    resource = Resource.create({"service.name": service_name})
    tracer_provider, logger_provider = _providers(resource)

    processors: list[Any] = []
    delivery: Delivery | None = None
    targets = set(settings.export if export is None else export)
    if export_to_postgres and "postgres" in targets:
        from homepot_analytics.database import resolve_database_url

        url = database_url or resolve_database_url(settings)
        delivery = create_delivery(
            url,
            settings.data_dir / "spool" / re.sub(r"[^A-Za-z0-9_.-]", "_", service_name),
            spool_max_bytes=settings.spool_max_mb * 1024 * 1024,
            auto_migrate=settings.auto_migrate,
        )
        # The same privacy rules as the OTLP sink: pseudonyms, truncated IPs, secrets masked.
        privacy = privacy_from_settings(settings)
        queue_size = settings.export_queue_size
        batch_size = min(settings.export_batch_size, queue_size)
        delay_ms = settings.export_delay_ms
        # Counting processors: a full queue drops the oldest record, counted per table.
        span_processor = CountingBatchSpanProcessor(
            PostgresSpanExporter(delivery, privacy),
            max_queue_size=queue_size,
            max_export_batch_size=batch_size,
            schedule_delay_millis=delay_ms,
        )
        log_processor = CountingBatchLogRecordProcessor(
            PostgresLogExporter(delivery, privacy),
            max_queue_size=queue_size,
            max_export_batch_size=batch_size,
            schedule_delay_millis=delay_ms,
        )
        tracer_provider.add_span_processor(span_processor)
        logger_provider.add_log_record_processor(log_processor)
        processors += [span_processor, log_processor]
    if "otlp" in targets:
        from instrumentation.otlp import otlp_processors

        otlp_spans, otlp_logs = otlp_processors()
        tracer_provider.add_span_processor(otlp_spans)
        logger_provider.add_log_record_processor(otlp_logs)
        processors += [otlp_spans, otlp_logs]

    _state.configure(
        tracer_provider.get_tracer(INSTRUMENTATION_NAME), logger_provider.get_logger(INSTRUMENTATION_NAME)
    )
    paths = list(settings.excluded_paths if excluded_paths is None else excluded_paths)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracer_provider,
        excluded_urls=excluded_urls_pattern(paths) if paths else None,
        exclude_spans=["receive", "send"],
    )
    trusted = parse_networks(settings.trusted_proxies)
    _insert_details_middleware(
        app,
        lambda inner: RequestDetailsMiddleware(inner, user_resolver=user_resolver, trusted_proxies=trusted),
    )
    telemetry = Telemetry(tracer_provider, logger_provider, processors, delivery)
    _flush_on_shutdown(app, telemetry)
    atexit.register(telemetry.shutdown)
    _flush_on_sigterm(telemetry)
    return telemetry
