"""Response models of the query API.

Row models are derived from the ``Table`` objects in ``exporter.schema``, so a column added there
appears in the API and in /docs without being named again. Summary models describe aggregates.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PlainSerializer, create_model
from sqlalchemy import Column, Table
from sqlalchemy.types import JSON

from exporter.schema import api_request_logs, device_state_history, error_logs, job_outcomes, user_activities


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


# "+00:00", as the rows PostgreSQL renders carry, rather than pydantic's "Z".
UtcDateTime = Annotated[datetime, PlainSerializer(_iso, return_type=str, when_used="json")]


def _python_type(column: Column[Any]) -> Any:
    if isinstance(column.type, JSON):
        return JsonValue
    return column.type.python_type


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def row_model(table: Table) -> type[BaseModel]:
    """A model with every column of ``table``, plus the Jaeger link of the row's trace."""
    fields: dict[str, Any] = {}
    for column in table.columns:
        python_type = _python_type(column)
        fields[column.name] = (python_type | None if column.nullable else python_type, ...)
    fields["trace_url"] = (
        str | None,
        Field(default=None, description="Jaeger UI link to the row's trace (when a Jaeger URL is set)."),
    )
    return create_model(f"{_camel(table.name)}Row", **fields)


def page_model(row: type[BaseModel]) -> type[BaseModel]:
    """``{"data": [rows], "next_cursor": ...}`` for one table's rows."""
    return create_model(
        row.__name__.removesuffix("Row") + "Page",
        data=(list[row], Field(description="Rows, newest first.")),  # type: ignore[valid-type]
        next_cursor=(
            str | None,
            Field(description="Pass as `cursor` for the next page; null when this is the last page."),
        ),
    )


RequestRow = row_model(api_request_logs)
DeviceStateRow = row_model(device_state_history)
JobRow = row_model(job_outcomes)
ErrorRow = row_model(error_logs)
UserActivityRow = row_model(user_activities)

RequestPage = page_model(RequestRow)
DeviceStatePage = page_model(DeviceStateRow)
JobPage = page_model(JobRow)
ErrorPage = page_model(ErrorRow)
UserActivityPage = page_model(UserActivityRow)


class ResolveError(BaseModel):
    """Body of PATCH /errors/{id}."""

    model_config = ConfigDict(extra="forbid")
    resolved: bool = Field(strict=True, description="true: mark resolved (now); false: reopen.")


class Window(BaseModel):
    start_date: UtcDateTime | None = Field(description="Inclusive start of the window (UTC), null: open.")
    end_date: UtcDateTime | None = Field(description="Exclusive end of the window (UTC), null: open.")


class ServiceGroup(BaseModel):
    """A summary group: every summary groups per service first."""

    service_name: str | None = Field(description="The service (``service.name``) of the group's rows.")


# --- requests ---------------------------------------------------------------------------------
class RequestStats(BaseModel):
    count: int
    server_errors: int = Field(description="Responses with status 500-599.")
    client_errors: int = Field(description="Responses with status 400-499.")
    error_rate: float = Field(description="server_errors / count.")
    client_error_rate: float = Field(description="client_errors / count.")
    avg_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


class RouteStats(ServiceGroup, RequestStats):
    route: str | None = Field(description="Route template; null for requests no route matched.")
    method: str


class RequestSummary(Window):
    total: RequestStats | None = Field(description="All requests in the window; null when there are none.")
    routes: list[RouteStats] = Field(description="Per service, route and method, most requests first.")


# --- jobs -------------------------------------------------------------------------------------
class ErrorCodeCount(BaseModel):
    error_code: str
    count: int


class JobStats(BaseModel):
    count: int
    succeeded: int
    failed: int
    timed_out: int
    cancelled: int
    success_rate: float = Field(description="succeeded / count.")
    p50_duration_ms: float | None
    p95_duration_ms: float | None
    avg_retry_count: float


class JobTypeStats(ServiceGroup, JobStats):
    job_type: str
    top_error_codes: list[ErrorCodeCount] = Field(
        description="Most frequent error codes of the service's jobs of this type, most first."
    )


class FailingDevice(ServiceGroup):
    device_id: str
    jobs: int
    failures: int = Field(description="Jobs that failed or timed out.")
    failure_rate: float = Field(description="failures / jobs.")
    last_failed_at: UtcDateTime


class FailingDevices(Window):
    devices: list[FailingDevice] = Field(description="Per service and device, most failures first.")


class JobSummary(Window):
    total: JobStats | None = Field(description="All jobs in the window; null when there are none.")
    job_types: list[JobTypeStats] = Field(description="Per service and job type, most runs first.")


# --- errors -----------------------------------------------------------------------------------
ErrorStatus = Literal["new", "ongoing", "regressed", "resolved"]


class ErrorGroup(ServiceGroup):
    fingerprint: str = Field(description="Groups occurrences of one error (type and normalised message).")
    count: int
    unresolved: int
    resolved: bool = Field(description="Every occurrence in the window is resolved.")
    first_seen: UtcDateTime
    last_seen: UtcDateTime
    category: str = Field(description="Of the latest occurrence.")
    severity: str = Field(description="Of the latest occurrence.")
    error_code: str | None = Field(description="Of the latest occurrence.")
    error_message: str = Field(description="Of the latest occurrence.")
    latest_id: int = Field(description="id of the latest occurrence (for PATCH /errors/{id}).")
    users: int = Field(
        description="Distinct affected users in the window: estimated (within a few per cent) when the "
        "summary reads the rollups, exact when a filter makes it read raw rows."
    )
    status: ErrorStatus = Field(
        description="resolved: nothing open in the window; regressed: an open occurrence after the group "
        "was resolved; new: open, first seen less than 7 days ago; ongoing: open and older."
    )
    last_resolved_at: UtcDateTime | None = Field(
        description="The latest resolution of the group's occurrences (in the window or just before it)."
    )
    first_seen_ever: UtcDateTime = Field(description="The group's first occurrence, in the window or before.")


