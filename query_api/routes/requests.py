"""GET /requests and /requests/summary: the API request logs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import ColumnElement

from exporter.schema import api_request_logs, max_length
from query_api import summaries
from query_api.deps import DatabasesDep, PrivacyDep, SettingsDep
from query_api.filters import (
    HttpMethod,
    PagingDep,
    ServiceDep,
    SummarySizeDep,
    WindowDep,
    at_least,
    at_most,
    conditions,
    equal,
    one_of,
    ordered_range,
    stored_url,
    stored_user,
)
from query_api.listing import list_page
from query_api.models import RequestPage, RequestSummary
from query_api.reading import transaction

router = APIRouter(prefix="/requests", tags=["requests"])
_TABLE = api_request_logs.name


def request_filters(
    service: ServiceDep,
    privacy: PrivacyDep,
    endpoint: Annotated[
        str | None,
        Query(
            max_length=max_length(_TABLE, "endpoint"), description="Exact request path: `/api/v1/devices/7`."
        ),
    ] = None,
    route: Annotated[
        str | None,
        Query(
            max_length=max_length(_TABLE, "route"),
            description="Exact route template: `/api/v1/devices/{device_id}`.",
        ),
    ] = None,
    method: Annotated[list[HttpMethod] | None, Query(description="HTTP method; repeat for several.")] = None,
    status_code: Annotated[int | None, Query(ge=0, le=599, description="Exact response status.")] = None,
    min_status_code: Annotated[
        int | None, Query(ge=0, le=599, description="Lowest status, e.g. 500.")
    ] = None,
    max_status_code: Annotated[
        int | None, Query(ge=0, le=599, description="Highest status, e.g. 599.")
    ] = None,
    min_response_time_ms: Annotated[
        float | None, Query(ge=0, description="Only requests that took at least this long.")
    ] = None,
    max_response_time_ms: Annotated[
        float | None, Query(ge=0, description="Only requests that took at most this long.")
    ] = None,
    user_id: Annotated[
        str | None,
        Query(
            max_length=max_length(_TABLE, "user_id"), description="The user, as the service identified it."
        ),
    ] = None,
    trace_id: Annotated[
        str | None, Query(pattern="^[0-9a-fA-F]{32}$", description="OpenTelemetry trace id (32 hex).")
    ] = None,
) -> list[ColumnElement[bool]]:
    ordered_range("min_status_code", min_status_code, "max_status_code", max_status_code)
    ordered_range("min_response_time_ms", min_response_time_ms, "max_response_time_ms", max_response_time_ms)
    t = api_request_logs.c
    return service.conditions(t) + conditions(
        equal(t.endpoint, stored_url(privacy, endpoint)),
        equal(t.route, route),
        one_of(t.method, method),
        equal(t.status_code, status_code),
        at_least(t.status_code, min_status_code),
        at_most(t.status_code, max_status_code),
        at_least(t.response_time_ms, min_response_time_ms),
        at_most(t.response_time_ms, max_response_time_ms),
        equal(t.user_id, stored_user(privacy, user_id)),
        equal(t.trace_id, trace_id and trace_id.lower()),
    )


Filters = Annotated[list[ColumnElement[bool]], Depends(request_filters)]


@router.get("", response_model=RequestPage)
def list_requests(
    databases: DatabasesDep, settings: SettingsDep, window: WindowDep, paging: PagingDep, filters: Filters
) -> Response:
    """API request logs in the window, newest first."""
    return list_page(databases, settings, api_request_logs, filters, window, paging)


@router.get("/summary", response_model=RequestSummary)
def summarise_requests(
    databases: DatabasesDep, settings: SettingsDep, window: WindowDep, size: SummarySizeDep, filters: Filters
) -> dict[str, Any]:
    """Per service, route and method: count, error rates and p50/p95/p99 response time."""
    with transaction(databases, settings, aggregate=True) as conn:
        summary = summaries.request_summary(conn, filters, window, size.limit)
    return summary | window.echo()
