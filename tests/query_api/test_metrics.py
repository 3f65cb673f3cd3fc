"""GET /metrics: the exporter's counters per table and the spool size, in Prometheus text."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.schema import TABLES
from exporter.spool import Spool, spool_usage
from exporter.stats import STATS
from homepot_foundation.settings import Settings
from instrumentation import setup_telemetry
from query_api import metrics
from tests.conftest import fetch_rows
from tests.support.telemetry import request_rows

COUNTERS = (
    "homepot_analytics_rows_written_total",
    "homepot_analytics_rows_spooled_total",
    "homepot_analytics_rows_replayed_total",
    "homepot_analytics_rows_rejected_total",
    "homepot_analytics_rows_dropped_total",
    "homepot_analytics_export_failures_total",
)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_service_metrics_cover_every_table_without_credentials(settings: Settings) -> None:
    with TestClient(metrics_only_app()) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse(response.text)
    for name in COUNTERS:
        for table in TABLES:
            labels = {"table": table, **({"reason": "queue_full"} if "dropped" in name else {})}
            assert (name, tuple(sorted(labels.items()))) in samples, (name, table)
    for gauge in ("homepot_analytics_spool_bytes", "homepot_analytics_spool_batches"):
        assert (gauge, ()) in samples


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    with TestClient(metrics_only_app()) as client:
        response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
    assert 'homepot_analytics_rows_written_total{table="api_request_logs"}' in response.text


def metrics_only_app() -> FastAPI:
    app = FastAPI()
    app.include_router(metrics.router)
    return app


def test_counters_follow_what_the_service_wrote(settings: Settings) -> None:
    from query_api.app import create_app

    with TestClient(create_app(settings)) as client:
        before = parse(client.get("/metrics").text)
        client.app.state.delivery.deliver({"api_request_logs": request_rows(7)})  # type: ignore[attr-defined]
        after = parse(client.get("/metrics").text)
    name = "homepot_analytics_rows_written_total"
    assert value(after, name, table="api_request_logs") - value(before, name, table="api_request_logs") == 7
    assert value(after, name, table="job_outcomes") == value(before, name, table="job_outcomes")


def test_spool_size_and_drops_by_reason_are_shown(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put({"api_request_logs": request_rows(5)})
    STATS.add("dropped", "user_activities", 3, reason="spool_full")
    with TestClient(metrics_only_app()) as client:
        samples = parse(client.get("/metrics").text)
    usage = spool_usage().values()
    assert (
        value(samples, "homepot_analytics_spool_bytes") == sum(u[0] for u in usage) >= spool.size_bytes() > 0
    )
    assert value(samples, "homepot_analytics_spool_batches") == sum(u[1] for u in usage) >= 1
    assert value(samples, "homepot_analytics_spool_limit_bytes") >= spool.max_bytes
    dropped = "homepot_analytics_rows_dropped_total"
    assert value(samples, dropped, table="user_activities", reason="spool_full") == STATS.get(
        "dropped", "user_activities", "spool_full"
    )
    assert value(samples, dropped, table="user_activities", reason="spool_full") >= 3


def test_an_instrumented_service_mounts_the_same_router(settings: Settings, db_url: str) -> None:
    app = FastAPI()
    app.include_router(metrics.router)

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    telemetry = setup_telemetry(app, service_name="metrics-test", settings=settings)
    try:
        with TestClient(app) as client:
            assert client.get("/hello").status_code == 200
            text = client.get("/metrics").text
            telemetry.force_flush()
            samples = parse(client.get("/metrics").text)
    finally:
        telemetry.shutdown()
    assert "homepot_analytics_rows_written_total" in text
    assert (
        value(samples, "homepot_analytics_export_queue_capacity", signal="span") >= settings.export_queue_size
    )
    # /metrics itself is not recorded (excluded like /health): only the one real request is.
    assert [row["endpoint"] for row in fetch_rows(db_url, "api_request_logs")] == ["/hello"]


def test_metrics_survive_a_closed_client_connection(settings: Settings) -> None:
    # A scrape is cheap and stateless: many in a row give consistent text.
    transport = httpx.ASGITransport(app=metrics_only_app())
    import asyncio

    async def scrape_many() -> list[int]:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [(await client.get("/metrics")).status_code for _ in range(20)]

    assert asyncio.run(scrape_many()) == [200] * 20
