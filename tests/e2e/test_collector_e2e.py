"""End to end through a real collector: an instrumented FastAPI app exports OTLP to ``rotel`` (an
OpenTelemetry collector from PyPI), which forwards it over OTLP/HTTP to the sink served by uvicorn;
the rows are then read back from PostgreSQL.

    app (setup_telemetry, export=otlp) --OTLP http/protobuf or grpc--> rotel --OTLP/HTTP gzip--> sink
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from homepot_foundation.settings import Settings
from instrumentation import job_span, record_device_state, setup_telemetry
from query_api.app import create_app
from tests.support.servers import serve_in_thread

pytestmark = pytest.mark.slow

TOKEN = "e2e-ingest-token"
DEADLINE_S = 30.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(
    port: int, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 10.0
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def _rotel_binary() -> Path | None:
    spec = importlib.util.find_spec("rotel")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "rotel-agent"
    return binary if binary.exists() else None


@pytest.fixture(scope="module")
def sink(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The analytics service (OTLP sink included) under uvicorn on a loopback port."""
    settings = Settings(
        database_url=database_url, data_dir=tmp_path_factory.mktemp("e2e-sink"), ingest_token=TOKEN
    )
    with serve_in_thread(create_app(settings), name="e2e-sink") as base_url:
        yield base_url


