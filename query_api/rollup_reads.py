"""Reading a window from the rollups: whole days from ``rollup_*_1d``, whole hours beside them
from ``rollup_*_1h``, whole 5-minute buckets beside those from ``rollup_*_5m``, and only the
ragged edges (under 5 minutes each) from raw rows.

A summary asks ``plan`` whether the rollups can answer its window and filters: a filter on a
column that is no rollup key (user, endpoint, release, a status range not aligned to classes...)
cannot be, and the summary then reads raw rows as it always did. Otherwise the ``*_source``
functions give one ``UNION ALL`` per rollup part, shaped like the rollup table (keys, then
measures / packed latency histogram / distinct sketch), its
rows from the rollup buckets and from the raw edge rows
(each raw row one line, its keys and measures computed by the same ``definitions`` the writer
uses, its latency bucketed by ``histogram.bucket_sql`` with a count of 1). The summary then adds
counts and sums, takes least/greatest of first/last seen, merges latency histograms by
``histogram.quantiles_of_packed_points`` and unites distinct sketches, so the answer is the raw rows' answer:
counts exact, percentiles within ``histogram.ALPHA``, distinct counts (affected users) within
``distinct_sketch.STANDARD_ERROR`` (2.3 %) typically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    Table,
    literal,
    select,
    union_all,
)
from sqlalchemy.sql import Subquery, operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter
from sqlalchemy.sql.schema import Column

from exporter.distinct_sketch import sketch_sql
from exporter.histogram import bucket_sql, packed_bin_sql, packed_count_sql
from exporter.rollups.definitions import GRAINS, PACKED_BINS, PACKED_COUNTS, Grain, Rollup, sketch_column
from exporter.rollups.schema import tables_of
from query_api.filters import TimeWindow

KeyFilter = Callable[[Table], ColumnElement[bool]]


@dataclass(frozen=True)
class Piece:
    """``[low, high)`` of the window (None: open), read from ``grain``'s rollup or raw rows (None)."""

    grain: Grain | None
    low: datetime | None
    high: datetime | None


def _floor(moment: datetime, grain: Grain) -> datetime:
    return grain.bucket(moment)


def _ceil(moment: datetime, grain: Grain) -> datetime:
    floor = grain.bucket(moment)
    return floor if floor == moment else floor + grain.width


def split(
    window: TimeWindow, stale_from: datetime | None = None, grains: tuple[Grain, ...] = GRAINS
) -> list[Piece]:
    """The window cut into daily, hourly, 5-minute and raw pieces, in time order, none empty: the
    coarsest whole buckets in the middle, then finer ones towards each edge, raw rows for what is
    left (under 5 minutes at each end) and for everything from ``stale_from`` on (where the
    rollups are behind the raw rows: ``exporter.rollups.stale``)."""
    start, end = window.start, window.end
    if stale_from is None or (end is not None and stale_from >= end):
        return _cut(start, end, grains)
    if start is not None and stale_from <= start:
        return [Piece(None, start, end)]
    return [*_cut(start, stale_from, grains), Piece(None, stale_from, end)]


def _cut(low: datetime | None, high: datetime | None, grains: tuple[Grain, ...]) -> list[Piece]:
    """``[low, high)`` from the coarsest of ``grains`` (finest first) that has a whole bucket in
    it, the rest either side from the finer ones."""
    if low is not None and high is not None and low >= high:
        return []
    if not grains:
        return [Piece(None, low, high)]
    grain, finer = grains[-1], grains[:-1]
    try:
        inner_low = None if low is None else _ceil(low, grain)
    except OverflowError:  # a start in the calendar's last bucket: no whole bucket after it
        return _cut(low, high, finer)
    inner_high = None if high is None else _floor(high, grain)
    if inner_low is not None and inner_high is not None and inner_low >= inner_high:
        return _cut(low, high, finer)
    left = [] if low is None else _cut(low, inner_low, finer)
    right = [] if high is None else _cut(inner_high, high, finer)
    return [*left, Piece(grain, inner_low, inner_high), *right]


# --- Filters: the raw conditions a rollup can answer, as conditions on its key columns --------------


