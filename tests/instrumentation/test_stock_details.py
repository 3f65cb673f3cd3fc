"""Stock FastAPIInstrumentor spans: what they leave empty, and StockSpanDetails filling it."""

from __future__ import annotations

from pathlib import Path

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


def test_setup_telemetry_beside_fastapi_instrumentor_stores_each_request_once(
    db_url: str, tmp_path: Path
) -> None:
    from instrumentation import setup_telemetry

    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    settings = Settings(database_url=db_url, data_dir=tmp_path / "data", export_delay_ms=50)
    telemetry = setup_telemetry(app, service_name="both", settings=settings)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=telemetry.tracer_provider)
    try:
        with TestClient(app) as client:
            for _ in range(3):
                assert client.get("/ping").status_code == 200
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        telemetry.shutdown()
    # Two SERVER spans per request (ours outermost, the stock one inside it): one row each request.
    assert len(fetch_rows(db_url, "api_request_logs")) == 3
