"""``setup_telemetry``: the one call that instruments a FastAPI service.

    app = FastAPI()
    telemetry = setup_telemetry(app, service_name="homepot-api")

Requests, unhandled exceptions, ``job_span`` blocks and ``record_*`` calls then flow as spans
and log records to the pipeline of ``exporter.pipeline``: by default each is encoded as it ends
and sent to an export worker process that maps and writes it in batches. Nothing touches the
database on the request path.
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from opentelemetry import _logs, trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from starlette.concurrency import run_in_threadpool
from starlette.middleware.errors import ServerErrorMiddleware

from exporter.containment import never_raise
from exporter.conventions import INSTRUMENTATION_NAME
from exporter.delivery import Delivery
from exporter.linked_processors import LinkedSpanProcessor
from exporter.own_logging import exporter_logger
from exporter.pipeline import ServicePipeline, build_pipeline
from exporter.sampling import configured_sampler, record_all
from exporter.termination import shut_down_on_sigterm
from homepot_foundation.settings import DEFAULT_EXCLUDED_PATHS, Settings, get_settings
from instrumentation import _state, log_capture
from instrumentation.client_ip import parse_networks
from instrumentation.exclusions import ExcludedPaths
from instrumentation.middleware import NESTED_WARNING, ExceptionRecorder, ServerSpanMiddleware
from instrumentation.otlp import otlp_processors
from instrumentation.request_span import RequestSpans
from instrumentation.stock import StockSpanDetails
from instrumentation.users import UserResolver, user_resolver_for

logger = exporter_logger(__name__)


class Telemetry:
    """The handle ``setup_telemetry`` returns: flush or shut down what it set up."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        logger_provider: LoggerProvider,
        processors: list[Any],
        pipeline: ServicePipeline | None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.logger_provider = logger_provider
        self.pipeline = pipeline
        # In-process delivery only (HOMEPOT_ANALYTICS_EXPORT_WORKER=thread); else it is the worker's.
        self.delivery: Delivery | None = pipeline.delivery if pipeline is not None else None
        self._processors = processors
        self._shut_down = False
        self.log_capture: log_capture.ErrorLogCapture | None = None

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write (or spool) everything recorded so far; True when it all went out in time."""
        return all(processor.force_flush(timeout_millis) for processor in self._processors)

    def shutdown(self) -> None:
        """Flush, stop the exporters, and keep what the database could not take in the spool."""
        if self._shut_down:
            return
        self._shut_down = True
        if self.log_capture is not None:
            log_capture.uninstall(self.log_capture)
        for processor in self._processors:
            with never_raise("error shutting down %s", type(processor).__name__, logger=logger):
                processor.shutdown()
        if self.pipeline is not None:
            self.pipeline.shutdown()
        _state.configure(None, None)


# The providers setup_telemetry made (held weakly): a global one of these is ours, not the app's.
_OURS: weakref.WeakSet[Any] = weakref.WeakSet()


def _providers(resource: Resource) -> tuple[TracerProvider, LoggerProvider]:
    """The application's own SDK providers when it configured OpenTelemetry itself (its
    TracerProvider exporting to Jaeger, ``opentelemetry-instrument``): our processors join them,
    so the server span and its children form one trace in the app's exporters too. Else
    providers of our own (each instrumented app keeps its service name), installed as the global
    ones when there are none, so other instrumentations' spans join."""
    current_tracer, current_logger = trace.get_tracer_provider(), _logs.get_logger_provider()
    if isinstance(current_tracer, TracerProvider) and current_tracer not in _OURS:
        tracer_provider = current_tracer
        record_all(tracer_provider)
        logger.info("joining the application's own OpenTelemetry providers (its resource names the service)")
    else:
        # Every span recorded, whatever the sampler says: sampling decides what a collector gets,
        # never which requests and jobs reach the tables (instrumentation/sampling.py).
        tracer_provider = TracerProvider(resource=resource, sampler=configured_sampler())
        _OURS.add(tracer_provider)
        if not isinstance(current_tracer, TracerProvider):
            trace.set_tracer_provider(tracer_provider)
    if isinstance(current_logger, LoggerProvider) and current_logger not in _OURS:
        logger_provider = current_logger
    else:
        logger_provider = LoggerProvider(resource=tracer_provider.resource)
        _OURS.add(logger_provider)
        if not isinstance(current_logger, LoggerProvider):
            _logs.set_logger_provider(logger_provider)
    return tracer_provider, logger_provider


