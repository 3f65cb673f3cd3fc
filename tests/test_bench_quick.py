"""The benchmark's own logic: how figures and targets are derived, the request counter the
completeness check relies on, and that our privacy caches store what the plain policy stores.

Timing is never asserted (CI runs ``bench/run.py --quick`` for that, without failing on time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from bench import report
from bench.apps.service import ServedCounter
from bench.ingest import IngestResult
from bench.load import LoadResult, Measurement, ServerOutcome, WrkRun
from bench.workload import generate
from exporter.mapping import log_record_to_rows, span_to_rows
from exporter.privacy import CachingPrivacy, Privacy


def _outcome(variant: str, rps: float, served: int | None = None) -> ServerOutcome:
    outcome = ServerOutcome(variant, served, 0)
    for round_index, endpoint in ((0, "trivial"), (0, "db"), (1, "trivial"), (1, "db")):
        run = WrkRun(int(rps * 10), 10.0, 0, 0, p50_ms=1.0, p99_ms=5.0, server_cpu_s=rps * 10 * 1e-4)
        outcome.measurements.append(Measurement(variant, round_index, endpoint, run))
    return outcome


def test_figures_and_targets_from_measurements() -> None:
    outcomes = {
        "plain": _outcome("plain", 2000),
        "otel_null": _outcome("otel_null", 1000),
        "instrumented": _outcome("instrumented", 850, served=12_000),
        "commit_per_request": _outcome("commit_per_request", 300),
    }
    figures = report.load_figures(LoadResult(outcomes, rows_stored={"instrumented": 11_990}))
    assert figures["rps_plain"] == 2000 and figures["rps_instrumented_db"] == 850
    # 1e6/1000 - 1e6/2000: half a millisecond more per request than the plain app
    assert figures["added_us_per_request_otel_null"] == 500.0
    assert figures["rows_lost"] == 10 and figures["rows_duplicated"] == 0
    figures["ingest_share_of_ceiling"] = 0.6
    checks = report.targets(figures)
    assert checks["ingest_at_least_half_of_copy_ceiling"] is True
    assert checks["instrumented_at_least_90pct_of_otel_null"] is False  # 0.85
    assert checks["instrumented_at_least_2_5x_commit_per_request"] is True  # 2.83
    assert checks["rows_lost_is_zero"] is False and checks["no_rows_duplicated"] is True
    assert "rows_lost = 10" in report.table(figures)


def test_served_counter_counts_answers_and_writes_them_at_shutdown(tmp_path: Path) -> None:
    app = FastAPI()

    @app.get("/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    served_file = tmp_path / "served"
    counter = ServedCounter(app, served_file)
    with TestClient(counter) as client:
        for _ in range(3):
            assert client.get("/ok").status_code == 200
        assert client.get("/missing").status_code == 404  # answered too
        assert not served_file.exists()
    assert served_file.read_text() == "4"


def test_ingest_figures_feed_the_table_and_the_target() -> None:
    result = IngestResult(100, 101, {"api_request_logs": 101})
    result.ours_rows_per_s += [6000.0, 5000.0, 7000.0]
    result.ceiling_rows_per_s += [10000.0, 12000.0, 11000.0]
    result.map_rows_per_s.append(9000.0)
    result.map_plain_rows_per_s.append(15000.0)
    result.write_rows_per_s.append(20000.0)
    result.write_no_rollups_rows_per_s.append(25000.0)
    figures = report.ingest_figures(result)
    assert figures["ingest_rows_per_s"] == 6000 and figures["copy_ceiling_rows_per_s"] == 11000
    # The median of the rounds' own ratios (0.6, 0.417, 0.636), not a ratio of medians.
    assert figures["ingest_share_of_ceiling"] == 0.6
    assert report.targets(figures)["ingest_at_least_half_of_copy_ceiling"] is True
    printed = report.table(figures)
    for key in ("ingest_map_rows_per_s", "ingest_map_no_privacy_rows_per_s", "ingest_write_rows_per_s"):
        assert f"{figures[key]:,}" in printed, key
    assert "0.600x of ceiling" in printed
    # Against the slower stage of the same round (mapping 9,000 rows/s, writing 20,000): 6000 / 9000.
    assert figures["ingest_share_of_slowest_stage"] == 0.667
    assert "0.667x of its slowest stage" in printed
    checks = report.targets(figures)
    assert checks["ingest_at_least_0_8x_slowest_stage"] is False
    assert checks["ingest_at_least_0_6x_copy_ceiling"] is True
    result.map_rows_per_s[0] = 7000.0  # the pipeline as fast as its slowest stage: 6000 / 7000
    assert report.targets(report.ingest_figures(result))["ingest_at_least_0_8x_slowest_stage"] is True
    assert "0.80x of the writer without rollups" in printed


def test_privacy_caches_store_the_same_rows_on_the_bench_stream() -> None:
    policy = Privacy(pseudonym_key=b"k" * 32, truncate_ips=True, mask_secrets=True)
    cached = CachingPrivacy(pseudonym_key=b"k" * 32, truncate_ips=True, mask_secrets=True)
    stream = generate(300)
    for span in stream.spans:
        assert span_to_rows(span, cached) == span_to_rows(span, policy)
    for record in stream.logs:
        assert log_record_to_rows(record, cached) == log_record_to_rows(record, policy)
    assert cached.user("alice") == policy.user("alice") != "alice"


def test_wrk_summary_line_is_parsed(tmp_path: Path, monkeypatch: Any) -> None:
    import subprocess

    from bench import load

    line = (
        'WRK_JSON {"requests": 1200, "duration_us": 2000000, "errors": 1, "non_2xx": 2, '
        '"p50_us": 1500, "p90_us": 3000, "p99_us": 9000, "mean_us": 1700.0}\n'
    )

    def fake_run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 0, stdout="Running 2s test\n" + line, stderr="")

    monkeypatch.setattr(load, "wrk_path", lambda: "/usr/bin/wrk")
    monkeypatch.setattr(subprocess, "run", fake_run)
    run = load.run_wrk("http://127.0.0.1:1/x", 2, 16)
    assert (run.rps, run.p50_ms, run.p99_ms, run.errors, run.non_2xx) == (600.0, 1.5, 9.0, 1, 2)


def test_the_ingest_stream_carries_what_our_middleware_sets(tmp_path: Path) -> None:
    import jwt
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from homepot_foundation.settings import Settings
    from instrumentation import setup_telemetry

    app = FastAPI()

    @app.get("/api/v1/devices/{device_id}")
    def device(device_id: str) -> dict[str, str]:
        return {"device_id": device_id}

    settings = Settings(data_dir=tmp_path, database_url="postgresql://unused/none")
    telemetry = setup_telemetry(app, service_name="bench-shape", settings=settings, export=[])
    captured = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(captured))
    token = jwt.encode({"sub": "user1"}, "a-secret-of-thirty-two-bytes-or-more!", "HS256")
    with TestClient(app, headers={"authorization": f"Bearer {token}"}) as client:
        client.get("/api/v1/devices/dev_001")
    telemetry.shutdown()
    [real] = captured.get_finished_spans()
    ok_request = next(
        span
        for span in generate(200).spans
        if span.kind is SpanKind.SERVER and (span.attributes or {}).get("http.response.status_code") == 200
    )
    assert set(ok_request.attributes or {}) == set(real.attributes or {})
