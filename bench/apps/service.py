"""The loaded service: one small FastAPI app, instrumented according to ``BENCH_VARIANT``.

    BENCH_VARIANT=plain|otel_null|instrumented|commit_per_request
    BENCH_DATABASE_URL=postgresql://...   (the throwaway benchmark database)
    BENCH_DATA_DIR=/tmp/...               (spool of the instrumented variant)
    BENCH_SERVED_FILE=/tmp/.../served     (where the request count is written at shutdown)
    uvicorn --factory bench.apps.service:create_app --workers 1

Endpoints, the same in every variant: ``/trivial`` answers at once; ``/db`` reads one row of a
small table through a SQLAlchemy connection pool from a threadpool endpoint, the usual shape
of a FastAPI + SQLAlchemy service. Every variant is wrapped in the same request counter, so
the completeness check compares stored rows with requests the app really answered.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from sqlalchemy import Engine, MetaData, insert, text

from exporter.schema import api_request_logs
from homepot_foundation.database import create_engine

# (d) writes its rows here: same columns and indexes as api_request_logs (see bench/database.py),
# so (c)'s completeness count is not mixed with (d)'s rows while both servers are up.
commit_log = api_request_logs.to_metadata(MetaData(), name="bench_commit_log")

BENCH_PSEUDONYM_KEY = "homepot-bench-pseudonym-key"
# service.name of the variants that store rows: the completeness check counts each one's own.
SERVICE_NAMES = {"instrumented": "bench-instrumented", "instrumented_threads": "bench-instrumented-threads"}
# instrumented_threads: ours as it was before the export worker (HOMEPOT_ANALYTICS_EXPORT_WORKER=
# thread, SDK spans, mapping and COPY in the service's own threads), beside it in the same run.
VARIANTS = ("plain", "otel_null", "instrumented", "instrumented_threads", "commit_per_request")
# Diagnostic variant (bench/asgi_cost.py): our instrumentation with the stock null exporter,
# which separates our request-path cost from the exporter's.
DIAGNOSTIC_VARIANTS = ("instrumented_null_export",)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


def _endpoints(app: FastAPI, engine: Engine) -> None:
    query = text("SELECT id, name, state FROM bench_devices WHERE id = :id")

    @app.get("/trivial")
    async def trivial() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/db")
    def device() -> dict[str, Any]:
        with engine.connect() as conn:
            row = conn.execute(query, {"id": random.randint(1, 1000)}).one()
        return {"id": row.id, "name": row.name, "state": row.state}


def _null_processor() -> Any:
    """A BatchSpanProcessor configured as ours (queue, batch, delay) whose exporter does nothing."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from homepot_foundation.settings import Settings

    class NullExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    settings = Settings()
    return BatchSpanProcessor(
        NullExporter(),
        max_queue_size=settings.export_queue_size,
        max_export_batch_size=settings.export_batch_size,
        schedule_delay_millis=settings.export_delay_ms,
    )


def _otel_null(app: FastAPI) -> None:
    """Stock instrumentation, the floor of any OpenTelemetry-based design: spans are made,
    batched exactly as ours are (same queue, batch and delay), and thrown away."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(_null_processor())
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, exclude_spans=["receive", "send"])


def _settings(database_url: str, data_dir: Path) -> Any:
    """Our settings for the benchmark: defaults, with a fixed pseudonym key (no key file)."""
    from pydantic import SecretStr

    from homepot_foundation.settings import Settings

    return Settings(
        database_url=database_url, data_dir=data_dir, pseudonym_key=SecretStr(BENCH_PSEUDONYM_KEY)
    )


def _instrumented(
    app: FastAPI, database_url: str, data_dir: Path, *, null_export: bool = False, threads: bool = False
) -> None:
    """Ours, as a user sets it up: one call, the exporter writing to PostgreSQL in-process."""
    from instrumentation import setup_telemetry

    settings = _settings(database_url, data_dir)
    if null_export:
        telemetry = setup_telemetry(app, "bench-null-export", settings=settings, export=())
        telemetry.tracer_provider.add_span_processor(_null_processor())
    elif threads:
        settings = settings.model_copy(update={"export_worker": "thread"})
        setup_telemetry(app, SERVICE_NAMES["instrumented_threads"], settings=settings)
    else:
        setup_telemetry(app, SERVICE_NAMES["instrumented"], settings=settings)


def _commit_per_request(app: FastAPI, engine: Engine) -> None:
    """What the spec's current system does: a BaseHTTPMiddleware that inserts and commits one
    row through a synchronous session before the response returns."""

    @app.middleware("http")
    async def log_request(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = datetime.now(UTC)
        response = await call_next(request)
        elapsed_ms = (datetime.now(UTC) - started).total_seconds() * 1000
        with engine.begin() as conn:
            conn.execute(
                insert(commit_log).values(
                    timestamp=started,
                    endpoint=request.url.path,
                    method=request.method,
                    status_code=response.status_code,
                    response_time_ms=elapsed_ms,
                    ip_address=request.client.host if request.client else None,
                    user_agent=request.headers.get("user-agent"),
                    request_size_bytes=int(request.headers.get("content-length") or 0),
                    response_size_bytes=int(response.headers.get("content-length") or 0),
                    event_id=uuid.uuid4(),
                )
            )
        return response


class ServedCounter:
    """Counts responses the app started; writes the count when the server shuts down."""

    def __init__(self, app: ASGIApp, served_file: Path | None) -> None:
        self.app = app
        self.served_file = served_file
        self.served = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":

            async def counting_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    self.served += 1
                await send(message)

            await self.app(scope, receive, counting_send)
            return
        if scope["type"] == "lifespan" and self.served_file is not None:

            async def lifespan_send(message: Message) -> None:
                if message["type"] == "lifespan.shutdown.complete":
                    # The app's shutdown (our flush) has run: no request can follow.
                    self.served_file.write_text(str(self.served))  # type: ignore[union-attr]
                await send(message)

            await self.app(scope, receive, lifespan_send)
            return
        await self.app(scope, receive, send)


def create_app() -> ServedCounter:
    variant = os.environ.get("BENCH_VARIANT", "plain")
    if variant not in VARIANTS + DIAGNOSTIC_VARIANTS:
        raise ValueError(f"BENCH_VARIANT must be one of {VARIANTS}, not {variant!r}")
    database_url = os.environ["BENCH_DATABASE_URL"]
    engine = create_engine(database_url, pool_size=20, max_overflow=0, pool_pre_ping=False)
    app = FastAPI()
    _endpoints(app, engine)
    if variant == "otel_null":
        _otel_null(app)
    elif variant == "instrumented":
        _instrumented(app, database_url, Path(os.environ.get("BENCH_DATA_DIR", "/tmp/homepot-bench")))
    elif variant == "instrumented_threads":
        _instrumented(
            app, database_url, Path(os.environ.get("BENCH_DATA_DIR", "/tmp/homepot-bench")), threads=True
        )
    elif variant == "instrumented_null_export":
        _instrumented(app, database_url, Path("/nonexistent"), null_export=True)
    elif variant == "commit_per_request":
        _commit_per_request(app, engine)
    served_file = os.environ.get("BENCH_SERVED_FILE")
    return ServedCounter(app, Path(served_file) if served_file else None)