def _logging_exported_already(logger_provider: LoggerProvider) -> bool:
    """Whether ``logging`` records reach our log processor already: the application's own
    provider (joined) has OpenTelemetry's logging handler on the root logger
    (``opentelemetry-instrument`` with logs). Its ERROR records become rows as they are; a
    capture of ours beside it would store each one twice."""
    if logger_provider in _OURS:
        return False
    if any(isinstance(handler, LoggingHandler) for handler in logging.getLogger().handlers):
        logger.info(
            "logging records reach the tables through OpenTelemetry's LoggingHandler (no capture of ours)"
        )
        return True
    return False


def _quiet_native_telemetry(app: FastAPI) -> None:
    """FastAPI's own request tracing (0.16x+) uses the global providers, which may be ours: each
    request would then be recorded twice. Turn its tracing and logs off for this app, unless the
    application gave it providers of its own. ``FastAPI(telemetry=...)`` is only a constructor
    argument, so the config it keeps is changed in place; metrics are left as configured."""
    config = getattr(app, "_telemetry", None)
    if not isinstance(config, dict):
        return
    if config.get("tracer_provider") is None:
        config["tracing"] = False
    if config.get("logger_provider") is None:
        config["logs"] = False


def _stock_layer(stack: Any) -> Any:
    """The stock OpenTelemetry ASGI middleware in a built stack, or None."""
    layer: Any = stack
    while layer is not None:
        if type(layer).__name__ == "OpenTelemetryMiddleware":
            return layer
        layer = getattr(layer, "app", None)
    return None


def _wrap_middleware_stack(
    app: FastAPI, middleware: Callable[[Any], Any], user_resolver: UserResolver
) -> None:
    """Make our middleware the outermost layer of the app's stack, around Starlette's error
    handler (the span is current for every middleware, and we see the 500 an unhandled
    exception becomes), with ``ExceptionRecorder`` just inside that handler. Set up again
    (after a shutdown), the new middleware replaces the old one instead of stacking on it.

    When stock instrumentation is in the stack already (FastAPIInstrumentor applied first), its
    span is the request's: ours would only wrap it in a second server span. Then
    ``StockSpanDetails`` goes just inside it instead, to add what it leaves out."""
    build = getattr(app, "_homepot_unwrapped_build", app.build_middleware_stack)
    app._homepot_unwrapped_build = build  # type: ignore[attr-defined]

    def build_middleware_stack() -> Any:
        stack = build()
        stock = _stock_layer(stack)
        if stock is not None:
            logger.warning(NESTED_WARNING)
            stock.app = StockSpanDetails(stock.app, user_resolver)
            return stack
        if isinstance(stack, ServerErrorMiddleware):
            stack.app = ExceptionRecorder(stack.app)
        else:
            logger.warning("unexpected middleware stack; exceptions are recorded after the 500 is sent")
        return middleware(stack)

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    app.middleware_stack = None  # built already (the app served a request): build it again


def _flush_when_lifespan_ends(app: FastAPI, telemetry: Telemetry) -> None:
    """After the app's own lifespan ends (uvicorn's SIGTERM path), write what is pending.

    A flush, not a shutdown: the same app may start again in this process (a test suite runs its
    lifespan once per test) and must go on recording; exit and SIGTERM shut the pipeline down."""
    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(running_app: Any) -> AsyncIterator[Any]:
        async with original(running_app) as state:
            yield state
        await run_in_threadpool(telemetry.force_flush)

    app.router.lifespan_context = lifespan


