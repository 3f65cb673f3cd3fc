"""What the rows a batch really inserted add to the rollups, and the upserts that add it.

Called by the writer in the transaction that inserts the rows, with exactly the rows that were
inserted (a replay's already-stored rows are not among them), so a rollup counts each row once;
a row arriving late lands in its own (old) bucket. Rows deleted afterwards (an exception stored
twice, merged by ``exporter.trace_links``) are subtracted with ``sign=-1``. Pure up to
``upsert``: ``deltas_of`` only computes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import add, itemgetter
from typing import Any

from psycopg import sql

from exporter.histogram import bucket_of
from exporter.rollups.definitions import BY_SOURCE, GRAINS, Grain, Rollup
from exporter.rollups.schema import tables_of

Row = Mapping[str, Any]
GroupKey = tuple[Any, ...]  # (bucket, key values...)


@dataclass
class RollupDelta:
    """One rollup at one grain: per group, the measures to add; latency bins; members."""

    rollup: Rollup
    grain: Grain
    groups: dict[GroupKey, list[Any]] = field(default_factory=dict)
    latency: dict[tuple[GroupKey, int], int] = field(default_factory=dict)
    members: set[tuple[GroupKey, str]] = field(default_factory=set)


def deltas_of(batch: Mapping[str, Sequence[Row]], sign: int = 1) -> list[RollupDelta]:
    """The rollup deltas of the rows in ``batch`` (table -> mapped rows)."""
    found: list[RollupDelta] = []
    for table, rows in batch.items():
        for rollup in BY_SOURCE.get(table, ()):
            found.extend(_deltas(rollup, rows, sign))
    return found


def _deltas(rollup: Rollup, rows: Iterable[Row], sign: int) -> list[RollupDelta]:
    """Aggregated at the fine grain first (per row: its keys, values, bin and 5-minute bucket as
    epoch seconds: a few microseconds), then the fine groups folded into the coarser grains."""
    kinds = [measure.kind for measure in rollup.measures]
    plain_keys = _plain_getter([key.column for key in rollup.keys if key.column is not None])
    key_functions = [key.of_row for key in rollup.keys if key.column is None]
    measure_functions = [measure.of_row for measure in rollup.measures]
    all_sums = all(kind == "sum" for kind in kinds)
    negate = [index for index, kind in enumerate(kinds) if kind == "sum"] if sign < 0 else []
    fine, *coarser = GRAINS
    width = int(fine.width.total_seconds())
    groups: dict[tuple[Any, ...], list[Any]] = {}
    latency: dict[tuple[tuple[Any, ...], int], int] = {}
    members: set[tuple[tuple[Any, ...], str]] = set()
    latency_column, members_column, only_if = rollup.latency, rollup.members, rollup.only_if
    for row in rows:
        if only_if is not None and not only_if(row):
            continue
        seconds = int(row["timestamp"].timestamp())
        group = (seconds - seconds % width, *plain_keys(row), *[function(row) for function in key_functions])
        values = [function(row) for function in measure_functions]
        for index in negate:
            values[index] = -values[index]
        current = groups.get(group)
        if current is None:
            groups[group] = values
        elif all_sums:
            groups[group] = list(map(add, current, values))  # in C: no per-measure Python step
        else:
            _add(current, values, kinds)
        if latency_column is not None:
            latency_value = row.get(latency_column)
            if latency_value is not None:
                slot = (group, bucket_of(float(latency_value)))
                latency[slot] = latency.get(slot, 0) + sign
        if members_column is not None and sign > 0:
            member = row.get(members_column)
            if member is not None:
                members.add((group, str(member)))
    if not groups:
        return []
    deltas = [_at_grain(rollup, fine, groups, latency, members, kinds)]
    deltas.extend(_at_grain(rollup, grain, groups, latency, members, kinds) for grain in coarser)
    return deltas


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _plain_getter(columns: list[str]) -> Callable[[Row], tuple[Any, ...]]:
    """The values of ``columns`` in one C-level call (mapped rows have every column)."""
    if not columns:
        return lambda row: ()
    if len(columns) == 1:
        column = columns[0]
        return lambda row: (row.get(column),)
    getter = itemgetter(*columns)
    return lambda row: getter(row)


def _at_grain(
    rollup: Rollup,
    grain: Grain,
    groups: Mapping[tuple[Any, ...], list[Any]],
    latency: Mapping[tuple[tuple[Any, ...], int], int],
    members: set[tuple[tuple[Any, ...], str]],
    kinds: list[str],
) -> RollupDelta:
    """The fine groups (bucket as epoch seconds) folded into ``grain``'s buckets (datetimes)."""
    width = int(grain.width.total_seconds())
    starts: dict[int, datetime] = {}

    def regroup(group: tuple[Any, ...]) -> GroupKey:
        start = group[0] - group[0] % width
        moment = starts.get(start)
        if moment is None:
            moment = starts[start] = _EPOCH + timedelta(seconds=start)
        # Plain keys were read as they are: a missing value is "" in a rollup, a value its text.
        return (moment, *("" if value is None else str(value) for value in group[1:]))

    delta = RollupDelta(rollup, grain)
    for group, values in groups.items():
        key = regroup(group)
        current = delta.groups.get(key)
        if current is None:
            delta.groups[key] = list(values)
        else:
            _add(current, values, kinds)
    for (group, latency_bin), count in latency.items():
        slot = (regroup(group), latency_bin)
        delta.latency[slot] = delta.latency.get(slot, 0) + count
    delta.members = {(regroup(group), member) for group, member in members}
    return delta


