"""Overload: telemetry faster than the database takes it. Memory stays bounded and every
dropped record is counted per table, logged and shown on /metrics; nothing goes silently."""

from __future__ import annotations

import logging
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from exporter import conventions as c
from exporter.delivery import Delivery
from exporter.exporters import PostgresLogExporter, PostgresSpanExporter
from exporter.processor import CountingBatchLogRecordProcessor, CountingBatchSpanProcessor
from exporter.spool import Spool
from exporter.stats import STATS
from exporter.writer import RowWriter
from query_api import metrics
from tests.support.processes import refused_url

RESOURCE = Resource({"service.name": "overload-test"})
TABLES = ("api_request_logs", "device_state_history")


@pytest.fixture
def caplog_exporter(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # The exporter's loggers do not propagate (they must not feed OTel logging): listen directly.
    loggers = [logging.getLogger(name) for name in ("exporter.processor", "exporter.delivery")]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


def counters() -> dict[tuple[str, str, str], int]:
    return {
        (outcome, table, reason): STATS.get(outcome, table, reason or None)
        for outcome in ("written", "spooled", "dropped")
        for table in TABLES
        for reason in ("", "queue_full", "spool_full")
        if outcome == "dropped" or not reason
    }


def delta(before: dict[tuple[str, str, str], int], outcome: str, table: str, reason: str = "") -> int:
    key = (outcome, table, reason)
    return STATS.get(outcome, table, reason or None) - before[key]


class Pipeline:
    """A tracer and an event logger feeding counting processors with small queues."""

    def __init__(self, delivery: Delivery, queue: int = 256) -> None:
        options: dict[str, Any] = {
            "max_queue_size": queue,
            "max_export_batch_size": 64,
            "schedule_delay_millis": 10,
        }
        self.spans = CountingBatchSpanProcessor(PostgresSpanExporter(delivery), **options)
        self.logs = CountingBatchLogRecordProcessor(PostgresLogExporter(delivery), **options)
        self.tracer_provider = TracerProvider(resource=RESOURCE)
        self.tracer_provider.add_span_processor(self.spans)
        self.logger_provider = LoggerProvider(resource=RESOURCE)
        self.logger_provider.add_log_record_processor(self.logs)
        self.tracer = self.tracer_provider.get_tracer("overload")
        self.events = self.logger_provider.get_logger("overload")
        self.max_queued = 0

    def request(self, n: int) -> None:
        attributes: dict[str, Any] = {"http.method": "GET", "http.target": f"/r/{n}", "http.status_code": 200}
        self.tracer.start_span(f"GET /r/{n}", kind=SpanKind.SERVER, attributes=attributes).end()
        self._watch()

    def state_change(self, n: int) -> None:
        self.events.emit(
            event_name=c.DEVICE_STATE_EVENT,
            severity_number=SeverityNumber.INFO,
            attributes={c.DEVICE_ID: f"dev-{n}", c.DEVICE_NEW_STATE: "online"},
        )
        self._watch()

    def _watch(self) -> None:
        queued = max(self.spans.drop_counter.queue_length(), self.logs.drop_counter.queue_length())
        self.max_queued = max(self.max_queued, queued)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


def scrape() -> dict[tuple[str, str, str], float]:
    app = FastAPI()
    app.include_router(metrics.router)
    with TestClient(app) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, sample.labels.get("table", ""), sample.labels.get("reason", ""))] = (
                sample.value
            )
    return samples


def test_slow_database_bounded_queue_drops_counted_per_table(
    db_url: str, tmp_path: Path, caplog_exporter: pytest.LogCaptureFixture
) -> None:
    before = counters()
    delivery = Delivery(RowWriter(db_url), Spool(tmp_path / "spool"))
    pipeline = Pipeline(delivery)
    # A slow database: the exporter's COPY waits on a lock while telemetry keeps coming.
    blocker = psycopg.connect(db_url)
    blocker.execute("LOCK TABLE api_request_logs, device_state_history IN ACCESS EXCLUSIVE MODE")
    try:
        tracemalloc.start()
        for n in range(1000):
            pipeline.request(n)
            pipeline.state_change(n)
        warm, _ = tracemalloc.get_traced_memory()
        for n in range(1000, 5000):
            pipeline.request(n)
            pipeline.state_change(n)
        grown = tracemalloc.get_traced_memory()[0] - warm
        tracemalloc.stop()
    finally:
        blocker.rollback()
        blocker.close()
    pipeline.shutdown()
    delivery.shutdown()

    assert pipeline.max_queued <= 256
    assert grown < 1_000_000, f"memory grew by {grown} bytes for 8000 more records"
    for table in TABLES:
        dropped = delta(before, "dropped", table, "queue_full")
        written = delta(before, "written", table)
        assert dropped > 3000, (table, dropped)
        assert written + dropped == 5000, (table, written, dropped)  # every record accounted for
    with psycopg.connect(db_url) as conn:
        for table in TABLES:
            stored = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert stored is not None and stored[0] == delta(before, "written", table)
    lines = [r.getMessage() for r in caplog_exporter.records if "(queue_full)" in r.getMessage()]
    assert any("api_request_logs=" in line for line in lines), lines
    assert any("device_state_history=" in line for line in lines), lines
    shown = scrape()
    for table in TABLES:
        value = shown[("homepot_analytics_rows_dropped_total", table, "queue_full")]
        assert value == STATS.get("dropped", table, "queue_full") > 0


def test_database_away_and_spool_full_drops_counted_per_table(
    tmp_path: Path, caplog_exporter: pytest.LogCaptureFixture
) -> None:
    before = counters()
    spool = Spool(tmp_path / "spool", max_bytes=64 * 1024)
    url = refused_url()
    delivery = Delivery(RowWriter(url, connect_timeout=2), spool, max_backoff_s=0.2)
    pipeline = Pipeline(delivery)
    for burst in range(20):
        for n in range(burst * 200, burst * 200 + 200):
            pipeline.request(n)
            pipeline.state_change(n)
        time.sleep(0.02)  # let the exporter take batches, so the spool (not only the queue) fills
        assert spool.size_bytes() <= spool.max_bytes
    shown_while_down = scrape()
    pipeline.shutdown()
    delivery.shutdown(timeout_s=1)

    assert pipeline.max_queued <= 256
    assert spool.size_bytes() <= spool.max_bytes
    assert shown_while_down[("homepot_analytics_spool_bytes", "", "")] > 0
    assert shown_while_down[("homepot_analytics_spool_limit_bytes", "", "")] >= spool.max_bytes
    for table in TABLES:
        spooled = delta(before, "spooled", table)
        spool_full = delta(before, "dropped", table, "spool_full")
        queue_full = delta(before, "dropped", table, "queue_full")
        assert spooled > 0 and spool_full > 0, (table, spooled, spool_full)
        assert spooled + spool_full + queue_full == 4000, (table, spooled, spool_full, queue_full)
    lines = [r.getMessage() for r in caplog_exporter.records if "(spool_full)" in r.getMessage()]
    assert lines, [r.getMessage() for r in caplog_exporter.records]
    shown = scrape()
    for table in TABLES:
        assert shown[("homepot_analytics_rows_dropped_total", table, "spool_full")] == STATS.get(
            "dropped", table, "spool_full"
        )
        assert shown[("homepot_analytics_rows_spooled_total", table, "")] == STATS.get("spooled", table)
