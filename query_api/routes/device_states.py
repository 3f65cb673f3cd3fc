"""GET /device-states and /device-states/summary: the device state history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import ColumnElement, Text, cast

from exporter.schema import device_state_history, max_length
from query_api import summaries
from query_api.deps import DatabasesDep, PrivacyDep, SettingsDep
from query_api.filters import (
    PagingDep,
    ServiceDep,
    SummarySizeDep,
    WindowDep,
    conditions,
    equal,
    stored_actor,
)
from query_api.listing import list_page
from query_api.models import DeviceStatePage, DeviceStateSummary
from query_api.reading import transaction

router = APIRouter(prefix="/device-states", tags=["device states"])
_TABLE = device_state_history.name


def device_state_filters(
    service: ServiceDep,
    privacy: PrivacyDep,
    device_id: Annotated[
        str | None, Query(max_length=max_length(_TABLE, "device_id"), description="The device.")
    ] = None,
    previous_state: Annotated[
        str | None,
        Query(max_length=max_length(_TABLE, "previous_state"), description="State before: `online`."),
    ] = None,
    new_state: Annotated[
        str | None,
        Query(max_length=max_length(_TABLE, "new_state"), description="State after: `offline`."),
    ] = None,
    changed_by: Annotated[
        str | None,
        Query(
            max_length=max_length(_TABLE, "changed_by"),
            description="A user id, or a system actor (`system`, `orchestrator`, ...).",
        ),
    ] = None,
) -> list[ColumnElement[bool]]:
    t = device_state_history.c
    return service.conditions(t) + conditions(
        # Compared as text: a table shared with HOMEPOT keeps its integer device key there.
        equal(cast(t.device_id, Text), device_id),
        equal(t.previous_state, previous_state),
        equal(t.new_state, new_state),
        equal(t.changed_by, stored_actor(privacy, changed_by)),
    )


Filters = Annotated[list[ColumnElement[bool]], Depends(device_state_filters)]


@router.get("", response_model=DeviceStatePage)
def list_device_states(
    databases: DatabasesDep, settings: SettingsDep, window: WindowDep, paging: PagingDep, filters: Filters
) -> Response:
    """Device state changes in the window, newest first."""
    return list_page(databases, settings, device_state_history, filters, window, paging)


@router.get("/summary", response_model=DeviceStateSummary)
def summarise_device_states(
    databases: DatabasesDep, settings: SettingsDep, window: WindowDep, size: SummarySizeDep, filters: Filters
) -> dict[str, Any]:
    """Per service: transition counts from -> to, and the devices that change state most."""
    with transaction(databases, settings, aggregate=True) as conn:
        summary = summaries.device_state_summary(conn, filters, window, size.limit, size.top)
    return summary | window.echo()
