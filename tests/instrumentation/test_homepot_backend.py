"""HOMEPOT's backend as it really runs, instrumented with one call: its users come from the
httpOnly ``access_token`` cookie, its own ``HTTPException(500)`` and 503 responses are errors,
its long-lived orchestrator worker (started inside the first job request) files each job under a
trace of its own, and its helpers' free-form context never breaks it.

The app below is our own fixture that behaves as HOMEPOT does (auth_utils.get_current_user reads
the cookie first, the bearer header second; its routes turn failures into HTTPException(500);
its orchestrator starts asyncio workers on first use); none of its code is copied."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from homepot_foundation.settings import Settings
from instrumentation import Telemetry, job_span, record_device_state, record_error, setup_telemetry
from tests.conftest import fetch_rows

SECRET = "homepot-like-secret-key-of-enough-length"


def current_user(request: Request) -> str:
    """As HOMEPOT's get_current_user: the cookie's token, else the bearer header's; verified."""
    token = request.cookies.get("access_token")
    if not token:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = value if scheme.lower() == "bearer" else None
    if not token:
        raise HTTPException(401, "Not authenticated")
    try:
        return str(jwt.decode(token, SECRET, algorithms=["HS256"])["sub"])
    except jwt.PyJWTError as error:
        raise HTTPException(401, "Could not validate credentials") from error


