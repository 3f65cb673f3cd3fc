"""Stock FastAPIInstrumentor spans: what they leave empty, and StockSpanDetails filling it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import jwt
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from exporter.pipeline import build_pipeline
from homepot_foundation.settings import Settings
from instrumentation import StockSpanDetails
from tests.conftest import fetch_rows

TOKEN = jwt.encode({"sub": "user-7"}, "the-app-own-secret-0123456789abcdef", "HS256")


def stock_app(db_url: str, tmp_path: Path, with_details: bool) -> tuple[FastAPI, TracerProvider]:
    app = FastAPI()

    @app.post("/items")
    def create(item: dict[str, str]) -> dict[str, str]:
        return {"created": item["name"]}

    @app.get("/items/{item_id}")
    def read(item_id: str) -> dict[str, str]:
        raise HTTPException(404, f"Item {item_id} not found")

    settings = Settings(database_url=db_url, data_dir=tmp_path / "data", export_delay_ms=50)
    provider = TracerProvider(resource=Resource.create({"service.name": "stock-app"}))
    provider.add_span_processor(build_pipeline(settings, "stock-app").span_processor())
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, exclude_spans=["receive", "send"])
    if with_details:
        app.add_middleware(StockSpanDetails)
    return app, provider


def drive(app: FastAPI, provider: TracerProvider) -> None:
    try:
        with TestClient(app) as client:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            assert client.post("/items", json={"name": "sensor"}, headers=headers).status_code == 200
            assert client.get("/items/x9", headers=headers).status_code == 404
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        provider.shutdown()


@pytest.mark.parametrize("with_details", [True, False])
def test_stock_spans_with_and_without_the_details_middleware(
    db_url: str, tmp_path: Path, with_details: bool
) -> None:
    app, provider = stock_app(db_url, tmp_path, with_details)
    drive(app, provider)
    rows = {row["method"]: row for row in fetch_rows(db_url, "api_request_logs")}
    created, missing = rows["POST"], rows["GET"]
    assert (created["route"], missing["route"]) == ("/items", "/items/{item_id}")
    if with_details:
        assert created["user_id"] is not None and created["user_id"].startswith("u_")
        assert created["request_size_bytes"] == len(b'{"name":"sensor"}')
        assert created["response_size_bytes"] == len(b'{"created":"sensor"}')
        assert missing["error_message"] == "Item x9 not found"
    else:  # what stock instrumentation alone stores
        assert created["user_id"] is None and created["request_size_bytes"] is None
        assert missing["error_message"] == "Not Found"


@pytest.mark.parametrize("order", ["stock-first", "stock-after", "asgi-wrapper"])
def test_setup_telemetry_beside_stock_instrumentation_makes_one_span_and_one_row(
    db_url: str, tmp_path: Path, order: str
) -> None:
    """FastAPIInstrumentor applied before setup_telemetry (its span is kept, ours steps aside),
    after it (0.66 then skips the app itself, and says so), or the stock ASGI middleware
    wrapped around the whole app (ours sees its span current and steps aside)."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from instrumentation import setup_telemetry

    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    settings = Settings(database_url=db_url, data_dir=tmp_path / "data", export_delay_ms=50)
    provider = TracerProvider(resource=Resource.create({"service.name": "both"}))
    seen = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(seen))
    if order == "stock-first":
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, exclude_spans=["receive", "send"])
    with patch_global_provider(provider):
        telemetry = setup_telemetry(app, service_name="both", settings=settings)
    if order == "stock-after":
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, exclude_spans=["receive", "send"])
    served: Any = app
    if order == "asgi-wrapper":
        served = OpenTelemetryMiddleware(app, tracer_provider=provider, exclude_spans=["receive", "send"])
    warnings = []
    handler = _ListHandler(warnings)
    logging.getLogger("instrumentation.middleware").addHandler(handler)
    logging.getLogger("instrumentation.setup").addHandler(handler)
    try:
        with TestClient(served) as client:
            for _ in range(3):
                assert client.get("/ping", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    finally:
        logging.getLogger("instrumentation.middleware").removeHandler(handler)
        logging.getLogger("instrumentation.setup").removeHandler(handler)
        FastAPIInstrumentor.uninstrument_app(app)
        telemetry.shutdown()
    servers = [span for span in seen.get_finished_spans() if span.kind is SpanKind.SERVER]
    assert len(servers) == 3, [span.name for span in servers]
    rows = fetch_rows(db_url, "api_request_logs")
    assert len(rows) == 3
    # The stock span is the request's, and carries what ours would have: user, sizes, route.
    assert all(row["user_id"] and row["response_size_bytes"] == len(b'{"pong":"yes"}') for row in rows)
    if order != "stock-after":  # the case that would have made two spans says what it did
        assert any("one span, one api_request_logs row" in line for line in warnings)


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def patch_global_provider(provider: TracerProvider) -> Iterator[None]:
    """The app's own provider as the global one while setup_telemetry looks (it joins it)."""
    from opentelemetry import trace

    with mock.patch.object(trace, "get_tracer_provider", return_value=provider):
        yield
