"""Time series of the five tables: per bucket counts, rates and latency quantiles, in SQL.

Read from the rollups (``exporter.rollups``) when they can answer: interval 5m from the 5-minute
grain, 1h from the hourly one, 1d from the daily one. The rollups keep no
minutes and key only ``service_name`` among the filters, so interval 1m, or any other filter
(``service_version``, ``user_id``, an endpoint path ...), reads the raw rows instead, with the
same SQL shape: the same keys and measures (their definitions' SQL over the raw table), the
same buckets (``date_bin`` from the Unix epoch), the same latency histogram (quantiles within
1 % of ``percentile_cont``). Either way the answer is the same.

Buckets are whole: the series holds the buckets whose start is at or after ``floor(start)`` and
before ``end``, each with every row of the bucket (the rollups hold no part of one). The first and
last buckets may therefore count rows somewhat before ``start`` and after ``end``.

Groups: the ``top`` biggest groups over the window (by count) get a series each, in that order;
every other group is summed into one last "other" series, whose quantiles come from its merged
histogram bins. Every series has every bucket: ``generate_series`` of the bucket starts crossed
with the series, LEFT JOINed to the aggregates, so an empty bucket counts 0 (quantiles NULL).

Pure: this module builds statements and plans; ``query_api.routes.timeseries`` runs them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    CompoundSelect,
    Double,
    Integer,
    Select,
    Table,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    true,
)
from sqlalchemy.sql import ColumnCollection

from exporter.histogram import (
    bucket_sql,
    packed_bin_sql,
    packed_count_sql,
    packed_join_sql,
    quantiles_of_packed_points,
)
from exporter.rollups.definitions import (
    ACTIVITIES,
    COARSE,
    DAILY,
    DEVICE_STATES,
    ERRORS,
    FINE,
    GRAINS,
    JOB_LATENCY,
    JOBS,
    LATENCY_BINS,
    LATENCY_COUNTS,
    PACKED_BINS,
    PACKED_COUNTS,
    REQUESTS,
    ROUTE_LATENCY,
    STORED_QUANTILES,
    Grain,
    Rollup,
)
from exporter.rollups.schema import tables_of
from query_api.filters import TimeWindow
from query_api.rollup_reads import Piece, split, union_of

INTERVALS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
# The rollup grain each interval reads (None: raw rows).
_GRAIN_OF: dict[str, Grain | None] = {"1m": None, "5m": FINE, "1h": COARSE, "1d": DAILY}

MAX_POINTS = 10_000  # buckets x series in one answer
MAX_TOP = 50
DEFAULT_TOP = 10
DEFAULT_WINDOW = timedelta(hours=24)  # when start_date is not given: the 24 hours before the end
TRANSITION_ARROW = "→"

Columns = ColumnCollection[str, Any]
Aggregate = Callable[[Columns], ColumnElement[Any]]


class TimeSeriesError(ValueError):
    """A request this module refuses: a 422 for ``parameter``."""

    def __init__(self, parameter: str, message: str, value: object) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value


@dataclass(frozen=True)
class TableSeries:
    """What one table's time series holds.

    ``group_by`` maps an accepted ``group_by`` value to the rollup keys it is made of (two keys
    are joined by an arrow: a transition). ``measures`` are the rollup measures the source reads;
    ``aggregates`` sum them per bucket and series; ``quantiles`` name the latency quantiles."""

    name: str
    rollup: Rollup
    group_by: Mapping[str, tuple[str, ...]]
    measures: tuple[str, ...] = ("count",)
    aggregates: Mapping[str, Aggregate] = field(
        default_factory=lambda: {"count": lambda c: func.sum(c["count"])}
    )
    quantiles: Mapping[str, float] = field(default_factory=dict)
    # A rollup with fewer keys whose histograms answer the groupings it has all the keys of.
    latency_rollup: Rollup | None = None

    def latency_rollup_for(self, group_by: str | None) -> Rollup:
        """The rollup to read the latency of a ``group_by`` series from: the narrower one when
        it has the keys (fewer histograms per point to add up), else the series' own."""
        narrower = self.latency_rollup
        if narrower is None:
            return self.rollup
        keys = {key.name for key in narrower.keys}
        return narrower if set(self.group_by.get(group_by, ()) if group_by else ()) <= keys else self.rollup

    def group_sql(self, group_by: str, columns: Columns) -> ColumnElement[Any]:
        keys = [columns[key] for key in self.group_by[group_by]]
        if len(keys) == 1:
            return keys[0]
        return func.concat(keys[0], TRANSITION_ARROW, keys[1])


