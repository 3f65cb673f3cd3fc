"""GET /jobs and /jobs/summary: the job outcomes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import ColumnElement

from exporter.schema import job_outcomes, max_length
from query_api import summaries
from query_api.deps import DatabasesDep, PrivacyDep, SettingsDep
from query_api.filters import (
    JobStatus,
    PagingDep,
    ServiceDep,
    SummarySizeDep,
    WindowDep,
    at_least,
    conditions,
    equal,
    one_of,
    stored_actor,
)
from query_api.listing import list_page
from query_api.models import JobPage, JobSummary
from query_api.reading import transaction

router = APIRouter(prefix="/jobs", tags=["jobs"])
_TABLE = job_outcomes.name


def job_filters(
    service: ServiceDep,
    privacy: PrivacyDep,
    job_id: Annotated[
        str | None, Query(max_length=max_length(_TABLE, "job_id"), description="The job.")
    ] = None,
    job_type: Annotated[
        str | None,
        Query(max_length=max_length(_TABLE, "job_type"), description="Kind of job: `firmware_update`."),
    ] = None,
    device_id: Annotated[
        str | None, Query(max_length=max_length(_TABLE, "device_id"), description="Target device.")
    ] = None,
    status: Annotated[list[JobStatus] | None, Query(description="Outcome; repeat for several.")] = None,
    error_code: Annotated[
        str | None, Query(max_length=max_length(_TABLE, "error_code"), description="Error code: `E_TIMEOUT`.")
    ] = None,
    initiated_by: Annotated[
        str | None,
        Query(
            max_length=max_length(_TABLE, "initiated_by"),
            description="A user id, or a system actor (`system`, `orchestrator`, ...).",
        ),
    ] = None,
    min_duration_ms: Annotated[
        int | None, Query(ge=0, le=2**31 - 1, description="Only jobs that ran at least this long.")
    ] = None,
) -> list[ColumnElement[bool]]:
    t = job_outcomes.c
    return service.conditions(t) + conditions(
        equal(t.job_id, job_id),
        equal(t.job_type, job_type),
        equal(t.device_id, device_id),
        one_of(t.status, status),
        equal(t.error_code, error_code),
        equal(t.initiated_by, stored_actor(privacy, initiated_by)),
        at_least(t.duration_ms, min_duration_ms),
    )


Filters = Annotated[list[ColumnElement[bool]], Depends(job_filters)]


@router.get("", response_model=JobPage)
def list_jobs(
    databases: DatabasesDep, settings: SettingsDep, window: WindowDep, paging: PagingDep, filters: Filters
) -> Response:
    """Job outcomes in the window, newest first."""
    return list_page(databases, settings, job_outcomes, filters, window, paging)


@router.get("/summary", response_model=JobSummary)
def summarise_jobs(
    databases: DatabasesDep, settings: SettingsDep, window: WindowDep, size: SummarySizeDep, filters: Filters
) -> dict[str, Any]:
    """Per service and job type: count, success rate, p50/p95 duration and the top error codes."""
    with transaction(databases, settings, aggregate=True) as conn:
        summary = summaries.job_summary(conn, filters, window, size.limit, size.top)
    return summary | window.echo()
