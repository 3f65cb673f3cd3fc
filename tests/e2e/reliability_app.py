"""An instrumented service for the outage and shutdown tests, run under uvicorn in a subprocess.

Configured by the usual HOMEPOT_ANALYTICS_* variables; RELIABILITY_APP_MAX_BACKOFF_S shortens
the replay backoff so a test sees the spool drained within seconds of the database returning.
"""

from __future__ import annotations

from fastapi import FastAPI

from homepot_foundation.settings import Settings
from instrumentation import job_span, record_device_state, record_error, setup_telemetry
from query_api import metrics

app = FastAPI()
app.include_router(metrics.router)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/ping/{n}")
def ping(n: int) -> dict[str, int]:
    return {"n": n}


@app.post("/jobs/{job_id}")
def run_job(job_id: str) -> dict[str, str]:
    with job_span(job_id, "restart", device_id="dev_001", initiated_by="system"):
        pass
    return {"job": job_id}


@app.post("/devices/{device_id}/state")
def change_state(device_id: str) -> dict[str, str]:
    record_device_state(device_id, "online", "maintenance", reason="test")
    return {"device": device_id}


@app.post("/errors/{n}")
def report_error(n: int) -> dict[str, int]:
    record_error("external_service", "error", "E_TEST", f"failure number {n}")
    return {"error": n}


telemetry = setup_telemetry(app, service_name="reliability-app", settings=Settings())