class ErrorSummary(Window):
    groups: list[ErrorGroup] = Field(
        description="Error groups per service and fingerprint, most occurrences first."
    )


class OccurrenceRequest(BaseModel):
    """The request (``api_request_logs`` row) of an occurrence's trace."""

    timestamp: UtcDateTime
    method: str
    endpoint: str
    route: str | None
    status_code: int
    response_time_ms: float
    user_id: str | None


class ErrorOccurrence(BaseModel):
    id: int
    timestamp: UtcDateTime
    endpoint: str | None
    user_id: str | None
    device_id: str | None
    resolved: bool
    resolved_at: UtcDateTime | None
    trace_id: str | None
    trace_url: str | None = Field(description="Jaeger UI link to the trace (when a Jaeger URL is set).")
    request: OccurrenceRequest | None = Field(description="The request the occurrence came from, if stored.")


class ErrorGroupDetail(Window, ErrorGroup):
    stack_trace: str | None = Field(description="Of the latest occurrence.")
    context: JsonValue | None = Field(description="Of the latest occurrence.")
    endpoint: str | None = Field(description="Of the latest occurrence.")
    occurrences: list[ErrorOccurrence] = Field(
        description="The latest occurrences in the window, newest first."
    )


class GroupResolution(BaseModel):
    fingerprint: str
    resolved: bool
    updated: int = Field(description="Occurrences whose resolution changed.")


# --- device states ----------------------------------------------------------------------------
class Transition(ServiceGroup):
    previous_state: str | None
    new_state: str
    count: int


class DeviceChanges(ServiceGroup):
    device_id: str
    changes: int
    last_changed_at: UtcDateTime


class DeviceStateSummary(Window):
    transitions: list[Transition] = Field(description="State transitions from -> to per service, most first.")
    devices: list[DeviceChanges] = Field(description="The devices (per service) that changed state most.")


# --- user activities --------------------------------------------------------------------------
class ActivityTypeCount(ServiceGroup):
    activity_type: str
    count: int
    users: int = Field(description="Distinct user ids (estimated from the rollups, as affected users are).")
    sessions: int = Field(
        description="Distinct session ids (estimated from the rollups, as affected users are)."
    )


class PageCount(ServiceGroup):
    page_url: str
    count: int = Field(description="Activities of any type on the page.")
    page_views: int
    avg_duration_ms: float | None


class SearchCount(ServiceGroup):
    search_query: str
    count: int


class UserActivitySummary(Window):
    activity_types: list[ActivityTypeCount] = Field(
        description="Counts per service and activity type, most first."
    )
    top_pages: list[PageCount] = Field(description="Per service and page, most activities first.")
    top_searches: list[SearchCount] = Field(description="Per service and search query, most first.")


class ClickTarget(ServiceGroup):
    page_url: str | None
    element_id: str
    clicks: int
    sessions: int = Field(description="Distinct session ids.")


class ClickTargets(Window):
    targets: list[ClickTarget] = Field(description="Per service, page and element, most clicks first.")


class SessionDay(BaseModel):
    day: date = Field(description="The UTC day.")
    sessions: int = Field(description="Distinct session ids.")
    users: int = Field(description="Distinct user ids.")


class SessionsPerDay(Window):
    days: list[SessionDay] = Field(description="Days with activity, oldest first.")


# --- time series ------------------------------------------------------------------------------
class TimeSeriesWindow(BaseModel):
    interval: str = Field(description="Bucket width: 1m, 5m, 1h or 1d.")
    start_date: UtcDateTime = Field(description="Start of the window (UTC): given, or 24 h before the end.")
    end_date: UtcDateTime = Field(description="Exclusive end of the window (UTC): given, or now.")
    first_bucket: UtcDateTime = Field(
        description="Start of the first bucket: start_date floored to the interval. Buckets are whole, "
        "so the first and last may hold rows from just outside the window."
    )
    group_by: str | None = Field(description="What each series is a value of; null: one series of all rows.")
    source: str = Field(
        description="What was read: rollup_5m, rollup_1h or raw (interval 1m, other filters)."
    )


class SeriesHead(BaseModel):
    group: str | None = Field(
        description='The group\'s value ("" for rows without one); null for the "other" series and '
        "without group_by."
    )
    other: bool = Field(description="The sum of every group beyond the top ones.")


class RequestPoint(BaseModel):
    bucket: UtcDateTime
    count: int
    rate_per_s: float = Field(description="count / the interval's seconds.")
    client_error_rate: float | None = Field(description="Fraction of 4xx; null when count is 0.")
    server_error_rate: float | None = Field(description="Fraction of 5xx; null when count is 0.")
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class RequestSeries(SeriesHead):
    points: list[RequestPoint]


class RequestTimeSeries(TimeSeriesWindow):
    series: list[RequestSeries]


class JobPoint(BaseModel):
    bucket: UtcDateTime
    count: int
    success_rate: float | None = Field(description="Fraction with status success; null when count is 0.")
    p50_duration_ms: float | None
    p95_duration_ms: float | None


class JobSeries(SeriesHead):
    points: list[JobPoint]


class JobTimeSeries(TimeSeriesWindow):
    series: list[JobSeries]


class CountPoint(BaseModel):
    bucket: UtcDateTime
    count: int


class CountSeries(SeriesHead):
    points: list[CountPoint]


class CountTimeSeries(TimeSeriesWindow):
    series: list[CountSeries]
