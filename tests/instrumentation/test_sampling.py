"""Sampling decides what a collector gets, never which rows are stored: a not-sampled caller,
a ratio sampler and parent-based samplers all keep every request's row and every job's outcome."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from homepot_foundation.settings import Settings
from instrumentation import Telemetry, job_span, setup_telemetry
from tests.conftest import fetch_rows

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
NOT_SAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-00"
SAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def build(db_url: str, tmp_path: Path) -> tuple[FastAPI, Telemetry, InMemorySpanExporter]:
    app = FastAPI()

    @app.post("/jobs/{job_id}")
    def run(job_id: str) -> dict[str, str]:
        with job_span(job_id, "restart", device_id="dev-1"):
            pass
        return {"job": job_id}

    settings = Settings(database_url=db_url, data_dir=tmp_path / "data", export_delay_ms=50)
    telemetry = setup_telemetry(app, service_name="sampling", settings=settings)
    # What a collector would get: an exporter behind the SDK's own (sampled-only) processing.
    collector = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(collector))
    return app, telemetry, collector


@pytest.fixture()
def sampler_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    yield monkeypatch


def run_requests(app: FastAPI, telemetry: Telemetry, count: int, traceparent: str | None = None) -> None:
    headers = {"traceparent": traceparent} if traceparent else {}
    try:
        with TestClient(app) as client:
            for n in range(count):
                assert client.post(f"/jobs/j{n}", headers=headers).status_code == 200
    finally:
        telemetry.shutdown()


def collected_servers(collector: InMemorySpanExporter) -> int:
    return sum(1 for span in collector.get_finished_spans() if span.kind is SpanKind.SERVER)


def test_a_not_sampled_caller_still_gets_its_rows(db_url: str, tmp_path: Path, sampler_env: None) -> None:
    app, telemetry, collector = build(db_url, tmp_path)
    run_requests(app, telemetry, 3, NOT_SAMPLED)
    requests = fetch_rows(db_url, "api_request_logs")
    assert len(requests) == 3 and {row["trace_id"] for row in requests} == {TRACE_ID}
    assert len(fetch_rows(db_url, "job_outcomes")) == 3
    assert collected_servers(collector) == 0  # the caller's decision holds for the collector


def test_a_ratio_sampler_samples_the_collector_not_the_tables(
    db_url: str, tmp_path: Path, sampler_env: pytest.MonkeyPatch
) -> None:
    sampler_env.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    sampler_env.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    app, telemetry, collector = build(db_url, tmp_path)
    run_requests(app, telemetry, 40)
    assert len(fetch_rows(db_url, "api_request_logs")) == 40
    assert len(fetch_rows(db_url, "job_outcomes")) == 40
    assert collected_servers(collector) < 40  # ~4 expected; all 40 at 0.1 is beyond chance


@pytest.mark.parametrize(("traceparent", "collected"), [(SAMPLED, 2), (NOT_SAMPLED, 0)])
def test_parent_based_samplers_follow_the_parent_for_the_collector_only(
    db_url: str, tmp_path: Path, sampler_env: pytest.MonkeyPatch, traceparent: str, collected: int
) -> None:
    sampler_env.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    sampler_env.setenv("OTEL_TRACES_SAMPLER_ARG", "0.0")
    app, telemetry, collector = build(db_url, tmp_path)
    run_requests(app, telemetry, 2, traceparent)
    assert len(fetch_rows(db_url, "api_request_logs")) == 2
    assert len(fetch_rows(db_url, "job_outcomes")) == 2
    assert collected_servers(collector) == collected


def test_always_off_records_every_row_and_sends_nothing(
    db_url: str, tmp_path: Path, sampler_env: pytest.MonkeyPatch
) -> None:
    sampler_env.setenv("OTEL_TRACES_SAMPLER", "always_off")
    app, telemetry, collector = build(db_url, tmp_path)
    run_requests(app, telemetry, 3)
    assert len(fetch_rows(db_url, "api_request_logs")) == 3
    assert len(fetch_rows(db_url, "job_outcomes")) == 3
    assert collector.get_finished_spans() == ()


def test_an_apps_own_provider_with_a_dropping_sampler_still_gives_every_row(
    db_url: str, tmp_path: Path, sampler_env: None
) -> None:
    """setup_telemetry joins the app's own provider (its sampler drops everything): the app's
    exporter still gets nothing, the tables get every request and job."""
    from unittest import mock

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    own = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    collector = InMemorySpanExporter()
    own.add_span_processor(SimpleSpanProcessor(collector))
    app = FastAPI()

    @app.post("/jobs/{job_id}")
    def run(job_id: str) -> dict[str, str]:
        with job_span(job_id, "restart", device_id="dev-1"):
            pass
        return {"job": job_id}

    settings = Settings(database_url=db_url, data_dir=tmp_path / "data", export_delay_ms=50)
    with mock.patch.object(trace, "get_tracer_provider", return_value=own):
        telemetry = setup_telemetry(app, service_name="sampling", settings=settings)
    assert telemetry.tracer_provider is own
    run_requests(app, telemetry, 3)  # root spans: the app's sampler drops them all
    assert len(fetch_rows(db_url, "api_request_logs")) == 3
    assert len(fetch_rows(db_url, "job_outcomes")) == 3
    assert collected_servers(collector) == 0
