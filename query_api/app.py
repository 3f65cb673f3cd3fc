"""The analytics service ``homepot-analytics serve`` runs: query API, OTLP sink, activity intake."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.resources import Resource
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from exporter.conventions import INSTRUMENTATION_NAME
from exporter.migrations import migrate
from exporter.pipeline import build_in_process_pipeline
from homepot_foundation.database import resolve_database_url
from homepot_foundation.settings import Settings, get_settings
from query_api import dashboard, frontend_errors, intake, metrics, otlp, routes
from query_api.cors import FrontendCors
from query_api.databases import Databases
from query_api.retention_schedule import RetentionTask, RollupRefreshTask
from query_api.validation import reject_nul_in_query

logger = logging.getLogger(__name__)

SERVICE_NAME = "homepot-analytics"


def _try_migrate(engine: Engine) -> bool:
    """Create/upgrade the tables; a database that is down must not keep the sink from starting
    (it spools what it receives), so the failure is logged and left to the writer."""
    try:
        migrate(engine)
    except SQLAlchemyError as error:
        logger.warning("database unavailable at start (%s); tables will be checked on first write", error)
        return False
    return True


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service, configured from ``settings`` (default: the process settings)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = resolve_database_url(settings)
        # Writes (schema, sink, intake, resolve, purge) on the primary; reads maybe on a replica.
        databases = Databases.connect(settings, url)
        engine = databases.primary
        migrated = _try_migrate(engine)
        # Database away at start: the writer creates the tables once it connects.
        pipeline = build_in_process_pipeline(
            settings, SERVICE_NAME, database_url=url, auto_migrate=not migrated
        )
        # Events received over HTTP (frontend activity) take the same OpenTelemetry log path
        # and exporter as everything else.
        logger_provider = LoggerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        logger_provider.add_log_record_processor(pipeline.log_processor())
        app.state.settings = settings
        app.state.databases = databases
        app.state.pipeline = pipeline
        app.state.delivery = pipeline.delivery
        app.state.logger_provider = logger_provider
        app.state.event_logger = logger_provider.get_logger(INSTRUMENTATION_NAME)
        # Retention and the coming months' partitions, once a day.
        app.state.retention = RetentionTask(engine, settings)
        app.state.retention.start()
        # The rollup buckets new rows made stale, rebuilt every few seconds.
        app.state.rollup_refresh = RollupRefreshTask(engine, settings)
        app.state.rollup_refresh.start()
        try:
            yield
        finally:
            await app.state.rollup_refresh.stop()
            await app.state.retention.stop()
            logger_provider.shutdown()
            pipeline.shutdown()
            databases.dispose()

    app = FastAPI(
        title="HOMEPOT analytics",
        version="0.1.0",
        description="Query the five analytics tables, receive OTLP from a collector, take frontend activity.",
        lifespan=lifespan,
        dependencies=[Depends(reject_nul_in_query)],
    )

    if settings.cors_origins:
        # Browsers on these origins may post activity (with their session cookie) and query.
        app.add_middleware(
            FrontendCors,
            origins=settings.cors_origins,
            credentialed_paths=(intake.BATCH_PATH, intake.LEGACY_PATH, frontend_errors.ERROR_PATH),
        )

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness: the service is up (no authentication)."""
        return {"status": "ok"}

    app.include_router(routes.router)
    app.include_router(otlp.router)
    app.include_router(intake.router)
    app.include_router(frontend_errors.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)
    return app
