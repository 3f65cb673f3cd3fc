"""Rows for the five tables built by hand, and a way to insert them directly with SQLAlchemy."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, insert

from exporter.rollups.refresh import refresh
from exporter.schema import api_request_logs, device_state_history, error_logs, job_outcomes, user_activities

# 2025-12-05 12:00 UTC: the spec's example day.
NOON = datetime(2025, 12, 5, 12, 0, tzinfo=UTC)

_REQUIRED: dict[str, dict[str, Any]] = {
    api_request_logs.name: {
        "endpoint": "/api/v1/devices",
        "route": "/api/v1/devices",
        "method": "GET",
        "status_code": 200,
        "response_time_ms": 10.0,
    },
    device_state_history.name: {"device_id": "dev_001", "previous_state": "online", "new_state": "offline"},
    job_outcomes.name: {"job_id": "job_1", "job_type": "restart", "status": "success", "retry_count": 0},
    error_logs.name: {"category": "api", "severity": "error", "error_message": "boom", "resolved": False},
    user_activities.name: {"activity_type": "page_view", "page_url": "/devices"},
}


def row(table: Table, minutes: float = 0, **values: Any) -> dict[str, Any]:
    """A full row: every column but ``id`` (None unless given), ``minutes`` after NOON."""
    full: dict[str, Any] = {column.name: None for column in table.columns if column.name != "id"}
    full.update(_REQUIRED[table.name])
    full["timestamp"] = NOON + timedelta(minutes=minutes)
    full["event_id"] = uuid.uuid4()
    full.update(values)
    return full


def insert_rows(engine: Engine, table: Table, rows: Iterable[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` in order; their ids. The rollups are then refreshed, as the service does
    every few seconds (the summaries read them)."""
    rows = list(rows)
    with engine.begin() as conn:
        ids = [conn.execute(insert(table).values(**r).returning(table.c.id)).scalar_one() for r in rows]
    with engine.connect() as conn:
        refresh(conn)
    return ids
