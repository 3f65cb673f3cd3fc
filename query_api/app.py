"""The analytics service ``homepot-analytics serve`` runs: query API, OTLP sink, activity intake."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from exporter import PostgresLogExporter, create_delivery
from exporter.conventions import INSTRUMENTATION_NAME
from exporter.migrations import migrate
from exporter.privacy import privacy_from_settings
from homepot_analytics.database import create_engine, resolve_database_url
from homepot_analytics.retention import RetentionTask
from homepot_analytics.settings import Settings, get_settings

logger = logging.getLogger(__name__)

SERVICE_NAME = "homepot-analytics"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service, configured from ``settings`` (default: the process settings)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = resolve_database_url(settings)
        engine = create_engine(url)
        migrate(engine)
        delivery = create_delivery(
            url,
            settings.data_dir / "spool" / SERVICE_NAME,
            spool_max_bytes=settings.spool_max_mb * 1024 * 1024,
            auto_migrate=False,
        )
        # Events received over HTTP (frontend activity) take the same OpenTelemetry log path
        # and exporter as everything else.
        logger_provider = LoggerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        log_processor = BatchLogRecordProcessor(
            PostgresLogExporter(delivery, privacy_from_settings(settings)),
            max_queue_size=settings.export_queue_size,
            max_export_batch_size=min(settings.export_batch_size, settings.export_queue_size),
            schedule_delay_millis=settings.export_delay_ms,
        )
        logger_provider.add_log_record_processor(log_processor)
        app.state.settings = settings
        app.state.engine = engine
        app.state.delivery = delivery
        app.state.logger_provider = logger_provider
        app.state.event_logger = logger_provider.get_logger(INSTRUMENTATION_NAME)
        # Retention and the coming months' partitions, once a day.
        app.state.retention = RetentionTask(engine, settings)
        app.state.retention.start()
        try:
            yield
        finally:
            await app.state.retention.stop()
            logger_provider.shutdown()
            delivery.shutdown()
            engine.dispose()

    app = FastAPI(
        title="HOMEPOT analytics",
        version="0.1.0",
        description="Query the five analytics tables, receive OTLP from a collector, take frontend activity.",
        lifespan=lifespan,
    )

    if settings.cors_origins:
        # Browsers on these origins may post activity (with an Authorization header) and query.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness: the service is up (no authentication)."""
        return {"status": "ok"}

    from query_api import intake, metrics, otlp, routes

    app.include_router(routes.router)
    app.include_router(otlp.router)
    app.include_router(intake.router)
    app.include_router(metrics.router)
    return app
