"""The main job: `homepot-analytics demo` fills all five tables and says so; `demo --serve` then
serves the dashboard on that data behind a sign-in link printed for it."""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from homepot_analytics.cli import app
from homepot_analytics.demo import command_path, next_steps, run_demo
from homepot_foundation.settings import Settings
from tests.conftest import fetch_rows
from tests.support.browser import wait_for
from tests.support.processes import ROOT, LoggedProcess, free_port


def test_demo_fills_all_five_tables_and_prints_a_summary(
    settings: Settings, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    counts = run_demo(requests=120, settings=settings)
    assert counts["api_request_logs"] == 120, "every request the demo made is stored"
    assert all(counts[table] > 0 for table in counts), counts
    statuses = {row["status_code"] for row in fetch_rows(db_url, "api_request_logs")}
    assert {200, 404, 500} <= statuses
    job_statuses = {row["status"] for row in fetch_rows(db_url, "job_outcomes")}
    assert {"success", "failed"} <= job_statuses
    output = capsys.readouterr().out
    for table in counts:
        assert f"{table}: {counts[table]} rows" in output


def test_the_demo_ends_with_commands_that_run_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After `make demo` the command is .venv/bin/homepot-analytics: not on the PATH.
    script = tmp_path / ".venv" / "bin" / "homepot-analytics"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(script.with_name("python")))
    monkeypatch.chdir(tmp_path)
    assert command_path() == ".venv/bin/homepot-analytics"
    printed = next_steps(command_path())
    assert ".venv/bin/homepot-analytics demo --serve" in printed
    assert "$(.venv/bin/homepot-analytics token --subject you --role admin)" in printed
    monkeypatch.chdir("/")
    assert command_path() == str(script), "from elsewhere, the whole path"


@pytest.mark.slow
def test_demo_serve_prints_a_sign_in_link_that_opens_the_dashboard_on_the_demo_data(
    db_url: str, tmp_path: Path
) -> None:
    """The command as a newcomer runs it, without a JWT secret configured."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("HOMEPOT_ANALYTICS_")}
    env |= {
        "HOMEPOT_ANALYTICS_DATABASE_URL": db_url,
        "HOMEPOT_ANALYTICS_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable,
        "-m",
        "homepot_analytics",
        "demo",
        "--requests",
        "30",
        "--serve",
        "--port",
        str(port),
    ]
    process = LoggedProcess(command, env, tmp_path / "demo.log")
    try:

        def link() -> str | None:
            found = re.search(r"http://127\.0\.0\.1:\d+/dashboard/#token=[\w.-]+", process.log())
            return found.group(0) if found else None

        url = wait_for(link, "the sign-in link", timeout=120)
        token = url.split("#token=", 1)[1]

        def answered() -> httpx.Response | None:
            try:
                return httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/analytics/requests",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=5,
                )
            except httpx.HTTPError:
                return None

        response = wait_for(answered, "the service", timeout=60)
        assert response.status_code == 200, response.text
        rows = response.json()["data"]
        assert rows and {row["service_name"] for row in rows} == {"homepot-demo"}, "the demo's data"
        page = httpx.get(url.split("#", 1)[0], timeout=5)
        assert page.status_code == 200 and "HOMEPOT analytics" in page.text
        assert "Traceback" not in process.log()
    finally:
        process.stop()


def test_demo_serve_refuses_a_port_in_use_before_running_the_demo() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["demo", "--serve", "--port", str(port)])
    assert result.exit_code == 2
    assert f"127.0.0.1:{port} is in use" in result.output
    assert "Driving demo traffic" not in result.output
