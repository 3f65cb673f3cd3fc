"""End to end with a client that is not Python: an Express app instrumented with the official
OpenTelemetry Node SDK (``tests/e2e/node/app.js``) exports OTLP/HTTP, protobuf or JSON, straight to
the analytics service's sink; the rows are then read back from PostgreSQL, field by field.

    node app.js (NodeSDK, http + express instrumentations) --OTLP/HTTP--> sink (uvicorn) --> tables

The Node packages come from ``npm ci --prefix tests/e2e/node`` (``scripts/ensure-system.sh`` runs
it for ``make test``); without node or them the test is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from homepot_foundation.settings import Settings
from query_api.app import create_app
from tests.conftest import fetch_rows
from tests.support.processes import LoggedProcess
from tests.support.servers import serve_in_thread

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NODE is None, reason="node is not on PATH: no Node.js client to run"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules").is_dir(),
        reason="the Node packages are not installed: run `npm ci --prefix tests/e2e/node`",
    ),
]

DEADLINE_S = 20.0
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")
USER_AGENT = "homepot-node-e2e/1.0"
# Node's span clock is performance.timeOrigin + performance.now(): a little leeway around the
# test's own wall clock readings.
CLOCK_SLACK = timedelta(seconds=1)
# Six requests, each a SERVER span of the http instrumentation: one api_request_logs row each.
REQUESTS = 6


class NodeApp(LoggedProcess):
    """``node app.js`` on a free loopback port, its output in ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        # Only the standard OTEL_* variables given here reach the SDK, none of the test run's own.
        clean = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
        assert NODE is not None
        super().__init__([NODE, "app.js"], {**clean, **env}, log_path, cwd=NODE_DIR)
        self._wait_listening()

    def _wait_listening(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while "listening" not in self.log():
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"node exited early ({self.process.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"node did not start within {timeout_s} s:\n{self.log()}")
            time.sleep(0.05)

    def terminate(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, as a deployment does: the app shuts the SDK down (flushing it) and exits."""
        return super().terminate(timeout_s)


class TraceExports:
    """ASGI wrapper of the service noting each ``POST /v1/traces``: its content type and answer."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, int]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/traces":
            await self.app(scope, receive, send)
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode()

        async def noting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.seen.append((content_type, message["status"]))
            await send(message)

        await self.app(scope, receive, noting_send)


@pytest.fixture()
def sink(settings: Settings) -> Iterator[tuple[str, TraceExports]]:
    """The analytics service under uvicorn; no ingest token, so the sink takes OTLP without auth."""
    assert settings.ingest_token is None
    exports = TraceExports(create_app(settings))
    with serve_in_thread(exports, name="node-e2e-sink") as base_url:
        yield base_url, exports


def _node_version() -> tuple[int, ...]:
    assert NODE is not None
    output = subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=10).stdout
    return tuple(int(part) for part in re.findall(r"\d+", output)[:3])


def _wait_for_rows(db_url: str, service_name: str) -> dict[str, list[dict[str, Any]]]:
    """The service's rows once every request and the job are stored (bounded, polling)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = {
            table: [row for row in fetch_rows(db_url, table) if row["service_name"] == service_name]
            for table in ("api_request_logs", "job_outcomes", "error_logs")
        }
        counts = {table: len(rows) for table, rows in found.items()}
        if counts == {"api_request_logs": REQUESTS, "job_outcomes": 1, "error_logs": 1}:
            return found
        assert time.monotonic() < deadline, f"rows after {DEADLINE_S} s: {counts}"
        time.sleep(0.1)


@pytest.mark.parametrize("otlp_format", ["proto", "json"])
def test_an_express_app_with_the_node_sdk_fills_the_tables(
    sink: tuple[str, TraceExports], db_url: str, tmp_path: Path, otlp_format: str
) -> None:
    sink_url, exports = sink
    if _node_version() < (18, 19):
        pytest.skip(f"node {'.'.join(map(str, _node_version()))} is older than the SDK's 18.19")
    service_name = f"node-e2e-{otlp_format}-{uuid.uuid4().hex[:8]}"
    job_id = f"job-node-{otlp_format}-{uuid.uuid4().hex[:6]}"
    env = {
        "OTLP_FORMAT": otlp_format,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{sink_url}/v1/traces",
        "OTEL_SERVICE_NAME": service_name,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        # Traces only: no collector takes metrics or logs on the default localhost:4318 here.
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    before = datetime.now(UTC) - CLOCK_SLACK
    app = NodeApp(env, tmp_path / "node.log")
    try:
        with httpx.Client(base_url=app.base_url, headers={"User-Agent": USER_AGENT}, timeout=10) as client:
            assert client.get("/health").status_code == 200
            assert client.get("/devices/dev_001").json() == {"device_id": "dev_001", "state": "online"}
            assert client.get("/devices/dev_002").status_code == 200
            assert client.get("/devices/missing").status_code == 404
            assert client.get("/crash").status_code == 500
            job = client.post(f"/jobs/{job_id}", params={"device": "dev_002"})
            assert job.status_code == 200 and job.json() == {"job_id": job_id, "status": "success"}
    finally:
        exit_code = app.terminate()
    after = datetime.now(UTC) + CLOCK_SLACK
    assert exit_code == 0, app.log()
    assert "boom from node" in app.log()  # Express's default error handler logs the stack

    found = _wait_for_rows(db_url, service_name)
    # The exporter chosen really spoke its encoding (the JSON one is exporter-trace-otlp-http),
    # and the sink took every export (the Node exporters send chunked bodies, no Content-Length).
    media_type = {"proto": "application/x-protobuf", "json": "application/json"}[otlp_format]
    assert exports.seen and set(exports.seen) == {(media_type, 200)}, exports.seen
    requests = {row["endpoint"]: row for row in found["api_request_logs"]}
    # instrumentation-http 0.223 emits the stable HTTP conventions (http.request.method, url.path,
    # http.response.status_code, client.address, user_agent.original) on its SERVER span, whose
    # http.route is Express's route template, set through the express instrumentation.
    assert {path: (row["method"], row["route"], row["status_code"]) for path, row in requests.items()} == {
        "/health": ("GET", "/health", 200),
        "/devices/dev_001": ("GET", "/devices/:id", 200),
        "/devices/dev_002": ("GET", "/devices/:id", 200),
        "/devices/missing": ("GET", "/devices/:id", 404),
        "/crash": ("GET", "/crash", 500),
        f"/jobs/{job_id}": ("POST", "/jobs/:id", 200),
    }
    for row in requests.values():
        assert row["service_name"] == service_name
        assert HEX32.fullmatch(row["trace_id"]) and row["trace_id"] != "0" * 32
        assert HEX16.fullmatch(row["span_id"])
        assert row["response_time_ms"] > 0
        assert before <= row["timestamp"] <= after
        assert row["user_agent"] == USER_AGENT
        assert row["ip_address"] == "127.0.0.0"  # client.address, stored as its /24 by default
        assert row["user_id"] is None
    assert len({row["trace_id"] for row in requests.values()}) == REQUESTS  # one trace per request
    for path in ("/health", "/devices/dev_001", "/devices/dev_002", f"/jobs/{job_id}"):
        assert requests[path]["error_message"] is None
    # No body detail reaches the span, so the reason phrase stands for the 4xx/5xx text.
    assert requests["/devices/missing"]["error_message"] == "Not Found"

    # The 500: the SERVER span has status ERROR (no description) and no events. The exception
    # (exception.type "Error", exception.message "boom from node", the JS stack) is an event on the
    # express instrumentation's INTERNAL child span "request handler" (express.type
    # request_handler, http.route /crash). It becomes the error row, joined to its request
    # (endpoint, trace), and its text replaces the request row's bare reason phrase.
    crash = requests["/crash"]
    assert crash["error_message"] == "Error: boom from node"
    (error,) = found["error_logs"]
    assert (error["error_code"], error["error_message"]) == ("Error", "boom from node")
    assert (error["endpoint"], error["trace_id"]) == ("/crash", crash["trace_id"])
    assert error["span_id"] != crash["span_id"]  # the handler span's, where it was raised
    assert "boom from node" in error["stack_trace"] and "app.js" in error["stack_trace"]
    assert error["context"]["span_kind"] == "internal"

    (job_row,) = found["job_outcomes"]
    assert (job_row["job_id"], job_row["job_type"], job_row["status"]) == (
        job_id,
        "firmware_update",
        "success",
    )
    assert job_row["device_id"] == "dev_002"
    assert job_row["initiated_by"] == "system"
    assert job_row["duration_ms"] >= 0
    assert job_row["retry_count"] == 0
    assert job_row["error_code"] is None and job_row["error_message"] is None
    assert before <= job_row["timestamp"] <= after
    # The job span is a child of the request (through Express's request handler span): one trace.
    assert job_row["trace_id"] == requests[f"/jobs/{job_id}"]["trace_id"]
