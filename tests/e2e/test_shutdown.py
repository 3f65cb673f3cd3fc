"""Shutdown: SIGTERM writes pending telemetry, or spools it for the next start to replay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.processes import ROOT, AppProcess, refused_url

pytestmark = pytest.mark.slow

# Nothing is exported before shutdown unless shutdown does it.
PENDING = {"HOMEPOT_ANALYTICS_EXPORT_DELAY_MS": "600000"}


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        result = {}
        for table in ("api_request_logs", "job_outcomes", "device_state_history", "error_logs"):
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row is not None
            result[table] = row[0]
        return result


def send_mixed_requests(base_url: str, rounds: int) -> dict[str, int]:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for n in range(rounds):
            assert client.get(f"/ping/{n}").status_code == 200
            assert client.post(f"/jobs/job-{n}").status_code == 200
            assert client.post(f"/devices/dev-{n}/state").status_code == 200
            assert client.post(f"/errors/{n}").status_code == 200
    return {
        "api_request_logs": 4 * rounds,
        "job_outcomes": rounds,
        "device_state_history": rounds,
        "error_logs": rounds,
    }


def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {table: a[table] + b[table] for table in a}


def test_spooled_at_shutdown_replayed_at_next_start_and_pending_written_at_sigterm(
    db_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    spool = data_dir / "spool" / "reliability-app"

    # 1. The database is away when the service is stopped: what it recorded is spooled.
    down = {
        **PENDING,
        "HOMEPOT_ANALYTICS_DATABASE_URL": refused_url(),
        "HOMEPOT_ANALYTICS_DATA_DIR": str(data_dir),
    }
    first = AppProcess(down, tmp_path / "first.log")
    try:
        spooled = send_mixed_requests(first.base_url, 10)
        code = first.terminate()
    finally:
        first.stop()
    assert code in (0, -signal.SIGTERM), first.log()
    assert list(spool.glob("*.batch")), first.log()
    assert "stay spooled" in first.log()
    assert sum(counts(db_url).values()) == 0

    # 2. The next start, database back: the spool is replayed before any request arrives.
    up = {**PENDING, "HOMEPOT_ANALYTICS_DATABASE_URL": db_url, "HOMEPOT_ANALYTICS_DATA_DIR": str(data_dir)}
    second = AppProcess(up, tmp_path / "second.log")
    try:
        deadline = time.monotonic() + 20
        while counts(db_url) != spooled and time.monotonic() < deadline:
            time.sleep(0.1)
        assert counts(db_url) == spooled, second.log()
        assert list(spool.glob("*.batch")) == []

        # 3. SIGTERM with telemetry still queued (the export delay is long): it is written.
        pending = send_mixed_requests(second.base_url, 15)
        time.sleep(0.3)
        assert counts(db_url) == spooled, "telemetry must still be pending here"
        code = second.terminate()
    finally:
        second.stop()
    assert code in (0, -signal.SIGTERM), second.log()
    assert counts(db_url) == add(spooled, pending), second.log()


def test_sigterm_flushes_a_process_without_a_server(db_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        **PENDING,
        "HOMEPOT_ANALYTICS_DATABASE_URL": db_url,
        "HOMEPOT_ANALYTICS_DATA_DIR": str(tmp_path),
    }
    log = open(tmp_path / "script.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.sigterm_script", "25"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        assert sum(counts(db_url).values()) == 0
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
    output += (tmp_path / "script.log").read_text()
    # The signal still does what it would have done (the process ends by SIGTERM)...
    assert process.returncode == -signal.SIGTERM, output
    # ...after everything recorded reached the tables.
    assert counts(db_url) == {
        "api_request_logs": 0,
        "job_outcomes": 25,
        "device_state_history": 25,
        "error_logs": 0,
    }, output
