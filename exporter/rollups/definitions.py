"""What the rollups keep, defined once: each rollup's source table, group keys and measures.

One definition drives the three things that must agree: the rollup tables (``schema``), the
deltas the writer adds for the rows it really inserted (``deltas``), and the SQL that rebuilds a
bucket from raw rows (``rebuild``). A key or measure is therefore given twice, as a Python
function of a mapped row and as a SQL expression over the raw table, side by side here, and a
test checks the write-time rollups against a rebuild.

Each rollup is kept at three grains: 5 minutes (time series, the edges of a window), 1 hour and
1 day (long windows: a 30-day window is 30 daily buckets and its hourly and 5-minute edges). Per
bucket and group it keeps counts and sums (added on upsert), first/last seen (least/greatest), a
latency histogram (``exporter.histogram``: the bins and their counts as two arrays in the group's
own row, merged by adding counts) and, for distinct counts (affected users, sessions), the members
themselves (one row each, so any union of buckets counts them exactly).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, case, cast, func, literal
from sqlalchemy import String as SqlString

from exporter.schema import api_request_logs, device_state_history, error_logs, job_outcomes, user_activities

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Grain:
    name: str
    width: timedelta

    def bucket(self, moment: datetime) -> datetime:
        """The start of the bucket holding ``moment`` (buckets counted from the Unix epoch)."""
        epoch = datetime(1970, 1, 1, tzinfo=moment.tzinfo)
        return epoch + (moment - epoch) // self.width * self.width

    def bucket_sql(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # date_bin from the same origin as ``bucket``: the two agree on every timestamp.
        return func.date_bin(
            literal(self.width), column, literal(datetime.fromisoformat("1970-01-01T00:00:00+00:00"))
        )


FINE = Grain("5m", timedelta(minutes=5))
COARSE = Grain("1h", timedelta(hours=1))
DAILY = Grain("1d", timedelta(days=1))
GRAINS = (FINE, COARSE, DAILY)  # finest first: each grain's width divides the next one's


@dataclass(frozen=True)
class Key:
    """A group key: never NULL in a rollup (a missing value is ``""``), so it can be in the key."""

    name: str
    of_row: Callable[[Row], str]
    of_sql: Callable[[Table], ColumnElement[Any]]
    column: str | None = None  # a plain column of the row: read in bulk by the writer


@dataclass(frozen=True)
class Measure:
    """``kind``: ``sum`` (counts, bytes), ``min`` / ``max`` (first/last seen)."""

    name: str
    kind: str
    sql_type: str  # "bigint", "float" or "timestamptz"
    of_row: Callable[[Row], Any]
    of_sql: Callable[[Table], ColumnElement[Any]]


# The groups-table columns holding a rollup's latency histogram: sorted bins, their counts.
LATENCY_BINS = "latency_bins"
LATENCY_COUNTS = "latency_counts"


@dataclass(frozen=True)
class Rollup:
    name: str
    source: Table
    keys: tuple[Key, ...]
    measures: tuple[Measure, ...]
    latency: str | None = None  # the source column whose histogram is kept (``LATENCY_BINS`` ...)
    members: str | None = None  # the source column whose distinct values are kept
    only_if: Callable[[Row], bool] | None = None  # rows that count (e.g. those with an error code)
    only_if_sql: Callable[[Table], ColumnElement[bool]] | None = None

    def table_name(self, grain: Grain, part: str = "") -> str:
        return f"rollup_{self.name}_{grain.name}" + (f"_{part}" if part else "")


def _text(column: str) -> Callable[[Row], str]:
    def value(row: Row) -> str:
        found = row.get(column)
        return "" if found is None else str(found)

    return value


def _text_sql(column: str) -> Callable[[Table], ColumnElement[Any]]:
    return lambda table: func.coalesce(cast(table.c[column], SqlString), "")


def _key(column: str) -> Key:
    return Key(column, _text(column), _text_sql(column), column)


def _count() -> Measure:
    return Measure("count", "sum", "bigint", lambda row: 1, lambda table: literal(1))


def _sum(name: str, column: str, sql_type: str = "bigint") -> Measure:
    return Measure(
        name,
        "sum",
        sql_type,
        lambda row: row.get(column) or 0,
        lambda table: func.coalesce(table.c[column], 0),
    )


def _status_class(row: Row) -> str:
    status = int(row.get("status_code") or 0)
    return f"{status // 100}xx"


def _between(column: str, low: int, high: int) -> Measure:
    return Measure(
        f"count_{low // 100}xx",
        "sum",
        "bigint",
        lambda row: 1 if low <= int(row.get(column) or 0) <= high else 0,
        lambda table: case((table.c[column].between(low, high), 1), else_=0),
    )


_SERVICE = _key("service_name")

REQUESTS = Rollup(
    "requests",
    api_request_logs,
    keys=(
        _SERVICE,
        _key("route"),
        _key("method"),
        Key(
            "status_class",
            _status_class,
            lambda table: func.concat(func.div(func.coalesce(table.c.status_code, 0), 100), "xx"),
        ),
    ),
    measures=(
        _count(),
        _between("status_code", 400, 499),
        _between("status_code", 500, 599),
        _sum("request_bytes", "request_size_bytes"),
        _sum("response_bytes", "response_size_bytes"),
        _sum("duration_ms_sum", "response_time_ms", "float"),
    ),
    latency="response_time_ms",
)

JOBS = Rollup(
    "jobs",
    job_outcomes,
    keys=(_SERVICE, _key("job_type"), _key("status")),
    measures=(_count(), _sum("retries", "retry_count"), _sum("duration_ms_sum", "duration_ms", "float")),
    latency="duration_ms",
)

JOB_ERRORS = Rollup(
    "job_errors",
    job_outcomes,
    keys=(_SERVICE, _key("job_type"), _key("error_code")),
    measures=(_count(),),
    only_if=lambda row: bool(row.get("error_code")),
    only_if_sql=lambda table: table.c.error_code.is_not(None),
)

ERRORS = Rollup(
    "errors",
    error_logs,
    keys=(_SERVICE, _key("fingerprint"), _key("category")),
    measures=(
        _count(),
        Measure(
            "first_seen", "min", "timestamptz", lambda row: row["timestamp"], lambda table: table.c.timestamp
        ),
        Measure(
            "last_seen", "max", "timestamptz", lambda row: row["timestamp"], lambda table: table.c.timestamp
        ),
    ),
    members="user_id",
)

DEVICE_STATES = Rollup(
    "device_states",
    device_state_history,
    keys=(_SERVICE, _key("previous_state"), _key("new_state")),
    measures=(_count(),),
)

ACTIVITIES = Rollup(
    "activities",
    user_activities,
    keys=(_SERVICE, _key("activity_type"), _key("page_url")),
    measures=(_count(),),
    members="session_id",
)

SEARCHES = Rollup(
    "searches",
    user_activities,
    keys=(_SERVICE, _key("search_query")),
    measures=(_count(),),
    only_if=lambda row: bool(row.get("search_query")),
    only_if_sql=lambda table: table.c.search_query.is_not(None),
)

ROLLUPS = (REQUESTS, JOBS, JOB_ERRORS, ERRORS, DEVICE_STATES, ACTIVITIES, SEARCHES)
# The writer reads plain-column keys in one call and computes the others after them.
for _rollup in ROLLUPS:
    _computed = [key.column is None for key in _rollup.keys]
    assert _computed == sorted(_computed), f"{_rollup.name}: computed keys come after plain ones"
BY_SOURCE: dict[str, tuple[Rollup, ...]] = {}
for _rollup in ROLLUPS:
    BY_SOURCE[_rollup.source.name] = (*BY_SOURCE.get(_rollup.source.name, ()), _rollup)
