"""The frontend's way in: ``/tracker.js`` and the user-activity intake (batches and the legacy
single event of the HOMEPOT frontend).

Accepted events become OpenTelemetry log records on the service's own event logger, so they take
the same batch processor, exporter, mapping and writer as every other record: nothing here
writes SQL, and a request never waits for the database.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, ValidationError

from exporter.events import user_activity_event
from homepot_foundation.settings import Settings
from query_api import tracker_asset
from query_api.activity_events import (
    ActivityEvent,
    describe_error,
    event_time,
    sender,
    stored_event_id,
    to_nanoseconds,
    validate_batch,
    validate_event,
)
from query_api.deps import SettingsDep
from query_api.request_body import BodyTooLarge, read_limited

logger = logging.getLogger(__name__)

router = APIRouter()

BATCH_PATH = "/api/v1/analytics/user-activities"
LEGACY_PATH = "/api/v1/analytics/user-activity"


@router.api_route("/tracker.js", methods=["GET", "HEAD"], include_in_schema=False)
def tracker_script(request: Request) -> Response:
    """The browser tracker (classic script), minified and compressed."""
    return tracker_asset.serve(request, tracker_asset.classic())


@router.api_route("/tracker.mjs", methods=["GET", "HEAD"], include_in_schema=False)
def tracker_module(request: Request) -> Response:
    """The browser tracker as an ES module: ``import HomepotAnalytics from ".../tracker.mjs"``."""
    return tracker_asset.serve(request, tracker_asset.module())


class Rejection(BaseModel):
    index: int
    error: str


class IntakeResult(BaseModel):
    accepted: int
    rejected: list[Rejection]


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, whatever its Content-Type (``sendBeacon`` posts ``text/plain`` to avoid
    a CORS preflight); 413 past ``limit`` bytes, 400 when it is not JSON."""
    try:
        body = await read_limited(request, limit)
    except BodyTooLarge as error:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(error)) from None
    if not body.strip():
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "empty body: expected JSON")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body is not valid JSON: {error}") from None


def request_user(request: Request, settings: Settings) -> str | None:
    """The verified user of a frontend request: the session cookie's JWT, else the bearer one
    (``HOMEPOT_ANALYTICS_USER_COOKIE``, checked with ``HOMEPOT_ANALYTICS_USER_TOKEN_SECRET``)."""
    cookie = request.cookies.get(settings.user_cookie) if settings.user_cookie else None
    return sender(cookie, request.headers.get("authorization"), settings.user_token_secret_value)


def _record(request: Request, events: list[ActivityEvent]) -> None:
    """Emit each event as a log record on the service's logger (the user from the token only)."""
    settings = request.app.state.settings
    user_id = request_user(request, settings)
    event_logger = request.app.state.event_logger
    received = datetime.now(UTC)
    for event in events:
        moment, replaced = event_time(event, received)
        extra = dict(event.extra_data or {})
        if replaced and event.timestamp is not None:
            extra["client_timestamp"] = event.timestamp.isoformat()
        user_activity_event(
            event.activity_type,
            user_id=user_id,
            session_id=event.session_id,
            page_url=event.page_url,
            element_id=event.element_id,
            search_query=event.search_query,
            duration_ms=event.duration,
            timestamp_ns=to_nanoseconds(moment),
            event_id=stored_event_id(event),
            extra_data=extra,
        ).emit(event_logger)


_EVENT_SCHEMA = ActivityEvent.model_json_schema()
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not JSON"},
    413: {"description": "Body or batch too large"},
    422: {"description": "Not an array of events (batch) / not a valid event (single)"},
}


@router.post(
    BATCH_PATH,
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IntakeResult,
    tags=["frontend activity"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "array", "items": _EVENT_SCHEMA}},
                "text/plain": {"schema": {"type": "string", "description": "the same JSON array"}},
            },
        }
    },
    responses={
        400: {"description": "not JSON"},
        413: {"description": "too large"},
        422: {"description": "not an array"},
    },
)
async def post_user_activities(request: Request, settings: SettingsDep) -> IntakeResult:
    """Take a batch (JSON array) of frontend events; invalid ones are reported by index."""
    payload = await read_json(request, settings.intake_max_body_bytes)
    if not isinstance(payload, list):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "body must be a JSON array of events")
    if len(payload) > settings.intake_max_batch:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"batch of {len(payload)} events; at most {settings.intake_max_batch} per request",
        )
    events, rejected = validate_batch(payload)
    _record(request, events)
    if rejected:
        logger.info("user-activity batch: %d accepted, %d rejected", len(events), len(rejected))
    return IntakeResult(accepted=len(events), rejected=[Rejection(**item) for item in rejected])


@router.post(
    LEGACY_PATH,
    status_code=status.HTTP_201_CREATED,
    tags=["frontend activity"],
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _EVENT_SCHEMA}}}
    },
    responses={
        400: {"description": "not JSON"},
        413: {"description": "too large"},
        422: {"description": "invalid"},
    },
)
async def post_user_activity(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """One event, as the existing HOMEPOT frontend sends it (kept so it needs no change)."""
    payload = await read_json(request, settings.intake_max_body_bytes)
    try:
        event = validate_event(payload)
    except ValidationError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, describe_error(error)) from None
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    _record(request, [event])
    return {"success": True, "message": "Activity logged"}