@pytest.fixture(scope="module")
def collector(sink: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """A rotel collector receiving OTLP (gRPC and HTTP) and exporting OTLP/HTTP to the sink."""
    binary = _rotel_binary()
    if binary is None:
        pytest.skip("rotel is not installed (pip install rotel==0.0.1a15): no collector to run")
    grpc_port, http_port = _free_port(), _free_port()
    workdir = tmp_path_factory.mktemp("rotel")
    log_path = workdir / "rotel.out"
    command = [
        str(binary),
        "start",
        "--otlp-grpc-endpoint",
        f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint",
        f"127.0.0.1:{http_port}",
        "--exporter",
        "otlp",
        "--otlp-exporter-endpoint",
        sink,
        "--otlp-exporter-protocol",
        "http",
        "--otlp-exporter-custom-headers",
        f"Authorization=Bearer {TOKEN}",
        "--batch-timeout",
        "100ms",
        "--pid-file",
        str(workdir / "rotel.pid"),
        "--log-file",
        str(workdir / "rotel.log"),
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not (_wait_for_port(http_port, process) and _wait_for_port(grpc_port, process)):
            output = log_path.read_text(errors="replace")[-2000:]
            pytest.skip(f"rotel could not start (exit code {process.poll()}): {output}")
        yield {"grpc": grpc_port, "http": http_port}
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _instrumented_app(settings: Settings, service_name: str) -> tuple[FastAPI, Any]:
    app = FastAPI()
    telemetry = setup_telemetry(app, service_name=service_name, settings=settings)
    devices = {"dev_001": "online"}

    @app.get("/api/v1/devices/{device_id}")
    async def get_device(device_id: str) -> dict[str, str]:
        if device_id not in devices:
            raise HTTPException(404, f"Device {device_id} not found")
        return {"device_id": device_id, "state": devices[device_id]}

    @app.put("/api/v1/devices/{device_id}/state")
    async def change_state(device_id: str, state: str) -> dict[str, str]:
        record_device_state(device_id, devices[device_id], state, changed_by="system", reason="e2e")
        devices[device_id] = state
        return {"device_id": device_id, "state": state}

    @app.post("/api/v1/devices/{device_id}/jobs")
    async def run_job(device_id: str) -> dict[str, str]:
        async with job_span("job-e2e-1", "restart", device_id=device_id, initiated_by="system"):
            pass
        return {"job_id": "job-e2e-1"}

    @app.get("/api/v1/reports/daily")
    async def daily_report() -> dict[str, float]:
        totals: dict[str, int] = {}
        return {"ratio": totals["sales"] / len(totals)}

    return app, telemetry


def _rows(database_url: str, table: str, service_name: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE service_name = %s ORDER BY id", (service_name,))
        return list(cursor.fetchall())


EXPECTED = {"api_request_logs": 5, "error_logs": 1, "job_outcomes": 1, "device_state_history": 1}


def _wait_for_rows(database_url: str, service_name: str) -> dict[str, list[dict[str, Any]]]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = {table: _rows(database_url, table, service_name) for table in EXPECTED}
        counts = {table: len(table_rows) for table, table_rows in found.items()}
        if counts == EXPECTED or time.monotonic() > deadline:
            assert counts == EXPECTED, f"rows after {DEADLINE_S} s: {counts}"
            return found
        time.sleep(0.2)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_an_instrumented_app_fills_the_tables_through_a_collector(
    collector: dict[str, int],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
) -> None:
    port = collector["grpc"] if protocol == "grpc" else collector["http"]
    # Only the standard variables: the app knows nothing of the sink or its database.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    service_name = f"e2e-{protocol.replace('/', '-')}-{uuid.uuid4().hex[:8]}"
    settings = Settings(export=["otlp"], data_dir=tmp_path / "app", database_url=None)
    app, telemetry = _instrumented_app(settings, service_name)
    try:
        assert telemetry.delivery is None  # nothing is written to PostgreSQL from the app itself
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.get("/api/v1/devices/dev_001").status_code == 200
            assert client.get("/api/v1/devices/dev_404").status_code == 404
            assert (
                client.put("/api/v1/devices/dev_001/state", params={"state": "maintenance"}).status_code
                == 200
            )
            assert client.post("/api/v1/devices/dev_001/jobs").status_code == 200
            assert client.get("/api/v1/reports/daily").status_code == 500
            assert telemetry.force_flush(10_000)  # before the lifespan's end shuts telemetry down
    finally:
        telemetry.shutdown()

    found = _wait_for_rows(database_url, service_name)
    device_route = "/api/v1/devices/{device_id}"
    requests = {(row["method"], row["route"], row["status_code"]): row for row in found["api_request_logs"]}
    assert sorted(requests) == [
        ("GET", "/api/v1/devices/{device_id}", 200),
        ("GET", "/api/v1/devices/{device_id}", 404),
        ("GET", "/api/v1/reports/daily", 500),
        ("POST", "/api/v1/devices/{device_id}/jobs", 200),
        ("PUT", "/api/v1/devices/{device_id}/state", 200),
    ]
    not_found = requests[("GET", device_route, 404)]
    assert not_found["endpoint"] == "/api/v1/devices/dev_404"
    assert not_found["error_message"] == "Device dev_404 not found"
    assert not_found["user_agent"] == "testclient"

    failed = requests[("GET", "/api/v1/reports/daily", 500)]
    (error,) = found["error_logs"]
    assert error["error_code"] == "KeyError"
    assert error["endpoint"] == "/api/v1/reports/daily"
    assert 'totals["sales"]' in error["stack_trace"]
    # The error row and its request share the trace: one click from either to Jaeger.
    assert len(failed["trace_id"]) == 32 and error["trace_id"] == failed["trace_id"]

    (job,) = found["job_outcomes"]
    assert (job["job_id"], job["job_type"], job["device_id"], job["status"]) == (
        "job-e2e-1",
        "restart",
        "dev_001",
        "success",
    )
    job_request = requests[("POST", "/api/v1/devices/{device_id}/jobs", 200)]
    assert job["trace_id"] == job_request["trace_id"]

    (state,) = found["device_state_history"]
    assert (state["device_id"], state["previous_state"], state["new_state"]) == (
        "dev_001",
        "online",
        "maintenance",
    )
    assert state["changed_by"] == "system"
    assert state["trace_id"] == requests[("PUT", "/api/v1/devices/{device_id}/state", 200)]["trace_id"]