def _add(current: list[Any], values: list[Any], kinds: list[str]) -> None:
    for index, kind in enumerate(kinds):
        value = values[index]
        if kind == "sum":
            current[index] += value
        elif kind == "min":
            current[index] = min(current[index], value)
        else:
            current[index] = max(current[index], value)


_COMBINE = {
    "sum": "{table}.{column} + EXCLUDED.{column}",
    "min": "LEAST({table}.{column}, EXCLUDED.{column})",
    "max": "GREATEST({table}.{column}, EXCLUDED.{column})",
}


def _upsert_groups(delta: RollupDelta) -> sql.Composed:
    table = tables_of(delta.rollup, delta.grain)["groups"]
    keys = ["bucket", *(key.name for key in delta.rollup.keys)]
    measures = [measure.name for measure in delta.rollup.measures]
    updates = sql.SQL(", ").join(
        sql.SQL("{} = ").format(sql.Identifier(measure.name))
        + sql.SQL(_COMBINE[measure.kind].format(table="t", column=_quoted(measure.name)))
        for measure in delta.rollup.measures
    )
    return sql.SQL("INSERT INTO {} AS t ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
        sql.Identifier(table.name),
        sql.SQL(", ").join(sql.Identifier(name) for name in [*keys, *measures]),
        sql.SQL(", ").join(sql.Placeholder() * (len(keys) + len(measures))),
        sql.SQL(", ").join(sql.Identifier(name) for name in keys),
        updates,
    )


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _upsert_part(delta: RollupDelta, part: str, extra: str, on_conflict: str) -> sql.Composed:
    table = tables_of(delta.rollup, delta.grain)[part]
    keys = ["bucket", *(key.name for key in delta.rollup.keys)]
    columns = [*keys, extra] + (["count"] if part == "latency" else [])
    return sql.SQL("INSERT INTO {} AS t ({}) VALUES ({}) ON CONFLICT ({}) {}").format(
        sql.Identifier(table.name),
        sql.SQL(", ").join(sql.Identifier(name) for name in columns),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        sql.SQL(", ").join(sql.Identifier(name) for name in [*keys, extra]),
        sql.SQL(on_conflict),
    )


def upsert(cursor: Any, deltas: Sequence[RollupDelta]) -> None:
    """Add ``deltas`` to the rollup tables (within the caller's transaction)."""
    for delta in deltas:
        cursor.executemany(
            _upsert_groups(delta), [(*group, *values) for group, values in delta.groups.items()]
        )
        if delta.latency:
            cursor.executemany(
                _upsert_part(delta, "latency", "bin", "DO UPDATE SET count = t.count + EXCLUDED.count"),
                [(*group, latency_bin, count) for (group, latency_bin), count in delta.latency.items()],
            )
        if delta.members:
            cursor.executemany(
                _upsert_part(delta, "members", "member", "DO NOTHING"),
                [(*group, member) for group, member in delta.members],
            )
