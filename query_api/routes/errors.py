"""GET /errors, /errors/summary and PATCH /errors/{id}: the error logs and their resolution."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from sqlalchemy import ColumnElement, func, null, update

from exporter.schema import error_logs, max_length
from query_api import summaries
from query_api.deps import DatabasesDep, PrivacyDep, SettingsDep
from query_api.filters import (
    MAX_ID,
    ErrorCategory,
    ErrorSeverity,
    PagingDep,
    ServiceDep,
    SummarySizeDep,
    WindowDep,
    conditions,
    equal,
    one_of,
    stored_url,
    stored_user,
)
from query_api.listing import list_page, row_json
from query_api.models import ErrorPage, ErrorRow, ErrorSummary, ResolveError
from query_api.reading import transaction

router = APIRouter(prefix="/errors", tags=["errors"])
_TABLE = error_logs.name


def error_filters(
    service: ServiceDep,
    privacy: PrivacyDep,
    category: Annotated[
        list[ErrorCategory] | None, Query(description="Category; repeat for several.")
    ] = None,
    severity: Annotated[
        list[ErrorSeverity] | None, Query(description="Severity; repeat for several.")
    ] = None,
    error_code: Annotated[
        str | None,
        Query(max_length=max_length(_TABLE, "error_code"), description="Error code: `E_DB_TIMEOUT`."),
    ] = None,
    resolved: Annotated[bool | None, Query(description="true: resolved only; false: open only.")] = None,
    endpoint: Annotated[
        str | None, Query(max_length=max_length(_TABLE, "endpoint"), description="Exact API path.")
    ] = None,
    user_id: Annotated[
        str | None, Query(max_length=max_length(_TABLE, "user_id"), description="The affected user.")
    ] = None,
    device_id: Annotated[
        str | None, Query(max_length=max_length(_TABLE, "device_id"), description="The related device.")
    ] = None,
    fingerprint: Annotated[
        str | None,
        Query(
            max_length=max_length(_TABLE, "fingerprint"), description="One error group of /errors/summary."
        ),
    ] = None,
    trace_id: Annotated[
        str | None, Query(pattern="^[0-9a-fA-F]{32}$", description="OpenTelemetry trace id (32 hex).")
    ] = None,
) -> list[ColumnElement[bool]]:
    t = error_logs.c
    return service.conditions(t) + conditions(
        one_of(t.category, category),
        one_of(t.severity, severity),
        equal(t.error_code, error_code),
        equal(t.resolved, resolved),
        equal(t.endpoint, stored_url(privacy, endpoint)),
        equal(t.user_id, stored_user(privacy, user_id)),
        equal(t.device_id, device_id),
        equal(t.fingerprint, fingerprint),
        equal(t.trace_id, trace_id and trace_id.lower()),
    )


Filters = Annotated[list[ColumnElement[bool]], Depends(error_filters)]


@router.get("", response_model=ErrorPage)
def list_errors(
    databases: DatabasesDep, settings: SettingsDep, window: WindowDep, paging: PagingDep, filters: Filters
) -> Response:
    """Error logs in the window, newest first."""
    return list_page(databases, settings, error_logs, filters, window, paging)


@router.get("/summary", response_model=ErrorSummary)
def summarise_errors(
    databases: DatabasesDep, settings: SettingsDep, window: WindowDep, size: SummarySizeDep, filters: Filters
) -> dict[str, Any]:
    """Errors per service and fingerprint: count, first/last seen, resolved, latest message."""
    with transaction(databases, settings, aggregate=True) as conn:
        summary = summaries.error_summary(conn, filters, window, size.limit)
    return summary | window.echo()


@router.patch("/{error_id}", response_model=ErrorRow, responses={404: {"description": "No such error."}})
def resolve_error(
    databases: DatabasesDep,
    settings: SettingsDep,
    error_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The error's `id`.")],
    body: ResolveError,
) -> Response:
    """Mark one error resolved (resolved_at = now) or open again (resolved_at = null)."""
    t = error_logs.c
    # Resolving twice keeps the first resolution time: PATCH stays idempotent.
    resolved_at = func.coalesce(t.resolved_at, func.now()) if body.resolved else null()
    statement = (
        update(error_logs)
        .where(t.id == error_id)
        .values(resolved=body.resolved, resolved_at=resolved_at)
        .returning(row_json(error_logs, settings.jaeger_url))
    )
    with transaction(databases, settings, write=True) as conn:
        row = conn.execute(statement).scalar_one_or_none()
    if row is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"No error with id {error_id}.")
    return Response(row, media_type="application/json")
