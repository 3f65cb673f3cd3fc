"""Query parameters every analytics endpoint shares: the time window, paging, fixed value sets,
and helpers that turn optional filter values into SQL conditions.

Bad input becomes a 422 whose ``loc`` names the parameter, the same shape FastAPI gives its own
validation errors, so a client handles one error format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, Query
from pydantic import StringConstraints
from sqlalchemy import ColumnElement, tuple_
from sqlalchemy.sql.expression import ColumnClause

from exporter import conventions
from exporter.mapping import stored_actor as stored_actor_of
from exporter.privacy import Privacy
from exporter.schema import max_length
from query_api.cursor import Cursor, InvalidCursor, decode_cursor

# Filters on user ids and URLs apply the policy the service stores with: its pipeline's.
from query_api.validation import invalid

# The value sets the spec fixes; the conventions module is their one source.
if TYPE_CHECKING:
    JobStatus = str
    ErrorSeverity = str
    ErrorCategory = str
else:
    JobStatus = Literal[conventions.JOB_STATUSES]
    ErrorSeverity = Literal[conventions.ERROR_SEVERITIES]
    ErrorCategory = Literal[conventions.ERROR_CATEGORIES]

# "_OTHER" is what the stable HTTP semantic conventions record for a method they do not know.
HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "_OTHER"]

MAX_LIMIT = 1000
# Largest id PostgreSQL's bigint holds: a larger one must be a 422, not an SQL error.
MAX_ID = 2**63 - 1

# An offset's "+" that was not URL-encoded arrives as a space: "...T14:30:00 01:00".
_UNESCAPED_PLUS = re.compile(r"^(.*T[0-9:.]+) ([0-9]{2}(?::?[0-9]{2})?)$")

_DATE_HELP = (
    "ISO 8601 date (`2025-12-05`) or date-time (`2025-12-05T14:30:00+01:00`); without a zone it is UTC."
)


@dataclass(frozen=True)
class TimeWindow:
    """``start <= timestamp`` and ``timestamp < end`` (either side may be open), in UTC."""

    start: datetime | None = None
    end: datetime | None = None

    def conditions(self, column: ColumnClause[Any] | ColumnElement[Any]) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.start is not None:
            found.append(column >= self.start)
        if self.end is not None:
            found.append(column < self.end)
        return found

    def echo(self) -> dict[str, datetime | None]:
        """The window as a summary reports it."""
        return {"start_date": self.start, "end_date": self.end}


def parse_instant(value: str, *, end: bool) -> datetime | None:
    """The instant a ``start_date``/``end_date`` value stands for, as an exclusive end when ``end``.

    A date-only end covers that whole day, so it becomes the next midnight; a date-time end is
    inclusive, so it becomes one microsecond later (PostgreSQL's resolution). None: no bound
    (an end beyond the last representable day). Raises ValueError for anything else.
    """
    text = _UNESCAPED_PLUS.sub(r"\1+\2", value.strip())
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    try:
        if day is not None:
            instant = datetime.combine(day, time.min, tzinfo=UTC)
            return instant + timedelta(days=1) if end else instant
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
        return moment + timedelta(microseconds=1) if end else moment
    except OverflowError:
        if end:
            return None
        raise ValueError("date is out of range") from None


def time_window(
    start_date: Annotated[
        str | None,
        Query(description=f"Earliest timestamp included. {_DATE_HELP}", examples=["2025-12-01"]),
    ] = None,
    end_date: Annotated[
        str | None,
        Query(
            description=f"Latest timestamp included; a date-only value includes that whole day. {_DATE_HELP}",
            examples=["2025-12-05"],
        ),
    ] = None,
) -> TimeWindow:
    bounds: dict[str, datetime | None] = {}
    for name, value in (("start_date", start_date), ("end_date", end_date)):
        if value is None:
            bounds[name] = None
            continue
        try:
            bounds[name] = parse_instant(value, end=name == "end_date")
        except ValueError as error:
            raise invalid(
                name,
                f"{name} must be an ISO 8601 date (2025-12-05) or date-time "
                f"(2025-12-05T14:30:00+01:00): {error}",
                value,
            ) from None
    start, end = bounds["start_date"], bounds["end_date"]
    if start is not None and end is not None and start >= end:
        raise invalid("start_date", f"start_date ({start_date}) is after end_date ({end_date})", start_date)
    return TimeWindow(start, end)


WindowDep = Annotated[TimeWindow, Depends(time_window)]


@dataclass(frozen=True)
class Paging:
    limit: int
    cursor: Cursor | None


def paging(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Rows per page, 1 to {MAX_LIMIT}.")] = 100,
    cursor: Annotated[
        str | None,
        Query(description="Opaque `next_cursor` of the previous page; omit it for the first page."),
    ] = None,
) -> Paging:
    if cursor is None:
        return Paging(limit, None)
    try:
        return Paging(limit, decode_cursor(cursor))
    except InvalidCursor as error:
        raise invalid("cursor", f"cursor is malformed: {error}", cursor) from None


PagingDep = Annotated[Paging, Depends(paging)]


@dataclass(frozen=True)
class SummarySize:
    limit: int
    top: int


def summary_size(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Groups in the main list, largest first.")
    ] = 100,
    top: Annotated[int, Query(ge=1, le=100, description="Entries in each top-N list.")] = 10,
) -> SummarySize:
    return SummarySize(limit, top)


SummarySizeDep = Annotated[SummarySize, Depends(summary_size)]


_SERVICE_TEXT = max_length("api_request_logs", "service_name")


@dataclass(frozen=True)
class ServiceFilter:
    """Which services' rows: by name (any of several), release and environment."""

    names: tuple[str, ...] = ()
    version: str | None = None
    environment: str | None = None

    def conditions(self, columns: Any) -> list[ColumnElement[bool]]:
        """The conditions on a table's ``columns`` (``table.c``)."""
        return conditions(
            one_of(columns.service_name, self.names),
            equal(columns.service_version, self.version),
            equal(columns.deployment_environment, self.environment),
        )


def service_filter(
    service_name: Annotated[
        list[Annotated[str, StringConstraints(max_length=_SERVICE_TEXT)]] | None,
        Query(description="The service (`service.name`); repeat for several."),
    ] = None,
    service_version: Annotated[
        str | None, Query(max_length=_SERVICE_TEXT, description="The release (`service.version`).")
    ] = None,
    deployment_environment: Annotated[
        str | None,
        Query(max_length=_SERVICE_TEXT, description="The environment (`deployment.environment.name`)."),
    ] = None,
) -> ServiceFilter:
    return ServiceFilter(tuple(service_name or ()), service_version, deployment_environment)


ServiceDep = Annotated[ServiceFilter, Depends(service_filter)]


def stored_user(privacy: Privacy, value: str | None) -> str | None:
    """A user id as the mapping stores it (pseudonymised when the policy says so)."""
    return None if value is None else privacy.user(value)


def stored_actor(privacy: Privacy, value: str | None) -> str | None:
    """``changed_by``/``initiated_by`` as stored: a system actor stays readable, a user is a user id."""
    return stored_actor_of(value, privacy)


def stored_url(privacy: Privacy, value: str | None) -> str | None:
    """A path or URL as the mapping stores it."""
    return None if value is None else privacy.url(value)


def equal(column: ColumnElement[Any], value: object | None) -> ColumnElement[bool] | None:
    return None if value is None else column == value


def one_of(column: ColumnElement[Any], values: Sequence[object] | None) -> ColumnElement[bool] | None:
    return None if not values else column.in_(values)


def at_least(column: ColumnElement[Any], value: object | None) -> ColumnElement[bool] | None:
    return None if value is None else column >= value


def at_most(column: ColumnElement[Any], value: object | None) -> ColumnElement[bool] | None:
    return None if value is None else column <= value


def conditions(*candidates: ColumnElement[bool] | None) -> list[ColumnElement[bool]]:
    """The filters a request actually set."""
    return [condition for condition in candidates if condition is not None]


def ordered_range(low_name: str, low: float | None, high_name: str, high: float | None) -> None:
    """A 422 when a range's lower bound is above its upper bound."""
    if low is not None and high is not None and low > high:
        raise invalid(low_name, f"{low_name} ({low}) is greater than {high_name} ({high})", low)


def before_cursor(
    timestamp: ColumnElement[Any], row_id: ColumnElement[Any], cursor: Cursor
) -> ColumnElement[bool]:
    """Rows after ``cursor`` in newest-first order: a keyset the timestamp/id index serves."""
    return tuple_(timestamp, row_id) < tuple_(cursor.timestamp, cursor.id)
