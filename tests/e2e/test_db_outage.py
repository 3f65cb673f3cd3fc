"""A real PostgreSQL stopped in the middle of a stream of requests, then started again.

The instrumented service runs under uvicorn in its own process against a throwaway embedded
PostgreSQL. While the database is down the service must answer as fast as before and the
exporter must spool; once it is back every request, job, state change and error must be in
its table exactly once.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from homepot_foundation.embedded_db import ensure_embedded_postgres, stop_embedded_postgres
from tests.support.processes import AppProcess

pytestmark = pytest.mark.slow

KINDS = ("ping", "job", "state", "error")


@dataclass
class Sent:
    kind: str
    key: str
    phase: str
    latency_s: float
    status: int | None


@pytest.fixture
def postgres() -> Iterator[tuple[Path, str]]:
    # Not under pytest's tmp root: a pytest process starting meanwhile (another run on the same
    # machine) chmods that root 0700, which voids the ACL that lets the server's account through.
    directory = Path(tempfile.mkdtemp(prefix="homepot-outage-")) / "pg"
    try:
        url = ensure_embedded_postgres(directory)
        yield directory, url
    finally:
        stop_embedded_postgres(directory)
        shutil.rmtree(directory.parent, ignore_errors=True)


class Traffic:
    """Requests of every kind, one after another, until stopped; records each outcome."""

    def __init__(self, base_url: str) -> None:
        self.phase = "before"
        self.sent: list[Sent] = []
        self._client = httpx.Client(base_url=base_url, timeout=10)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._client.close()

    def count(self, phase: str) -> int:
        return sum(s.phase == phase for s in list(self.sent))

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set() and n < 20_000:
            kind = KINDS[n % len(KINDS)]
            key = f"{n}"
            path = {
                "ping": f"/ping/{n}",
                "job": f"/jobs/job-{n}",
                "state": f"/devices/dev-{n}/state",
                "error": f"/errors/{n}",
            }[kind]
            started = time.perf_counter()
            try:
                status: int | None = self._client.request(
                    "GET" if kind == "ping" else "POST", path
                ).status_code
            except httpx.HTTPError:
                status = None
            self.sent.append(Sent(kind, key, self.phase, time.perf_counter() - started, status))
            n += 1
            time.sleep(0.004)


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def scalar(conn: psycopg.Connection, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def table_counts(url: str) -> dict[str, int]:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return {
                table: scalar(conn, f"SELECT count(*) FROM {table}")
                for table in ("api_request_logs", "job_outcomes", "device_state_history", "error_logs")
            }
    except psycopg.Error:
        return {}


def metric(text: str, name: str, table: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("table") == table:
                return sample.value
    raise AssertionError(f"{name}{{table={table}}} not in /metrics")


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def test_rows_equal_requests_after_a_database_outage(postgres: tuple[Path, str], tmp_path: Path) -> None:
    pg_dir, url = postgres
    data_dir = tmp_path / "data"
    env = {
        "HOMEPOT_ANALYTICS_DATABASE_URL": url,
        "HOMEPOT_ANALYTICS_DATA_DIR": str(data_dir),
        "HOMEPOT_ANALYTICS_EXPORT_DELAY_MS": "100",
        "HOMEPOT_ANALYTICS_SPOOL_RETRY_MAX_S": "0.5",
    }
    app = AppProcess(env, tmp_path / "app.log")
    spool = data_dir / "spool" / "reliability-app"
    try:
        with Traffic(app.base_url) as traffic:
            # Phases end on what happened, not on the clock: a loaded machine only takes longer.
            wait_until(lambda: traffic.count("before") >= 60)
            traffic.phase = "stopping"
            assert stop_embedded_postgres(pg_dir), "the throwaway PostgreSQL was not running"
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(url, connect_timeout=2).close()
            traffic.phase = "outage"
            outage_started = time.monotonic()
            wait_until(
                lambda: (
                    traffic.count("outage") >= 120
                    and time.monotonic() - outage_started > 2
                    and any(spool.glob("*.batch"))
                )
            )
            spooled_during_outage = len(list(spool.glob("*.batch")))
            traffic.phase = "starting"
            ensure_embedded_postgres(pg_dir)
            traffic.phase = "after"
            wait_until(lambda: traffic.count("after") >= 60)

        sent = traffic.sent
        expected = {
            "api_request_logs": len(sent),
            "job_outcomes": sum(s.kind == "job" for s in sent),
            "device_state_history": sum(s.kind == "state" for s in sent),
            "error_logs": sum(s.kind == "error" for s in sent),
        }
        deadline = time.monotonic() + 30
        while table_counts(url) != expected and time.monotonic() < deadline:
            time.sleep(0.25)
        # The export worker's counters reach the service's /metrics with its next message (well
        # within a second when idle): the replay is counted there shortly after the rows land.
        deadline = time.monotonic() + 10
        metrics_text = httpx.get(f"{app.base_url}/metrics", timeout=5).text
        while (
            metric(metrics_text, "homepot_analytics_rows_replayed_total", "api_request_logs") == 0
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
            metrics_text = httpx.get(f"{app.base_url}/metrics", timeout=5).text
    finally:
        app.stop()

    # The host never noticed: every request answered, at its usual speed.
    assert [s for s in sent if s.status != 200] == []
    before = [s.latency_s for s in sent if s.phase == "before"]
    outage = [s.latency_s for s in sent if s.phase == "outage"]
    assert p95(outage) < max(5 * p95(before), 0.2), (p95(before), p95(outage))
    assert max(outage) < 2.0

    # The outage path really ran: batches were spooled, then replayed.
    assert spooled_during_outage > 0, app.log()[-3000:]
    assert metric(metrics_text, "homepot_analytics_rows_spooled_total", "api_request_logs") > 0
    assert metric(metrics_text, "homepot_analytics_rows_replayed_total", "api_request_logs") > 0
    assert metric(metrics_text, "homepot_analytics_rows_dropped_total", "api_request_logs") == 0
    assert list(spool.glob("*.batch")) == []

    # Every request, job, state change and error exactly once.
    assert table_counts(url) == expected
    with psycopg.connect(url) as conn:
        endpoints = [r[0] for r in conn.execute("SELECT endpoint FROM api_request_logs").fetchall()]
        jobs = [r[0] for r in conn.execute("SELECT job_id FROM job_outcomes").fetchall()]
        devices = [r[0] for r in conn.execute("SELECT device_id FROM device_state_history").fetchall()]
        errors = [r[0] for r in conn.execute("SELECT error_message FROM error_logs").fetchall()]
        for table in expected:
            assert scalar(conn, f"SELECT count(DISTINCT event_id) FROM {table}") == expected[table]
    assert len(endpoints) == len(set(endpoints))
    assert sorted(jobs) == sorted(f"job-{s.key}" for s in sent if s.kind == "job")
    assert sorted(devices) == sorted(f"dev-{s.key}" for s in sent if s.kind == "state")
    assert sorted(errors) == sorted(f"failure number {s.key}" for s in sent if s.kind == "error")