def _status_classes(operator: Any, value: Any) -> list[str] | None:
    """``status_code >= 400`` / ``<= 499`` as status classes; None when not aligned to a class."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if operator is operators.ge and value % 100 == 0 and value > 0:
        return [f"{n}xx" for n in range(value // 100, 10)]
    if operator is operators.le and value % 100 == 99:
        return [f"{n}xx" for n in range(0, value // 100 + 1)]
    return None


def _key_in(name: str, values: Sequence[str]) -> KeyFilter:
    def condition(table: Table) -> ColumnElement[bool]:
        return table.c[name].in_(values)

    return condition


def translate(rollup: Rollup, filters: Sequence[ColumnElement[bool]]) -> list[KeyFilter] | None:
    """``filters`` (conditions on the rollup's source table) as conditions on its rollup tables;
    None when one of them is not on a key (then only raw rows can answer)."""
    keys = {key.name for key in rollup.keys}
    found: list[KeyFilter] = []
    for condition in filters:
        if not isinstance(condition, BinaryExpression):
            return None
        left, right = condition.left, condition.right
        if (
            not isinstance(left, Column)
            or left.table is not rollup.source
            or not isinstance(right, BindParameter)
        ):
            return None
        name, operator, value = left.name, condition.operator, right.value
        if name == "status_code" and "status_class" in keys:
            classes = _status_classes(operator, value)
            if classes is None:
                return None
            found.append(_key_in("status_class", classes))
            continue
        if name not in keys:
            return None
        values: list[Any] | None = None
        if operator is operators.in_op and isinstance(value, list | tuple):
            values = list(value)
        elif operator is operators.eq:
            values = [value]
        # "" is what a rollup keeps for a missing value: a filter on "" would match those too.
        if not values or any(not isinstance(v, str) or v == "" for v in values):
            return None
        found.append(_key_in(name, values))
    return found


@dataclass(frozen=True)
class Plan:
    """How to read one rollup over a window: its pieces, its key filters, the raw filters."""

    rollup: Rollup
    pieces: list[Piece]
    key_filters: list[KeyFilter]
    raw_filters: list[ColumnElement[bool]]


def plan(
    rollup: Rollup,
    filters: Sequence[ColumnElement[bool]],
    window: TimeWindow,
    stale_from: datetime | None = None,
) -> Plan | None:
    """None when the rollups cannot answer (a filter off the keys, or a window under 5 minutes);
    ``stale_from``: where they are behind the raw rows (``exporter.rollups.stale.fresh_until``)."""
    key_filters = translate(rollup, filters)
    if key_filters is None:
        return None
    pieces = split(window, stale_from)
    if not any(piece.grain is not None for piece in pieces):
        return None
    return Plan(rollup, pieces, key_filters, list(filters))


def _bucket_range(table: Table, piece: Piece) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    if piece.low is not None:
        found.append(table.c.bucket >= piece.low)
    if piece.high is not None:
        found.append(table.c.bucket < piece.high)
    return found


def _raw_where(plan: Plan, piece: Piece) -> list[ColumnElement[bool]]:
    source = plan.rollup.source
    found = [*plan.raw_filters, *TimeWindow(piece.low, piece.high).conditions(source.c.timestamp)]
    if plan.rollup.only_if_sql is not None:
        found.append(plan.rollup.only_if_sql(source))
    return found


def _raw_keys(rollup: Rollup) -> list[ColumnElement[Any]]:
    return [key.of_sql(rollup.source).label(key.name) for key in rollup.keys]


def union_of(selects: list[Select[Any]]) -> Select[Any] | CompoundSelect[Any]:
    """The pieces' selects as one (``UNION ALL``; a single piece as it is)."""
    return selects[0] if len(selects) == 1 else union_all(*selects)


def _union(selects: list[Select[Any]], name: str) -> Subquery:
    return union_of(selects).subquery(name)


def groups_source(plan: Plan) -> Subquery:
    """Rows ``(keys..., measures...)``: rollup groups of the whole buckets, raw edge rows one each."""
    rollup = plan.rollup
    selects: list[Any] = []
    for piece in plan.pieces:
        if piece.grain is None:
            measures = [m.of_sql(rollup.source).label(m.name) for m in rollup.measures]
            selects.append(select(*_raw_keys(rollup), *measures).where(*_raw_where(plan, piece)))
            continue
        table = tables_of(rollup, piece.grain)["groups"]
        columns = [table.c[key.name] for key in rollup.keys] + [table.c[m.name] for m in rollup.measures]
        where = [*_bucket_range(table, piece), *(f(table) for f in plan.key_filters)]
        selects.append(select(*columns).where(*where))
    return _union(selects, f"{rollup.name}_groups")


def latency_source(plan: Plan) -> Subquery:
    """Rows ``(keys..., bins, counts)``: the latency histograms of the buckets' groups and of the
    raw edge rows (one bin each), packed (as the rollup rows keep them; a raw row's by
    ``histogram.packed_bin_sql``) for ``packed_join_sql`` to join per group and
    ``histogram.quantiles_of_packed_points`` to merge."""
    rollup = plan.rollup
    assert rollup.latency is not None
    selects: list[Any] = []
    for piece in plan.pieces:
        if piece.grain is None:
            value = rollup.source.c[rollup.latency]
            selects.append(
                select(
                    *_raw_keys(rollup),
                    packed_bin_sql(bucket_sql(value)).label("bins"),
                    packed_count_sql(literal(1)).label("counts"),
                ).where(*_raw_where(plan, piece), value.is_not(None))
            )
            continue
        table = tables_of(rollup, piece.grain)["groups"]
        columns = [
            *(table.c[key.name] for key in rollup.keys),
            table.c[PACKED_BINS].label("bins"),
            table.c[PACKED_COUNTS].label("counts"),
        ]
        where = [*_bucket_range(table, piece), *(f(table) for f in plan.key_filters)]
        selects.append(select(*columns).where(*where))
    return _union(selects, f"{rollup.name}_latency")


def sketches_source(plan: Plan, counted: Sequence[str]) -> Subquery:
    """Rows ``(keys..., <column>_sketch...)``: the buckets' distinct sketches of the ``counted``
    source columns, and one per raw edge row (of its values alone: ``distinct_sketch.sketch_sql``),
    for ``union_sql`` to unite."""
    rollup = plan.rollup
    assert set(counted) <= set(rollup.distinct), counted
    names = [sketch_column(name) for name in counted]
    selects: list[Any] = []
    for piece in plan.pieces:
        if piece.grain is None:
            sketches = [sketch_sql(rollup.source.c[c]).label(n) for c, n in zip(counted, names, strict=True)]
            selects.append(select(*_raw_keys(rollup), *sketches).where(*_raw_where(plan, piece)))
            continue
        table = tables_of(rollup, piece.grain)["sketches"]
        columns = [table.c[key.name] for key in rollup.keys] + [table.c[name] for name in names]
        where = [*_bucket_range(table, piece), *(f(table) for f in plan.key_filters)]
        selects.append(select(*columns).where(*where))
    return _union(selects, f"{rollup.name}_sketches")
