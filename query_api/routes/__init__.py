"""The analytics query API: one module per table, all of it behind the admin token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from query_api.auth import require_admin
from query_api.routes import (
    device_states,
    error_groups,
    errors,
    frontend_breakdowns,
    job_devices,
    jobs,
    requests,
    timeseries,
    user_activities,
)
from query_api.validation import reject_unknown_query

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No token, or an expired or forged one."},
    403: {"description": "A valid token without the admin role."},
    503: {"description": "No JWT secret configured, the database unavailable, or the query too slow."},
}

router = APIRouter(
    prefix="/api/v1/analytics",
    dependencies=[Depends(require_admin), Depends(reject_unknown_query)],
    responses=_ERRORS,
)
for module in (
    requests,
    device_states,
    jobs,
    job_devices,
    errors,
    error_groups,
    user_activities,
    frontend_breakdowns,
    timeseries,
):
    router.include_router(module.router)