def _sum(column: str) -> Aggregate:
    return lambda c: cast(func.sum(c[column]), BigInteger)


REQUEST_SERIES = TableSeries(
    "requests",
    REQUESTS,
    group_by={
        "route": ("route",),
        "service_name": ("service_name",),
        "status_class": ("status_class",),
        "method": ("method",),
    },
    measures=("count", "count_4xx", "count_5xx"),
    aggregates={
        "count": _sum("count"),
        "client_errors": _sum("count_4xx"),
        "server_errors": _sum("count_5xx"),
    },
    quantiles={"p50_ms": 0.5, "p95_ms": 0.95, "p99_ms": 0.99},
    latency_rollup=ROUTE_LATENCY,
)
JOB_SERIES = TableSeries(
    "jobs",
    JOBS,
    group_by={"job_type": ("job_type",), "service_name": ("service_name",), "status": ("status",)},
    aggregates={
        "count": _sum("count"),
        "succeeded": lambda c: cast(
            func.coalesce(func.sum(c["count"]).filter(c.status == "success"), 0), BigInteger
        ),
    },
    quantiles={"p50_duration_ms": 0.5, "p95_duration_ms": 0.95},
    latency_rollup=JOB_LATENCY,
)
ERROR_SERIES = TableSeries(
    "errors",
    ERRORS,
    group_by={
        "fingerprint": ("fingerprint",),
        "category": ("category",),
        "service_name": ("service_name",),
    },
)
DEVICE_STATE_SERIES = TableSeries(
    "device_states",
    DEVICE_STATES,
    group_by={"transition": ("previous_state", "new_state"), "service_name": ("service_name",)},
)
USER_ACTIVITY_SERIES = TableSeries(
    "user_activities",
    ACTIVITIES,
    group_by={
        "activity_type": ("activity_type",),
        "page_url": ("page_url",),
        "service_name": ("service_name",),
    },
)


@dataclass(frozen=True)
class Plan:
    """Where a series reads and which buckets it has: starts ``first``, ``first + width``, ...,
    ``last``; the source is read for ``[first, upper)``."""

    interval: str
    width: timedelta
    first: datetime
    last: datetime
    upper: datetime
    buckets: int
    grain: Grain | None  # None: raw rows
    start: datetime
    end: datetime
    stale_from: datetime | None = None  # the rollups are behind the raw rows from here on

    @property
    def source(self) -> str:
        return "raw" if self.grain is None else f"rollup_{self.grain.name}"

    @property
    def bucket_grain(self) -> Grain:
        return Grain(self.interval, self.width)


