"""GET and PATCH /errors/groups/{fingerprint}: one error group, Sentry-style, and its resolution.

A group is every occurrence of one fingerprint in one service. Resolving it resolves every
occurrence stored so far; the next one to arrive is open again, and the summary calls the group
``regressed``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlalchemy import Connection, and_, case, exists, func, literal, null, select, true, update

from exporter.schema import api_request_logs, error_logs, max_length
from query_api import summaries
from query_api.deps import DatabasesDep, SettingsDep
from query_api.filters import ServiceDep, ServiceFilter, WindowDep
from query_api.models import ErrorGroupDetail, GroupResolution, ResolveError
from query_api.reading import transaction

router = APIRouter(prefix="/errors/groups", tags=["errors"])

FingerprintPath = Annotated[
    str,
    Path(
        max_length=max_length(error_logs.name, "fingerprint"),
        pattern="^[0-9A-Za-z_.:-]+$",
        description="The group's `fingerprint` (from /errors/summary).",
    ),
]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No occurrence of the group (in the window)."}
}


def _trace_url(jaeger_url: str | None, trace_id: Any) -> Any:
    if not jaeger_url:
        return null()
    return case((trace_id.is_not(None), literal(f"{jaeger_url.rstrip('/')}/trace/") + trace_id))


def _occurrences(
    conn: Connection, where: list[Any], jaeger_url: str | None, limit: int
) -> list[dict[str, Any]]:
    """The latest occurrences, each with the request its trace came from (if it was stored)."""
    e, r = error_logs.c, api_request_logs.c
    # A trace may cross services: the request of the error's own service first.
    request = (
        select(
            r.timestamp,
            r.method,
            r.endpoint,
            r.route,
            r.status_code,
            r.response_time_ms,
            r.user_id,
        )
        .where(r.trace_id == e.trace_id)
        .order_by(r.service_name.is_not_distinct_from(e.service_name).desc(), r.timestamp)
        .limit(1)
        .lateral("request")
    )
    statement = (
        select(
            e.id,
            e.timestamp,
            e.endpoint,
            e.user_id,
            e.device_id,
            e.resolved,
            e.resolved_at,
            e.trace_id,
            _trace_url(jaeger_url, e.trace_id).label("trace_url"),
            func.to_jsonb(request.table_valued()).label("request"),
            request.c.timestamp.is_not(None).label("has_request"),
        )
        .select_from(error_logs.outerjoin(request, true()))
        .where(*where)
        .order_by(e.timestamp.desc(), e.id.desc())
        .limit(limit)
    )
    found = []
    for row in conn.execute(statement):
        occurrence = row._asdict()
        if not occurrence.pop("has_request"):
            occurrence["request"] = None
        found.append(occurrence)
    return found


@router.get("/{fingerprint}", response_model=ErrorGroupDetail, responses=_NOT_FOUND)
def error_group(
    databases: DatabasesDep,
    settings: SettingsDep,
    window: WindowDep,
    service: ServiceDep,
    fingerprint: FingerprintPath,
    occurrences: Annotated[int, Query(ge=1, le=100, description="Latest occurrences to list.")] = 20,
) -> dict[str, Any]:
    """One group: its status and counts, the latest stack trace, and its latest occurrences with
    the request each came from and its trace."""
    t = error_logs.c
    filters = [*service.conditions(t), t.fingerprint == fingerprint]
    with transaction(databases, settings, aggregate=True) as conn:
        groups = summaries.error_summary(conn, filters, window, 1)["groups"]
        if not groups:
            raise HTTPException(
                status_code=status.HTTP_404_NOT_FOUND,
                detail=f"No occurrence of error group {fingerprint} in the window.",
            )
        group = groups[0]
        latest = conn.execute(
            select(t.stack_trace, t.context, t.endpoint).where(t.id == group["latest_id"])
        ).one()
        same_service = t.service_name.is_not_distinct_from(group["service_name"])
        where = [*filters, same_service, *window.conditions(t.timestamp)]
        listed = _occurrences(conn, where, settings.jaeger_url, occurrences)
    return group | latest._asdict() | {"occurrences": listed} | window.echo()


def _group_where(fingerprint: str, service: ServiceFilter) -> list[Any]:
    return [*service.conditions(error_logs.c), error_logs.c.fingerprint == fingerprint]


@router.patch("/{fingerprint}", response_model=GroupResolution, responses=_NOT_FOUND)
def resolve_group(
    databases: DatabasesDep,
    settings: SettingsDep,
    service: ServiceDep,
    fingerprint: FingerprintPath,
    body: ResolveError,
) -> dict[str, Any]:
    """Resolve every occurrence of the group stored so far (resolved_at = now; one resolved before
    keeps its time), or reopen them all (resolved_at = null)."""
    t = error_logs.c
    where = _group_where(fingerprint, service)
    if body.resolved:
        changing = [t.resolved.is_(False) | t.resolved_at.is_(None)]
        values = {"resolved": True, "resolved_at": func.coalesce(t.resolved_at, func.now())}
    else:
        changing = [t.resolved.is_(True) | t.resolved_at.is_not(None)]
        values = {"resolved": False, "resolved_at": null()}
    with transaction(databases, settings, write=True) as conn:
        updated = conn.execute(update(error_logs).where(*where, *changing).values(**values)).rowcount
        if not updated and not conn.execute(select(exists().where(and_(*where)))).scalar():
            raise HTTPException(
                status_code=status.HTTP_404_NOT_FOUND, detail=f"No occurrence of error group {fingerprint}."
            )
    return {"fingerprint": fingerprint, "resolved": body.resolved, "updated": updated}
