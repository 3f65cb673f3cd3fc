"""A small HOMEPOT-like service (sites, devices, jobs), instrumented the way a backend team would.

It is what ``homepot-analytics demo`` runs and drives; it also shows, in one file, every helper
a backend adds: ``setup_telemetry``, ``record_device_state``, ``job_span`` and ``record_error``.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Annotated, Literal

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel

from homepot_foundation.settings import Settings
from instrumentation import Telemetry, job_span, record_device_state, record_error, setup_telemetry

SITES = {
    "site-001": "Lisbon flagship store",
    "site-002": "Porto warehouse",
    "site-003": "Faro kiosk",
}
DEVICE_TYPES = ("pos_terminal", "iot_sensor", "industrial_controller", "gateway")
DeviceState = Literal["online", "offline", "maintenance", "error", "unknown"]
JobType = Literal["firmware_update", "restart", "config_change", "health_check"]


class StateChange(BaseModel):
    state: DeviceState
    reason: str | None = None


class JobRequest(BaseModel):
    job_type: JobType
    simulate: Literal["success", "failure", "timeout", "cancel"] = "success"


class Login(BaseModel):
    username: str
    password: str


def _initial_devices() -> dict[str, dict[str, str]]:
    devices = {}
    for number in range(1, 13):
        device_id = f"dev_{number:03d}"
        devices[device_id] = {
            "device_id": device_id,
            "site_id": f"site-00{(number % 3) + 1}",
            "type": DEVICE_TYPES[number % len(DEVICE_TYPES)],
            "state": "online",
        }
    return devices


class FirmwareError(Exception):
    """A failure a device reports; ``error_code`` is what job_span stores."""

    def __init__(self, message: str, error_code: str) -> None:
        super().__init__(message)
        self.error_code = error_code


def create_demo_app(
    settings: Settings | None = None, *, service_name: str = "homepot-demo"
) -> tuple[FastAPI, Telemetry]:
    app = FastAPI(title="HOMEPOT demo service")
    telemetry = setup_telemetry(app, service_name=service_name, settings=settings)
    devices = _initial_devices()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/sites")
    async def list_sites() -> list[dict[str, str]]:
        return [{"site_id": key, "name": name} for key, name in SITES.items()]

    @app.get("/api/v1/sites/{site_id}")
    async def get_site(site_id: str) -> dict[str, object]:
        if site_id not in SITES:
            raise HTTPException(404, f"Site {site_id} not found")
        return {
            "site_id": site_id,
            "name": SITES[site_id],
            "devices": sorted(d["device_id"] for d in devices.values() if d["site_id"] == site_id),
        }

    @app.get("/api/v1/devices")
    async def list_devices() -> list[dict[str, str]]:
        return list(devices.values())

    @app.get("/api/v1/devices/{device_id}")
    async def get_device(device_id: str) -> dict[str, str]:
        if device_id not in devices:
            raise HTTPException(404, f"Device {device_id} not found")
        return devices[device_id]

    @app.put("/api/v1/devices/{device_id}/state")
    async def change_state(
        device_id: str, change: StateChange, x_user: Annotated[str | None, Header()] = None
    ) -> dict[str, str]:
        if device_id not in devices:
            raise HTTPException(404, f"Device {device_id} not found")
        previous = devices[device_id]["state"]
        if previous == change.state:
            return devices[device_id]  # not a change: nothing to record
        devices[device_id]["state"] = change.state
        record_device_state(
            device_id,
            previous,
            change.state,
            changed_by=x_user or "system",
            reason=change.reason,
            site_id=devices[device_id]["site_id"],
        )
        return devices[device_id]

    @app.post("/api/v1/devices/{device_id}/jobs", status_code=201)
    async def run_job(
        device_id: str, request: JobRequest, x_user: Annotated[str | None, Header()] = None
    ) -> dict[str, str]:
        if device_id not in devices:
            raise HTTPException(404, f"Device {device_id} not found")
        job_id = f"job_{uuid.uuid4().hex[:8]}"
        try:
            async with job_span(job_id, request.job_type, device_id=device_id, initiated_by=x_user) as job:
                job.extra_data["site_id"] = devices[device_id]["site_id"]
                await asyncio.sleep(random.uniform(0.001, 0.01))
                if request.simulate == "failure":
                    job.retry_count = 2
                    raise FirmwareError("checksum mismatch after download", "E_FW_CHECKSUM")
                if request.simulate == "timeout":
                    raise TimeoutError("device did not answer within 30 s")
                if request.simulate == "cancel":
                    job.status = "cancelled"
        except FirmwareError as error:
            record_error(
                "external_service",
                "error",
                error.error_code,
                str(error),
                exception=error,
                endpoint=f"/api/v1/devices/{device_id}/jobs",
                device_id=device_id,
                job_id=job_id,
            )
            raise HTTPException(502, f"Job {job_id} failed: {error}") from error
        except TimeoutError as error:
            raise HTTPException(504, f"Job {job_id} timed out") from error
        return {"job_id": job_id, "status": job.status or "success"}

    @app.post("/api/v1/auth/login")
    async def login(credentials: Login) -> dict[str, str]:
        if credentials.password != "correct-horse":
            raise HTTPException(401, "Invalid username or password")
        return {"token": "not-a-real-token"}

    @app.get("/api/v1/reports/daily")
    async def daily_report() -> dict[str, object]:
        # A bug on purpose: the unhandled exception becomes a 500 and an error_logs row.
        totals: dict[str, int] = {}
        return {"ratio": totals["sales"] / len(totals)}

    return app, telemetry