def plan(
    window: TimeWindow,
    interval: str,
    *,
    series: int,
    raw: bool,
    now: datetime | None = None,
) -> Plan:
    """The buckets of ``window`` at ``interval`` (``series``: the most series the answer may
    have); raises TimeSeriesError when the answer would hold more than MAX_POINTS points."""
    if interval not in INTERVALS:
        accepted = ", ".join(INTERVALS)
        raise TimeSeriesError("interval", f"interval must be one of {accepted}", interval)
    width = INTERVALS[interval]
    grain = None if raw else _GRAIN_OF[interval]
    try:
        end = window.end or (now or datetime.now(UTC))
        start = window.start or end - DEFAULT_WINDOW
        if start >= end:
            raise TimeSeriesError(
                "start_date", f"start_date ({start.isoformat()}) is not before the end (now)", start
            )
        step = Grain(interval, width)
        first = step.bucket(start)
        buckets = -(-(end - first) // width)  # buckets starting before end
        if buckets * series > MAX_POINTS:
            raise TimeSeriesError(
                "interval",
                f"{buckets} buckets x {series} series is more than {MAX_POINTS} points: "
                "widen the interval, shorten the window or lower top",
                interval,
            )
        last = first + (buckets - 1) * width
        upper = last + width
    except OverflowError:
        raise TimeSeriesError(
            "end_date" if window.end is not None else "start_date",
            f"the window's buckets at interval {interval} run past the calendar",
            window.end or window.start,
        ) from None
    return Plan(interval, width, first, last, upper, buckets, grain, start, end)


def pieces(plan: Plan) -> list[Piece]:
    """What ``[first, upper)`` is read from: the plan's grain (and finer ones towards the edges)
    up to ``stale_from``, raw rows after it; raw rows throughout when the plan says so."""
    if plan.grain is None:
        return [Piece(None, plan.first, plan.upper)]
    grains = tuple(grain for grain in GRAINS if grain.width <= plan.grain.width)
    return split(TimeWindow(plan.first, plan.upper), plan.stale_from, grains)


def _raw_select(
    rollup: Rollup,
    plan: Plan,
    piece: Piece,
    raw_filters: Sequence[ColumnElement[bool]],
    names: Sequence[str],
    *columns: Any,
) -> Select[Any]:
    """Raw rows of ``piece``: ``raw_filters`` when the whole answer is raw, the service ``names``
    when raw rows stand in for the rollups (where these are stale)."""
    table = rollup.source
    query = select(
        plan.bucket_grain.bucket_sql(table.c.timestamp).label("bucket"),
        *(key.of_sql(table).label(key.name) for key in rollup.keys),
        *columns,
    ).where(*TimeWindow(piece.low, piece.high).conditions(table.c.timestamp), *raw_filters)
    if names:
        query = query.where(table.c.service_name.in_(list(names)))
    if rollup.only_if_sql is not None:
        query = query.where(rollup.only_if_sql(table))
    return query


def _rollup_select(
    rollup: Rollup, plan: Plan, piece: Piece, names: Sequence[str], *columns: Any
) -> Select[Any]:
    assert piece.grain is not None
    groups = tables_of(rollup, piece.grain)["groups"]
    bucket = groups.c.bucket
    rebinned = bucket if piece.grain.width == plan.width else plan.bucket_grain.bucket_sql(bucket)
    where = [bucket >= piece.low, bucket < piece.high]
    if names:
        where.append(groups.c.service_name.in_(list(names)))
    return select(
        rebinned.label("bucket"),
        *(groups.c[key.name] for key in rollup.keys),
        *(column(groups) for column in columns),
    ).where(*where)


def _source(
    spec: TableSeries, plan: Plan, raw_filters: Sequence[ColumnElement[bool]], names: Sequence[str]
) -> Select[Any] | CompoundSelect[Any]:
    """One row per rollup group (or raw row): ``bucket`` (at the plan's interval), the keys, the
    measures."""
    measures = {measure.name: measure for measure in spec.rollup.measures}
    table = spec.rollup.source
    raw_measures = [measures[name].of_sql(table).label(name) for name in spec.measures]
    selects = [
        _raw_select(spec.rollup, plan, piece, raw_filters, names, *raw_measures)
        if piece.grain is None
        else _rollup_select(spec.rollup, plan, piece, names, *(_column(n) for n in spec.measures))
        for piece in pieces(plan)
    ]
    return union_of(selects)


def _column(name: str) -> Callable[[Table], ColumnElement[Any]]:
    return lambda groups: groups.c[name]


def _latency_sources(
    rollup: Rollup, plan: Plan, raw_filters: Sequence[ColumnElement[bool]], names: Sequence[str]
) -> tuple[list[Select[Any]], list[Select[Any]]]:
    """``rollup``'s latency over the plan's pieces, in two parts: the rollup rows of the plan's own
    grain, ``(bucket, keys..., packed bins, packed counts, stored quantiles...)`` (each a whole
    point's worth of its group), and the rest in long format, ``(bucket, keys..., bin, count)``:
    the finer buckets towards a stale edge, unnested, and raw rows, a count of 1 each."""
    assert rollup.latency is not None
    latency = rollup.source.c[rollup.latency]
    whole: list[Select[Any]] = []
    long: list[Select[Any]] = []
    for piece in pieces(plan):
        if piece.grain is None:
            raw = _raw_select(
                rollup,
                plan,
                piece,
                raw_filters,
                names,
                bucket_sql(latency).label("bin"),
                cast(literal(1), BigInteger).label("count"),
            )
            long.append(raw.where(latency.is_not(None)))
        elif piece.grain.width == plan.width:
            stored = [PACKED_BINS, PACKED_COUNTS, *STORED_QUANTILES.values()]
            whole.append(_rollup_select(rollup, plan, piece, names, *(_column(name) for name in stored)))
        else:
            # Two unnests in one select list walk their arrays side by side: (bin, count) pairs.
            long.append(
                _rollup_select(
                    rollup,
                    plan,
                    piece,
                    names,
                    lambda groups: func.unnest(groups.c[LATENCY_BINS]).label("bin"),
                    lambda groups: func.unnest(groups.c[LATENCY_COUNTS]).label("count"),
                )
            )
    return whole, long


def _series_index(
    spec: TableSeries, group_by: str | None, groups: Sequence[str], columns: Columns
) -> ColumnElement[int]:
    """A row's series: ``i`` for ``groups[i]``, ``len(groups)`` for "other", 0 without groups."""
    if group_by is None or not groups:
        return literal(0, Integer)
    group = spec.group_sql(group_by, columns)
    return case(*((group == value, i) for i, value in enumerate(groups)), else_=len(groups))


def top_groups_sql(
    spec: TableSeries,
    plan: Plan,
    group_by: str,
    top: int,
    raw_filters: Sequence[ColumnElement[bool]] = (),
    names: Sequence[str] = (),
) -> Select[Any]:
    """Up to ``top + 1`` groups ``(grp, count)`` over the window, most rows first (ties by
    name): the first ``top`` get a series each; a ``top + 1``-th means an "other" series. Window
    totals: read from the coarsest buckets that fit (a 30-day hourly series ranks its groups
    from 30 days, not 720 hours)."""
    if plan.grain is not None:
        plan = replace(plan, grain=GRAINS[-1])
    s = _source(spec, plan, raw_filters, names).subquery("s")
    group = spec.group_sql(group_by, s.c).label("grp")
    total = func.sum(s.c["count"])
    return (
        select(group, cast(total, BigInteger).label("count"))
        .group_by(group)
        .order_by(total.desc(), group)
        .limit(top + 1)
    )


def series_sql(
    spec: TableSeries,
    plan: Plan,
    group_by: str | None = None,
    groups: Sequence[str] = (),
    *,
    other: bool = False,
    raw_filters: Sequence[ColumnElement[bool]] = (),
    names: Sequence[str] = (),
) -> Select[Any]:
    """Rows ``(bucket, idx, aggregates..., quantiles...)`` for every bucket and series, ordered
    by series then bucket. Series ``idx`` ``i`` is ``groups[i]``, ``len(groups)`` the "other"
    series when ``other``; without ``group_by``, one series 0 of all rows."""

    def index_of(columns: Columns) -> ColumnElement[int]:
        return _series_index(spec, group_by, groups, columns)

    s = _source(spec, plan, raw_filters, names).subquery("s")
    agg = (
        select(
            s.c.bucket.label("bucket"),
            index_of(s.c).label("idx"),
            *(aggregate(s.c).label(name) for name, aggregate in spec.aggregates.items()),
        )
        .group_by(literal_position(1), literal_position(2))
        .subquery("agg")
    )
    series_count = (len(groups) + (1 if other else 0)) if group_by is not None else 1
    b = (
        func.generate_series(plan.first, plan.last, plan.width)
        .table_valued("bucket")
        .render_derived(name="b")
    )
    i = func.generate_series(0, series_count - 1).table_valued("idx").render_derived(name="i")
    joined = b.join(i, true()).outerjoin(agg, (agg.c.bucket == b.c.bucket) & (agg.c.idx == i.c.idx))
    columns: list[ColumnElement[Any]] = [
        b.c.bucket.label("bucket"),
        i.c.idx.label("idx"),
        *(func.coalesce(agg.c[name], 0).label(name) for name in spec.aggregates),
    ]
    return select(*columns).select_from(joined).order_by(i.c.idx, b.c.bucket)


def histograms_sql(
    spec: TableSeries,
    plan: Plan,
    group_by: str | None = None,
    groups: Sequence[str] = (),
    *,
    raw_filters: Sequence[ColumnElement[bool]] = (),
    names: Sequence[str] = (),
) -> CompoundSelect[Any] | Select[Any]:
    """Rows ``(bucket, idx, bins, counts, stored quantiles...)`` for ``assemble`` to rank, one per
    point and part. A point that is one rollup row of the plan's grain (a route's hour) comes as
    that row's stored quantiles and no bins: nothing to add up, whatever the row holds. A point of
    several such rows (the "other" series, a route under two methods) comes as their packed bins
    and counts (stored so in each row, joined by ``histogram.packed_join_sql``), added up in
    ``assemble`` by numpy: fetched as arrays, a 30-day hourly series by route (2.4M bins) cost
    more in Python objects than in adding, and merged in SQL every (point, bin) pair is hashed.
    The finer buckets towards a stale edge and raw rows come merged in SQL, one packed row per
    point (a raw row is one bin each).
    Series as in ``series_sql``."""

    def index_of(columns: Columns) -> ColumnElement[int]:
        return _series_index(spec, group_by, groups, columns)

    rollup = spec.latency_rollup_for(group_by)
    whole, long_parts = _latency_sources(rollup, plan, raw_filters, names)
    stored = list(STORED_QUANTILES.values())
    answers: list[Select[Any]] = []
    if whole:
        w = union_of(whole).subquery("w")
        idx = index_of(w.c)
        rows = select(
            w.c.bucket,
            idx.label("idx"),
            w.c[PACKED_BINS],
            w.c[PACKED_COUNTS],
            *(w.c[name] for name in stored),
            func.count().over(partition_by=[w.c.bucket, idx]).label("rows_in_point"),
        ).subquery("rows")
        alone = rows.c.rows_in_point == 1
        # A point of one row gives its stored quantiles; only the others' packed bins are sent.
        answers.append(
            select(
                rows.c.bucket,
                rows.c.idx,
                packed_join_sql(rows.c[PACKED_BINS]).filter(~alone).label("bins"),
                packed_join_sql(rows.c[PACKED_COUNTS]).filter(~alone).label("counts"),
                *(func.min(rows.c[name]).filter(alone).label(name) for name in stored),
            ).group_by(rows.c.bucket, rows.c.idx)
        )
    if long_parts:
        l_ = union_of([_indexed(part, index_of) for part in long_parts]).subquery("l")
        merged = (
            select(l_.c.bucket, l_.c.idx, l_.c.bin, cast(func.sum(l_.c["count"]), BigInteger).label("n"))
            .where(l_.c.bin.is_not(None))
            .group_by(literal_position(1), literal_position(2), literal_position(3))
            .subquery("merged")
        )
        answers.append(
            select(
                merged.c.bucket,
                merged.c.idx,
                packed_join_sql(packed_bin_sql(merged.c.bin)).label("bins"),
                packed_join_sql(packed_count_sql(merged.c.n)).label("counts"),
                *(cast(literal(None), Double).label(name) for name in stored),
            ).group_by(merged.c.bucket, merged.c.idx)
        )
    return union_of(answers)


def _indexed(part: Select[Any], index_of: Callable[[Columns], ColumnElement[int]]) -> Select[Any]:
    """A long-format ``(bucket, keys..., bin, count)`` select as ``(bucket, idx, bin, count)``."""
    inner = part.subquery()
    return select(inner.c.bucket, index_of(inner.c).label("idx"), inner.c.bin, inner.c["count"])


def literal_position(position: int) -> ColumnElement[Any]:
    """GROUP BY 1, 2: the selected expressions, without repeating them."""
    return literal_column(str(position))


def _fraction(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _request_point(row: dict[str, Any], seconds: float) -> dict[str, Any]:
    count = row["count"]
    return {
        "bucket": row["bucket"],
        "count": count,
        "rate_per_s": count / seconds,
        "client_error_rate": _fraction(row["client_errors"], count),
        "server_error_rate": _fraction(row["server_errors"], count),
        **{name: row[name] for name in REQUEST_SERIES.quantiles},
    }


def _job_point(row: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {
        "bucket": row["bucket"],
        "count": row["count"],
        "success_rate": _fraction(row["succeeded"], row["count"]),
        **{name: row[name] for name in JOB_SERIES.quantiles},
    }


def _count_point(row: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {"bucket": row["bucket"], "count": row["count"]}


_POINTS = {"requests": _request_point, "jobs": _job_point}


def _ranked(
    by_point: Mapping[tuple[Any, int], Sequence[Mapping[str, Any]]], fractions: Mapping[str, float]
) -> dict[tuple[Any, int], dict[str, float | None]]:
    """Each point's quantiles: stored in its one rollup row, or ranked from the bins of its rows
    added up (every such point at once: ``histogram.quantiles_of_packed_points``)."""
    ranked: dict[tuple[Any, int], dict[str, float | None]] = {}
    merged: list[tuple[Any, int]] = []
    for key, found in by_point.items():
        if len(found) == 1 and found[0]["bins"] is None:
            ranked[key] = {label: found[0][STORED_QUANTILES[q]] for label, q in fractions.items()}
        else:
            merged.append(key)
    parts = ([(row["bins"], row["counts"]) for row in by_point[key]] for key in merged)
    ranked.update(zip(merged, quantiles_of_packed_points(parts, fractions), strict=True))
    return ranked


def assemble(
    spec: TableSeries,
    plan: Plan,
    rows: Sequence[Mapping[str, Any]],
    groups: Sequence[str | None],
    *,
    other: bool,
    histograms: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The series of ``series_sql``'s rows: ``groups[i]`` for idx ``i``, then "other"; each
    point's quantiles from its rows of ``histograms_sql`` (none: NULL)."""
    point = _POINTS.get(spec.name, _count_point)
    seconds = plan.width.total_seconds()
    names: list[tuple[str | None, bool]] = [(group, False) for group in groups]
    if other:
        names.append((None, True))
    series: list[dict[str, Any]] = [
        {"group": group, "other": is_other, "points": []} for group, is_other in names
    ]
    by_point: dict[tuple[Any, int], list[Mapping[str, Any]]] = defaultdict(list)
    for histogram in histograms:
        by_point[histogram["bucket"], histogram["idx"]].append(histogram)
    ranked = _ranked(by_point, spec.quantiles)
    empty = dict.fromkeys(spec.quantiles)
    for row in rows:
        found = ranked.get((row["bucket"], row["idx"]), empty)
        series[row["idx"]]["points"].append(point(dict(row) | found, seconds))
    return series
