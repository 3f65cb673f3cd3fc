"""GET /jobs/failing-devices: the devices whose jobs fail most (the dashboard's jobs page)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import Text, cast, func, select

from exporter.schema import job_outcomes
from query_api.deps import DatabasesDep, SettingsDep
from query_api.filters import WindowDep
from query_api.models import FailingDevices
from query_api.reading import transaction
from query_api.routes import jobs

router = APIRouter(prefix="/jobs", tags=["jobs"])

# Cancelled is someone's decision, not the device failing.
FAILED_STATUSES = ("failed", "timeout")


@router.get("/failing-devices", response_model=FailingDevices)
def failing_devices(
    databases: DatabasesDep,
    settings: SettingsDep,
    window: WindowDep,
    filters: jobs.Filters,
    top: Annotated[int, Query(ge=1, le=100, description="Devices to list, most failures first.")] = 10,
) -> dict[str, Any]:
    """Per service and device: jobs, failed or timed-out jobs, their share, the last failure."""
    t = job_outcomes.c
    failed = t.status.in_(FAILED_STATUSES)
    failures = func.count().filter(failed)
    statement = (
        select(
            t.service_name,
            # As text: a table shared with HOMEPOT may keep an integer device key there.
            cast(t.device_id, Text).label("device_id"),
            func.count().label("jobs"),
            failures.label("failures"),
            func.max(t.timestamp).filter(failed).label("last_failed_at"),
        )
        .where(*filters, *window.conditions(t.timestamp), t.device_id.is_not(None))
        .group_by(t.service_name, t.device_id)
        .having(failures > 0)
        .order_by(failures.desc(), func.count().desc(), t.service_name, t.device_id)
        .limit(top)
    )
    with transaction(databases, settings, aggregate=True) as conn:
        rows = [row._asdict() for row in conn.execute(statement)]
    for row in rows:
        row["failure_rate"] = row["failures"] / row["jobs"]
    return {"devices": rows} | window.echo()
