"""End to end: an instrumented app under uvicorn, driven over real HTTP, rows checked field by field."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse

from exporter.privacy import privacy_from_settings
from homepot_foundation.settings import Settings
from instrumentation import (
    Telemetry,
    job_span,
    record_device_state,
    record_error,
    record_user_activity,
    setup_telemetry,
)
from tests.conftest import fetch_rows

USER_TOKEN = jwt.encode({"sub": "user123"}, "the-service-own-secret-0123456789abcdef", "HS256")


def build_app(settings: Settings) -> tuple[FastAPI, Telemetry]:
    app = FastAPI()
    telemetry = setup_telemetry(app, service_name="e2e-service", settings=settings)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/devices/{device_id}")
    def get_device(device_id: str) -> dict[str, str]:
        if device_id == "missing":
            raise HTTPException(404, "Device missing not found")
        return {"device_id": device_id}

    @app.post("/api/v1/devices/{device_id}/state")
    async def change_state(device_id: str, request: Request) -> dict[str, str]:
        body = await request.json()
        record_device_state(
            device_id, "online", body["state"], changed_by="user123", reason="Maintenance", ticket=7
        )
        return {"ok": "yes"}

    @app.post("/api/v1/jobs/{job_id}")
    async def run_job(job_id: str) -> dict[str, str]:
        try:
            async with job_span(
                job_id, "firmware_update", device_id="dev_001", initiated_by="user123"
            ) as job:
                job.retry_count = 1
                job.extra_data["firmware"] = "2.0.1"
                await asyncio.sleep(0.02)
                if job_id == "job_fail":
                    raise ConnectionError("device unreachable")
        except ConnectionError:
            record_error(
                "external_service", "critical", "E_MQTT_DOWN", "MQTT broker offline", device_id="dev_001"
            )
            raise HTTPException(502, "job failed") from None
        return {"status": "done"}

    @app.get("/api/v1/reports/crash")
    def crash() -> None:
        raise ZeroDivisionError("division by zero")

    @app.get("/api/v1/export")
    def export() -> StreamingResponse:
        # Chunked: no Content-Length; the size must still be counted.
        return StreamingResponse(iter([b"a" * 1000, b"b" * 500]), media_type="text/plain")

    @app.post("/api/v1/track")
    def track() -> dict[str, str]:
        record_user_activity(
            "click", user_id="user123", session_id="s-1", page_url="/devices", element_id="add"
        )
        return {"ok": "yes"}

    return app, telemetry


@pytest.fixture()
def running(settings: Settings) -> Iterator[tuple[str, Telemetry]]:
    app, telemetry = build_app(settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", telemetry
    server.should_exit = True
    thread.join(10)
    telemetry.shutdown()


def by_endpoint(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["endpoint"]: row for row in rows}


def test_all_five_tables_filled_through_opentelemetry(
    running: tuple[str, Telemetry], db_url: str, settings: Settings
) -> None:
    base_url, telemetry = running
    # Stored user ids are pseudonyms and IPs truncated by default (see the privacy tests).
    privacy = privacy_from_settings(settings)
    user = privacy.user("user123")
    assert user is not None and user.startswith("u_")
    before = datetime.now(UTC)
    auth = {"Authorization": f"Bearer {USER_TOKEN}", "User-Agent": "e2e-test/1.0"}
    with httpx.Client(base_url=base_url, headers=auth) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/api/v1/devices/dev_001").status_code == 200
        assert client.get("/api/v1/devices/missing").status_code == 404
        assert client.post("/api/v1/devices/dev_001/state", json={"state": "offline"}).status_code == 200
        assert client.post("/api/v1/jobs/job_ok").status_code == 200
        assert client.post("/api/v1/jobs/job_fail").status_code == 502
        assert client.get("/api/v1/export").status_code == 200
        assert client.post("/api/v1/track").status_code == 200
    with httpx.Client(base_url=base_url) as client:
        assert client.get("/api/v1/reports/crash").status_code == 500
    assert telemetry.force_flush()
    after = datetime.now(UTC)

    requests = by_endpoint(fetch_rows(db_url, "api_request_logs"))
    assert "/health" not in requests, "health checks are excluded by default"
    assert len(requests) == 8
    ok = requests["/api/v1/devices/dev_001"]
    assert ok["route"] == "/api/v1/devices/{device_id}"
    assert (ok["method"], ok["status_code"], ok["user_id"]) == ("GET", 200, user)
    assert ok["ip_address"] == "127.0.0.0"
    assert ok["user_agent"] == "e2e-test/1.0"
    assert ok["error_message"] is None
    assert ok["request_size_bytes"] == 0
    assert ok["response_size_bytes"] == len(b'{"device_id":"dev_001"}')
    assert 0 < ok["response_time_ms"] < 5000
    assert before - timedelta(seconds=1) <= ok["timestamp"] <= after
    assert ok["timestamp"].utcoffset() == timedelta(0)
    assert len(ok["trace_id"]) == 32 and len(ok["span_id"]) == 16
    assert ok["service_name"] == "e2e-service"
    assert requests["/api/v1/devices/missing"]["error_message"] == "Device missing not found"
    assert requests["/api/v1/devices/dev_001/state"]["request_size_bytes"] == len(b'{"state":"offline"}')
    assert requests["/api/v1/export"]["response_size_bytes"] == 1500
    crash = requests["/api/v1/reports/crash"]
    assert (crash["status_code"], crash["user_id"]) == (500, None)
    assert crash["error_message"] == "ZeroDivisionError: division by zero"
    assert crash["response_size_bytes"] == len(b"Internal Server Error")

    (state,) = fetch_rows(db_url, "device_state_history")
    assert (state["device_id"], state["previous_state"], state["new_state"]) == (
        "dev_001",
        "online",
        "offline",
    )
    assert (state["changed_by"], state["reason"], state["extra_data"]) == (
        user,
        "Maintenance",
        {"ticket": 7},
    )
    assert state["trace_id"] == requests["/api/v1/devices/dev_001/state"]["trace_id"], "tied to its request"

    jobs = {row["job_id"]: row for row in fetch_rows(db_url, "job_outcomes")}
    assert set(jobs) == {"job_ok", "job_fail"}
    assert (jobs["job_ok"]["status"], jobs["job_ok"]["retry_count"]) == ("success", 1)
    assert jobs["job_ok"]["duration_ms"] >= 20
    assert (jobs["job_ok"]["job_type"], jobs["job_ok"]["device_id"]) == ("firmware_update", "dev_001")
    assert jobs["job_ok"]["initiated_by"] == user
    assert jobs["job_ok"]["extra_data"] == {"firmware": "2.0.1"}
    assert (jobs["job_fail"]["status"], jobs["job_fail"]["error_code"]) == ("failed", "ConnectionError")
    assert jobs["job_fail"]["error_message"] == "device unreachable"
    assert jobs["job_fail"]["trace_id"] == requests["/api/v1/jobs/job_fail"]["trace_id"]

    errors = {row["error_code"]: row for row in fetch_rows(db_url, "error_logs")}
    # The 502 the job route answered itself is an error of that request too.
    assert set(errors) == {"ZeroDivisionError", "E_MQTT_DOWN", "HTTP_502"}
    assert errors["HTTP_502"]["trace_id"] == requests["/api/v1/jobs/job_fail"]["trace_id"]
    unhandled = errors["ZeroDivisionError"]
    assert (unhandled["category"], unhandled["severity"]) == ("api", "error")
    assert unhandled["error_message"] == "division by zero"
    assert "ZeroDivisionError" in unhandled["stack_trace"] and "def crash" not in unhandled["error_message"]
    assert unhandled["endpoint"] == "/api/v1/reports/crash"
    assert unhandled["trace_id"] == crash["trace_id"], "the error is tied to its request"
    assert unhandled["resolved"] is False and unhandled["resolved_at"] is None
    recorded = errors["E_MQTT_DOWN"]
    assert (recorded["category"], recorded["severity"], recorded["device_id"]) == (
        "external_service",
        "critical",
        "dev_001",
    )
    assert recorded["trace_id"] == requests["/api/v1/jobs/job_fail"]["trace_id"]

    (activity,) = fetch_rows(db_url, "user_activities")
    assert (activity["activity_type"], activity["user_id"], activity["session_id"]) == (
        "click",
        user,
        "s-1",
    )
    assert (activity["page_url"], activity["element_id"]) == ("/devices", "add")
    assert json.dumps(activity["extra_data"]) == "null"