def setup_telemetry(
    app: FastAPI,
    service_name: str | None = None,
    *,
    settings: Settings | None = None,
    database_url: str | None = None,
    user_resolver: UserResolver | None = None,
    excluded_paths: Sequence[str] = (),
    exclude_default_paths: bool | None = None,
    export: Sequence[str] | None = None,
) -> Telemetry:
    """Instrument ``app`` and export its telemetry into the analytics tables.

    ``database_url`` overrides ``HOMEPOT_ANALYTICS_DATABASE_URL`` (unset: embedded PostgreSQL).
    ``user_resolver(scope, status_code)`` names the user of a request (default: the app's
    ``request.state`` user, else the subject of the JWT in the ``HOMEPOT_ANALYTICS_USER_COOKIE``
    cookie or the bearer header).
    ``excluded_paths`` are not recorded, in addition to ``HOMEPOT_ANALYTICS_EXCLUDED_PATHS`` and
    the defaults (health, docs, metrics); ``exclude_default_paths=False`` records those too.
    ``export`` says where telemetry goes: "postgres" (the tables), "otlp" (a collector, configured
    by the standard OTEL_EXPORTER_OTLP_* variables) or both; default HOMEPOT_ANALYTICS_EXPORT.
    """
    current = getattr(app.state, "homepot_telemetry", None)
    if isinstance(current, Telemetry) and not current.is_shut_down:
        logger.warning("setup_telemetry was already called for this app; keeping that setup")
        return current
    settings = settings or get_settings()
    service_name = service_name or settings.service_name or os.environ.get("OTEL_SERVICE_NAME") or "unknown"
    resource = Resource.create({"service.name": service_name})
    tracer_provider, logger_provider = _providers(resource)

    processors: list[Any] = []
    pipeline: ServicePipeline | None = None
    request_spans: RequestSpans | None = None
    targets = set(settings.export if export is None else export)
    if "postgres" in targets:
        # The same pipeline as the OTLP sink's: spool, queue sizes, privacy.
        pipeline = build_pipeline(settings, service_name, database_url=database_url)
        span_processor, log_processor = pipeline.span_processor(), pipeline.log_processor()
        tracer_provider.add_span_processor(span_processor)
        logger_provider.add_log_record_processor(log_processor)
        processors += [span_processor, log_processor]
        if (
            isinstance(span_processor, LinkedSpanProcessor)
            and tracer_provider in _OURS
            and targets == {"postgres"}
        ):
            # Nothing but the tables will read the request spans: they skip the SDK's span.
            request_spans = RequestSpans(tracer_provider, span_processor)
    if "otlp" in targets:
        otlp_spans, otlp_logs = otlp_processors()
        tracer_provider.add_span_processor(otlp_spans)
        logger_provider.add_log_record_processor(otlp_logs)
        processors += [otlp_spans, otlp_logs]

    tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME)
    _state.configure(tracer, logger_provider.get_logger(INSTRUMENTATION_NAME))
    user_resolver = user_resolver or user_resolver_for(settings.user_cookie or None)
    keep_defaults = settings.exclude_default_paths if exclude_default_paths is None else exclude_default_paths
    defaults = DEFAULT_EXCLUDED_PATHS if keep_defaults else ()
    excluded = ExcludedPaths([*defaults, *settings.excluded_paths, *excluded_paths])
    trusted = parse_networks(settings.trusted_proxies)
    _quiet_native_telemetry(app)
    _wrap_middleware_stack(
        app,
        lambda inner: ServerSpanMiddleware(
            inner,
            tracer=tracer,
            user_resolver=user_resolver,
            trusted_proxies=trusted,
            excluded_paths=excluded,
            record_server_errors=settings.record_server_errors,
            request_spans=request_spans,
        ),
        user_resolver,
    )
    telemetry = Telemetry(tracer_provider, logger_provider, processors, pipeline)
    if settings.log_capture_level != "OFF" and not _logging_exported_already(logger_provider):
        telemetry.log_capture = log_capture.install(logging.getLevelName(settings.log_capture_level))
    app.state.homepot_telemetry = telemetry
    _flush_when_lifespan_ends(app, telemetry)
    atexit.register(telemetry.shutdown)
    # Without a server that handles SIGTERM the default action would kill the process first.
    shut_down_on_sigterm(telemetry.shutdown)
    return telemetry
