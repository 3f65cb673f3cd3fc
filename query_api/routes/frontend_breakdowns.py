"""GET /user-activities/sessions and /user-activities/click-targets: what the dashboard's frontend page
shows beside the summary (sessions and users per UTC day, the elements clicked most)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import Date, cast, func, select

from exporter.schema import user_activities
from query_api.deps import DatabasesDep, SettingsDep
from query_api.filters import WindowDep
from query_api.models import ClickTargets, SessionsPerDay
from query_api.reading import transaction
from query_api.routes import user_activities as activity_routes

router = APIRouter(prefix="/user-activities", tags=["user activities"])


@router.get("/sessions", response_model=SessionsPerDay)
def sessions_per_day(
    databases: DatabasesDep, settings: SettingsDep, window: WindowDep, filters: activity_routes.Filters
) -> dict[str, Any]:
    """Per UTC day with activity: distinct sessions and distinct users, oldest day first."""
    t = user_activities.c
    # The transaction's TimeZone is UTC, so the cast to date cuts at UTC midnight.
    day = cast(t.timestamp, Date).label("day")
    statement = (
        select(
            day,
            func.count(t.session_id.distinct()).label("sessions"),
            func.count(t.user_id.distinct()).label("users"),
        )
        .where(*filters, *window.conditions(t.timestamp))
        .group_by(day)
        .order_by(day)
    )
    with transaction(databases, settings, aggregate=True) as conn:
        days = [row._asdict() for row in conn.execute(statement)]
    return {"days": days} | window.echo()


@router.get("/click-targets", response_model=ClickTargets)
def click_targets(
    databases: DatabasesDep,
    settings: SettingsDep,
    window: WindowDep,
    filters: activity_routes.Filters,
    top: Annotated[int, Query(ge=1, le=100, description="Targets to list, most clicks first.")] = 10,
) -> dict[str, Any]:
    """Per service, page and element: clicks and the distinct sessions they came from."""
    t = user_activities.c
    clicks = func.count()
    statement = (
        select(
            t.service_name,
            t.page_url,
            t.element_id,
            clicks.label("clicks"),
            func.count(t.session_id.distinct()).label("sessions"),
        )
        .where(
            *filters, *window.conditions(t.timestamp), t.activity_type == "click", t.element_id.is_not(None)
        )
        .group_by(t.service_name, t.page_url, t.element_id)
        .order_by(clicks.desc(), t.service_name, t.page_url, t.element_id)
        .limit(top)
    )
    with transaction(databases, settings, aggregate=True) as conn:
        targets = [row._asdict() for row in conn.execute(statement)]
    return {"targets": targets} | window.echo()
