"""GET /user-activities and /user-activities/summary: frontend user activity."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import ColumnElement

from exporter.schema import max_length, user_activities
from query_api import summaries
from query_api.deps import DatabasesDep, PrivacyDep, SettingsDep
from query_api.filters import (
    PagingDep,
    ServiceDep,
    SummarySizeDep,
    WindowDep,
    conditions,
    equal,
    stored_url,
    stored_user,
)
from query_api.listing import list_page
from query_api.models import UserActivityPage, UserActivitySummary
from query_api.reading import transaction

router = APIRouter(prefix="/user-activities", tags=["user activities"])
_TABLE = user_activities.name


def user_activity_filters(
    service: ServiceDep,
    privacy: PrivacyDep,
    user_id: Annotated[
        str | None, Query(max_length=max_length(_TABLE, "user_id"), description="The user.")
    ] = None,
    session_id: Annotated[
        str | None, Query(max_length=max_length(_TABLE, "session_id"), description="Browser session.")
    ] = None,
    activity_type: Annotated[
        str | None,
        Query(
            max_length=max_length(_TABLE, "activity_type"),
            description="`page_view`, `click`, `search`, `form_submit`, ...",
        ),
    ] = None,
    page_url: Annotated[
        str | None, Query(max_length=max_length(_TABLE, "page_url"), description="Exact page: `/devices`.")
    ] = None,
    element_id: Annotated[
        str | None, Query(max_length=max_length(_TABLE, "element_id"), description="HTML element id.")
    ] = None,
) -> list[ColumnElement[bool]]:
    t = user_activities.c
    return service.conditions(t) + conditions(
        equal(t.user_id, stored_user(privacy, user_id)),
        equal(t.session_id, session_id),
        equal(t.activity_type, activity_type),
        equal(t.page_url, stored_url(privacy, page_url)),
        equal(t.element_id, element_id),
    )


Filters = Annotated[list[ColumnElement[bool]], Depends(user_activity_filters)]


@router.get("", response_model=UserActivityPage)
def list_user_activities(
    databases: DatabasesDep, settings: SettingsDep, window: WindowDep, paging: PagingDep, filters: Filters
) -> Response:
    """User activities in the window, newest first."""
    return list_page(databases, settings, user_activities, filters, window, paging)


@router.get("/summary", response_model=UserActivitySummary)
def summarise_user_activities(
    databases: DatabasesDep, settings: SettingsDep, window: WindowDep, size: SummarySizeDep, filters: Filters
) -> dict[str, Any]:
    """Per service: counts by activity type, the top pages and the top search queries."""
    with transaction(databases, settings, aggregate=True) as conn:
        summary = summaries.user_activity_summary(conn, filters, window, size.limit, size.top)
    return summary | window.echo()
