"""An app with its own OpenTelemetry setup: setup_telemetry joins it instead of splitting traces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import fetch_rows

ROOT = Path(__file__).resolve().parents[2]


def test_the_server_span_and_its_children_reach_the_apps_own_exporter(db_url: str, tmp_path: Path) -> None:
    script = Path(__file__).with_name("own_provider_script.py")
    result = subprocess.run(
        [sys.executable, str(script), db_url, str(tmp_path / "data")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    spans = json.loads(result.stdout.strip().splitlines()[-1])
    (server,) = [span for span in spans if span["kind"] == "SERVER"]
    (child,) = [span for span in spans if span["name"] == "child work"]
    assert server["parent"] is None  # the root: Jaeger sees the whole request
    assert child["parent"] == server["span_id"] and child["trace_id"] == server["trace_id"]
    (row,) = fetch_rows(db_url, "api_request_logs")
    assert row["trace_id"] == server["trace_id"]
    assert row["service_name"] == "app-own"  # the app's resource names the service