class Orchestrator:
    """Long-lived workers started by the first job request (they inherit its context). They
    take jobs once ``released`` is set: a test sets it when the requests that submitted them
    have returned, so the jobs run after those requests, as HOMEPOT's do once the queue is
    behind (a fixed sleep here lost that race on a loaded machine)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None
        self.released = threading.Event()
        self.done = 0

    def submit(self, job_id: str) -> None:
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())
        self.queue.put_nowait(job_id)

    async def _work(self) -> None:
        while True:
            job_id = await self.queue.get()
            while not self.released.is_set():
                await asyncio.sleep(0.005)
            async with job_span(
                job_id, "firmware_update", device_id="42", initiated_by="orchestrator"
            ) as job:
                job.status = "success"
                if job_id.endswith("bad"):
                    record_error("job", "error", "E_PUSH", f"push failed for {job_id}", device_id="42")
            self.done += 1


def homepot_app(db_url: str, tmp_path: Path, **settings: Any) -> tuple[FastAPI, Telemetry, Orchestrator]:
    app = FastAPI()
    orchestrator = Orchestrator()

    @app.post("/api/v1/auth/login")
    def login(response: Response) -> dict[str, str]:
        token = jwt.encode({"sub": "operator@homepot.example"}, SECRET, "HS256")
        response.set_cookie("access_token", token, httponly=True)
        return {"message": "Login successful"}

    @app.get("/api/v1/devices")
    def devices(user: str = Depends(current_user)) -> list[dict[str, str]]:
        return [{"device_id": "pos-1"}]

    @app.post("/api/v1/devices/{device_id}/provision")
    def provision(device_id: str, user: str = Depends(current_user)) -> None:
        try:
            raise ConnectionError("connection reset by peer")
        except ConnectionError as error:  # HOMEPOT turns its failures into a 500 itself
            raise HTTPException(500, f"Failed to provision device {device_id}: {error}") from error

    @app.get("/api/v1/health")
    def health() -> JSONResponse:
        return JSONResponse({"detail": "database unavailable"}, status_code=503)

    @app.get("/api/v1/crash")
    def crash() -> None:
        raise RuntimeError("unhandled boom")

    @app.post("/api/v1/jobs/{job_id}")
    async def submit(job_id: str) -> dict[str, str]:
        orchestrator.submit(job_id)
        return {"job_id": job_id}

    @app.post("/api/v1/devices/{device_id}/restart")
    async def restart(device_id: str) -> dict[str, str]:
        with job_span(f"restart-{device_id}", "restart", device_id=device_id):  # inside the request
            record_device_state(device_id, "online", "maintenance", changed_by="orchestrator")
        return {"status": "restarting"}

    config = Settings(database_url=db_url, data_dir=tmp_path / "data", export_delay_ms=50, **settings)
    return app, setup_telemetry(app, service_name="homepot-api", settings=config), orchestrator


def test_cookie_users_server_errors_and_one_row_per_crash(db_url: str, tmp_path: Path) -> None:
    app, telemetry, _ = homepot_app(db_url, tmp_path)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.post("/api/v1/auth/login").status_code == 200  # sets the cookie
            assert client.get("/api/v1/devices").status_code == 200
            assert client.post("/api/v1/devices/pos-1/provision").status_code == 500
            assert client.get("/api/v1/health").status_code == 503
            assert client.get("/api/v1/crash").status_code == 500
            client.cookies.clear()
            assert client.get("/api/v1/devices").status_code == 401
    finally:
        telemetry.shutdown()
    requests = {
        (row["method"], row["endpoint"], row["status_code"]): row
        for row in fetch_rows(db_url, "api_request_logs")
    }
    signed_in = requests[("GET", "/api/v1/devices", 200)]
    assert signed_in["user_id"] is not None and signed_in["user_id"].startswith("u_")  # pseudonymised
    assert requests[("POST", "/api/v1/devices/pos-1/provision", 500)]["user_id"] == signed_in["user_id"]
    assert requests[("GET", "/api/v1/devices", 401)]["user_id"] is None  # a rejected token names nobody

    errors = {row["endpoint"]: row for row in fetch_rows(db_url, "error_logs")}
    assert set(errors) == {"/api/v1/devices/pos-1/provision", "/api/v1/health", "/api/v1/crash"}
    provision = errors["/api/v1/devices/pos-1/provision"]
    assert (provision["error_code"], provision["category"]) == ("HTTP_500", "api")
    assert provision["error_message"] == "Failed to provision device pos-1: connection reset by peer"
    assert provision["user_id"] == signed_in["user_id"]
    assert provision["trace_id"] == requests[("POST", "/api/v1/devices/pos-1/provision", 500)]["trace_id"]
    assert provision["context"]["route"] == "/api/v1/devices/{device_id}/provision"
    assert (errors["/api/v1/health"]["error_code"], errors["/api/v1/health"]["error_message"]) == (
        "HTTP_503",
        "database unavailable",
    )
    assert errors["/api/v1/crash"]["error_code"] == "RuntimeError"  # one row: the exception's


def test_the_same_failure_on_two_devices_is_one_group(db_url: str, tmp_path: Path) -> None:
    """Fingerprinted by route and normalised detail: pos-1 and pos-2 fail alike, one group."""
    app, telemetry, _ = homepot_app(db_url, tmp_path)
    try:
        with TestClient(app) as client:
            client.post("/api/v1/auth/login")
            for device in ("pos-1", "pos-2", "pos-31"):
                assert client.post(f"/api/v1/devices/{device}/provision").status_code == 500
    finally:
        telemetry.shutdown()
    fingerprints = {row["fingerprint"] for row in fetch_rows(db_url, "error_logs")}
    assert len(fingerprints) == 1


def test_server_error_rows_can_be_switched_off(db_url: str, tmp_path: Path) -> None:
    app, telemetry, _ = homepot_app(db_url, tmp_path, record_server_errors=False)
    try:
        with TestClient(app) as client:
            assert client.get("/api/v1/health").status_code == 503
    finally:
        telemetry.shutdown()
    assert fetch_rows(db_url, "error_logs") == []
    assert len(fetch_rows(db_url, "api_request_logs")) == 1


def test_orchestrator_jobs_get_traces_of_their_own_linked_to_the_request(db_url: str, tmp_path: Path) -> None:
    app, telemetry, orchestrator = homepot_app(db_url, tmp_path)
    try:
        with TestClient(app) as client:
            for job_id in ("job-1", "job-2bad", "job-3"):
                assert client.post(f"/api/v1/jobs/{job_id}").status_code == 200
            assert client.post("/api/v1/devices/dev-9/restart").status_code == 200
            orchestrator.released.set()  # every request above has returned: its ASGI call is over
            deadline = 200
            while orchestrator.done < 3 and deadline:
                client.get("/api/v1/health")  # keeps the loop turning
                deadline -= 1
            assert orchestrator.done == 3
    finally:
        telemetry.shutdown()
    requests = {row["endpoint"]: row for row in fetch_rows(db_url, "api_request_logs")}
    jobs = {row["job_id"]: row for row in fetch_rows(db_url, "job_outcomes")}
    worker_jobs = [jobs[job_id] for job_id in ("job-1", "job-2bad", "job-3")]
    # Three jobs, three traces, none of them the first request's (which started the worker).
    assert len({job["trace_id"] for job in worker_jobs}) == 3
    assert requests["/api/v1/jobs/job-1"]["trace_id"] not in {job["trace_id"] for job in worker_jobs}
    # The error a job records files under that job's trace, not the request's.
    (push,) = [row for row in fetch_rows(db_url, "error_logs") if row["error_code"] == "E_PUSH"]
    assert push["trace_id"] == jobs["job-2bad"]["trace_id"]
    # A job inside a live request stays its child, and so does the state change inside it.
    restart = requests["/api/v1/devices/dev-9/restart"]
    assert jobs["restart-dev-9"]["trace_id"] == restart["trace_id"]
    (state,) = fetch_rows(db_url, "device_state_history")
    assert state["trace_id"] == restart["trace_id"]
    assert state["changed_by"] == "orchestrator"  # a system actor, never a pseudonym


@pytest.mark.parametrize(
    "call",
    [
        lambda: record_error("api", "error", None, "x", **{"message": "collides", "category": "too"}),
        lambda: record_error("api", "error", None, "x", context={"message": "y", "endpoint": "/z"}),
        lambda: record_error("api", "error", None, object(), context={"blob": "x" * 2_000_000}),  # type: ignore[arg-type]
        lambda: record_device_state("d1", None, "online", extra_data={"device_id": "other", "reason": 1}),
        lambda: record_device_state(object(), object(), object()),  # type: ignore[arg-type]
    ],
)
def test_helpers_never_raise_whatever_they_are_given(call: Any) -> None:
    call()


def test_two_apps_in_one_process_each_keep_their_service(db_url: str, tmp_path: Path) -> None:
    """HOMEPOT runs two FastAPI apps; each is instrumented with its own one call."""
    first, second = FastAPI(), FastAPI()
    first.add_api_route("/api/v1/devices", lambda: [])
    second.add_api_route("/agents/status", lambda: {})
    config = Settings(database_url=db_url, data_dir=tmp_path / "data", export_delay_ms=50)
    telemetries = [
        setup_telemetry(first, service_name="homepot-api", settings=config),
        setup_telemetry(second, service_name="homepot-agents", settings=config),
    ]
    try:
        with TestClient(first) as one, TestClient(second) as two:
            assert one.get("/api/v1/devices").status_code == 200
            assert two.get("/agents/status").status_code == 200
    finally:
        for telemetry in telemetries:
            telemetry.shutdown()
    services = {row["endpoint"]: row["service_name"] for row in fetch_rows(db_url, "api_request_logs")}
    assert services == {"/api/v1/devices": "homepot-api", "/agents/status": "homepot-agents"}
