"""``POST /api/v1/analytics/error``: errors the frontend reports (HOMEPOT's ``trackError``), as
HOMEPOT's own endpoint took them, into ``error_logs``.

The body is what HOMEPOT's frontend sends, ``{category, severity, message | error_message,
extra_data | context: {page_url}}`` (optionally ``error_code``, ``stack_trace``, ``endpoint``,
``device_id``). The user comes from the request's session cookie or bearer token, never from the
body; privacy applies as to every row (the mapping masks and pseudonymises). The answer is
HOMEPOT's: 201 ``{"success": true, "message": "Error logged"}``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from exporter import conventions as c
from exporter.events import error_event
from query_api.activity_events import describe_error
from query_api.deps import SettingsDep
from query_api.intake import read_json, request_user

router = APIRouter()

ERROR_PATH = "/api/v1/analytics/error"

# What frontends call their categories, as the spec's (HOMEPOT's trackError: "client_error" by
# default, "api_error", "validation_error").
_CATEGORY_ALIASES = {
    "client": "frontend",
    "client_error": "frontend",
    "ui": "frontend",
    "unknown": "other",
}


class FrontendError(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    category: str = "frontend"
    severity: str = "error"
    message: str = Field(min_length=1, validation_alias=AliasChoices("error_message", "message"))
    error_code: str | None = None
    stack_trace: str | None = None
    endpoint: str | None = None
    device_id: str | None = None
    context: dict[str, Any] | None = Field(
        default=None, validation_alias=AliasChoices("context", "extra_data")
    )

    @field_validator("category", mode="before")
    @classmethod
    def _known_category(cls, value: Any) -> str:
        name = str(value).strip().lower()
        name = _CATEGORY_ALIASES.get(name, name)
        if name.endswith("_error") and name[: -len("_error")] in c.ERROR_CATEGORIES:
            name = name[: -len("_error")]
        if name not in c.ERROR_CATEGORIES:
            raise ValueError(f"unknown category {value!r}; use one of {', '.join(c.ERROR_CATEGORIES)}")
        return name

    @field_validator("severity", mode="before")
    @classmethod
    def _known_severity(cls, value: Any) -> str:
        name = str(value).strip().lower()
        if name not in c.ERROR_SEVERITIES:
            raise ValueError(f"unknown severity {value!r}; use one of {', '.join(c.ERROR_SEVERITIES)}")
        return name

    @property
    def page_path(self) -> str | None:
        """The path of the page it happened on (``context.page_url``), query and host left out."""
        page = (self.context or {}).get("page_url")
        if not isinstance(page, str) or not page:
            return None
        return urlsplit(page).path or "/"


@router.post(
    ERROR_PATH,
    status_code=status.HTTP_201_CREATED,
    tags=["frontend activity"],
    responses={
        400: {"description": "not JSON"},
        413: {"description": "too large"},
        422: {"description": "invalid"},
    },
)
async def post_frontend_error(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """One error a frontend saw (HOMEPOT's ``trackError``), stored in ``error_logs``."""
    payload = await read_json(request, settings.intake_max_body_bytes)
    if not isinstance(payload, dict):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "body must be a JSON object")
    try:
        error = FrontendError.model_validate(payload)
    except ValidationError as invalid:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, describe_error(invalid)) from None
    error_event(
        error.category,
        error.severity,
        error.error_code,
        error.message,
        exception_type=None,
        stack_trace=error.stack_trace,
        endpoint=error.endpoint or error.page_path,
        user_id=request_user(request, settings),
        device_id=error.device_id,
        context=error.context or {},
    ).emit(request.app.state.event_logger)
    return {"success": True, "message": "Error logged"}
