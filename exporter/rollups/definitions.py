"""What the rollups keep, defined once: each rollup's source table, group keys and measures.

One definition drives what must agree: the rollup tables (``schema``), the SQL that builds a
bucket from raw rows (``rebuild``, run by ``refresh`` for the buckets the triggers mark stale),
and the reads that take raw rows for what the rollups do not hold yet (``query_api``). A key or
measure is a SQL expression over the raw table.

Each rollup is kept at three grains: 5 minutes (time series, the edges of a window), 1 hour and
1 day (long windows: a 30-day window is 30 daily buckets and its hourly and 5-minute edges). Per
bucket and group it keeps counts and sums, first/last seen (least/greatest), a latency
histogram (``exporter.histogram``: the bins and their counts as two arrays in the group's own
row, and packed beside them for the readers that merge many; merged by adding counts) and, for
distinct counts (affected users, sessions), a distinct sketch (``exporter.distinct_sketch``: a
HyperLogLog per group, beside it, merged by ``bit_or``, so any union of buckets estimates its
distinct members within a few per cent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Numeric, Table, case, cast, func, literal, literal_column
from sqlalchemy import String as SqlString

from exporter.schema import api_request_logs, device_state_history, error_logs, job_outcomes, user_activities


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
    of_sql: Callable[[Table], ColumnElement[Any]]


@dataclass(frozen=True)
class Measure:
    """``kind``: ``sum`` (counts, bytes), ``min`` / ``max`` (first/last seen). A ``nullable``
    measure is NULL in a group none of whose rows has a value (``max`` of no open occurrence)."""

    name: str
    kind: str
    sql_type: str  # "bigint", "float", "numeric" or "timestamptz"
    of_sql: Callable[[Table], ColumnElement[Any]]
    nullable: bool = False


# The groups-table columns holding a rollup's latency histogram: sorted bins, their counts.
LATENCY_BINS = "latency_bins"
LATENCY_COUNTS = "latency_counts"
# ... the same histogram packed (``exporter.histogram``'s packed form, in the arrays' order): what
# a read that merges many rows' histograms fetches, with no work per element at read time.
PACKED_BINS = "latency_bins_packed"
PACKED_COUNTS = "latency_counts_packed"
# ... and its quantiles, ranked when the row is built: a time-series point that is exactly one
# row (a route's hour) reads them instead of adding up the row's bins (fraction -> column).
STORED_QUANTILES: dict[float, str] = {0.5: "latency_p50", 0.95: "latency_p95", 0.99: "latency_p99"}


def sketch_column(counted: str) -> str:
    """The column of a ``rollup_*_sketches`` table holding the distinct sketch of the source column
    ``counted``."""
    return f"{counted}_sketch"


@dataclass(frozen=True)
class Rollup:
    name: str
    source: Table
    keys: tuple[Key, ...]
    measures: tuple[Measure, ...]
    latency: str | None = None  # the source column whose histogram is kept (``LATENCY_BINS`` ...)
    distinct: tuple[str, ...] = ()  # source columns whose distinct values are counted (``sketch_column``)
    only_if_sql: Callable[[Table], ColumnElement[bool]] | None = None

    def table_name(self, grain: Grain, part: str = "") -> str:
        return f"rollup_{self.name}_{grain.name}" + (f"_{part}" if part else "")


def _text_sql(column: str) -> Callable[[Table], ColumnElement[Any]]:
    return lambda table: func.coalesce(cast(table.c[column], SqlString), "")


def _key(column: str) -> Key:
    return Key(column, _text_sql(column))


def _count() -> Measure:
    return Measure("count", "sum", "bigint", lambda table: literal(1))


def _sum(name: str, column: str, sql_type: str = "bigint") -> Measure:
    return Measure(
        name,
        "sum",
        sql_type,
        lambda table: func.coalesce(table.c[column], 0),
    )


def _between(column: str, low: int, high: int) -> Measure:
    return Measure(
        f"count_{low // 100}xx",
        "sum",
        "bigint",
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

# The request latency per route alone, beside REQUESTS (which splits it by status class): a
# route's summary or series merges one histogram per bucket here instead of one per status class
# (four to five times fewer bins to add up). Read when no filter needs the status class.
ROUTE_LATENCY = Rollup(
    "route_latency",
    api_request_logs,
    keys=(_SERVICE, _key("route"), _key("method")),
    measures=(_count(),),
    latency="response_time_ms",
)

JOBS = Rollup(
    "jobs",
    job_outcomes,
    keys=(_SERVICE, _key("job_type"), _key("status")),
    measures=(_count(), _sum("retries", "retry_count"), _sum("duration_ms_sum", "duration_ms", "float")),
    latency="duration_ms",
)

# The job duration per type alone, beside JOBS (which splits it by status): as ROUTE_LATENCY is
# for requests, a type's series point is one row here, with its stored quantiles.
JOB_LATENCY = Rollup(
    "job_latency",
    job_outcomes,
    keys=(_SERVICE, _key("job_type")),
    measures=(_count(),),
    latency="duration_ms",
)

JOB_ERRORS = Rollup(
    "job_errors",
    job_outcomes,
    keys=(_SERVICE, _key("job_type"), _key("error_code")),
    measures=(_count(),),
    only_if_sql=lambda table: table.c.error_code.is_not(None),
)

# The latest occurrence of a group as one number that max() ranks as the raw rows' order (by
# timestamp, then id): microseconds since the epoch, then the id in the last 20 digits.
_ID_DIGITS = literal_column("100000000000000000000::numeric", Numeric)


def _occurrence_key(table: Table) -> ColumnElement[Any]:
    micros = func.floor(func.extract("epoch", table.c.timestamp) * 1_000_000)
    return cast(micros, Numeric) * _ID_DIGITS + table.c.id


def occurrence_id_sql(key: ColumnElement[Any]) -> ColumnElement[int]:
    """The raw row id in a ``latest_occurrence``."""
    return cast(func.mod(key, _ID_DIGITS), BigInteger)


ERRORS = Rollup(
    "errors",
    error_logs,
    keys=(_SERVICE, _key("fingerprint"), _key("category")),
    measures=(
        _count(),
        Measure("first_seen", "min", "timestamptz", lambda table: table.c.timestamp),
        Measure("last_seen", "max", "timestamptz", lambda table: table.c.timestamp),
        # What a group's status needs (``query_api.error_status``): resolution is a column of the
        # raw rows, changed by an UPDATE, which the triggers mark like any other write.
        Measure("unresolved", "sum", "bigint", lambda table: case((table.c.resolved, 0), else_=1)),
        Measure(
            "latest_open",
            "max",
            "timestamptz",
            lambda table: case((~table.c.resolved, table.c.timestamp)),
            nullable=True,
        ),
        Measure(
            "latest_resolved_at",
            "max",
            "timestamptz",
            lambda table: case((table.c.resolved, table.c.resolved_at)),
            nullable=True,
        ),
        # NULL only in buckets older than migration 8 whose raw rows were already purged.
        Measure("latest_occurrence", "max", "numeric", _occurrence_key, nullable=True),
    ),
    distinct=("user_id",),
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
    measures=(
        _count(),
        # The average time on a page: a sum and a count of the rows that have one.
        _sum("duration_ms_sum", "duration_ms", "float"),
        Measure(
            "duration_count",
            "sum",
            "bigint",
            lambda table: case((table.c.duration_ms.is_not(None), 1), else_=0),
        ),
    ),
    distinct=("user_id", "session_id"),
)

SEARCHES = Rollup(
    "searches",
    user_activities,
    keys=(_SERVICE, _key("search_query")),
    measures=(_count(),),
    only_if_sql=lambda table: table.c.search_query.is_not(None),
)

ROLLUPS = (
    REQUESTS,
    ROUTE_LATENCY,
    JOBS,
    JOB_LATENCY,
    JOB_ERRORS,
    ERRORS,
    DEVICE_STATES,
    ACTIVITIES,
    SEARCHES,
)
BY_SOURCE: dict[str, tuple[Rollup, ...]] = {}
for _rollup in ROLLUPS:
    BY_SOURCE[_rollup.source.name] = (*BY_SOURCE.get(_rollup.source.name, ()), _rollup)
