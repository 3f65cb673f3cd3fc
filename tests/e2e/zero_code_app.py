"""An app with no analytics code at all: ``opentelemetry-instrument`` instruments it (the
zero-code test in test_zero_code.py)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException

app = FastAPI()
logger = logging.getLogger("zero_code_app")


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/devices/{device_id}")
def device(device_id: str) -> dict[str, str]:
    if device_id == "missing":
        raise HTTPException(404, "Device missing not found")
    return {"device_id": device_id}


@app.get("/crash")
def crash() -> None:
    raise ZeroDivisionError("division by zero")


@app.get("/lookup")
def lookup() -> dict[str, str]:
    try:
        return {"value": {}["absent"]}
    except KeyError:
        logger.exception("lookup failed")
        return {"value": "default"}


@app.get("/logged")
def logged() -> dict[str, str]:
    logger.error("cache refresh failed for %s", "dev-7")  # no exception: still an error row
    return {"value": "stale"}
