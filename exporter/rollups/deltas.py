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

from exporter.histogram import MERGE_ARRAYS_SQL, as_arrays, bucket_of, merge
from exporter.rollups.definitions import BY_SOURCE, GRAINS, LATENCY_BINS, LATENCY_COUNTS, Grain, Rollup
from exporter.rollups.schema import tables_of

Row = Mapping[str, Any]
GroupKey = tuple[Any, ...]  # (bucket, key values...)


@dataclass
class RollupDelta:
    """One rollup at one grain: per group, the measures to add, the latency histogram; members."""

    rollup: Rollup
    grain: Grain
    groups: dict[GroupKey, list[Any]] = field(default_factory=dict)
    latency: dict[GroupKey, dict[int, int]] = field(default_factory=dict)
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
    latency: dict[tuple[Any, ...], dict[int, int]] = {}
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
                histogram = latency.get(group)
                if histogram is None:
                    histogram = latency[group] = {}
                latency_bin = bucket_of(float(latency_value))
                histogram[latency_bin] = histogram.get(latency_bin, 0) + sign
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
    latency: Mapping[tuple[Any, ...], dict[int, int]],
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
    for group, histogram in latency.items():
        key = regroup(group)
        found = delta.latency.get(key)
        delta.latency[key] = dict(histogram) if found is None else merge(found, histogram)
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
    "sum": "t.{column} + EXCLUDED.{column}",
    "min": "LEAST(t.{column}, EXCLUDED.{column})",
    "max": "GREATEST(t.{column}, EXCLUDED.{column})",
}
_ARRAY_TYPES = {"bigint": "bigint[]", "float": "double precision[]", "timestamptz": "timestamptz[]"}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _from_arrays(columns: list[tuple[str, str]]) -> str:
    """``SELECT ... FROM unnest(%s::type[], ...)``: a batch's rows as one array per column, so
    one statement upserts them all (one executor run, not one per row). Each ``(name, type)``;
    a histogram's arrays travel as text literals, one per row, cast back in the select list."""
    arrays = ", ".join("%s::text[]" if type_.startswith("hist:") else f"%s::{type_}" for _, type_ in columns)
    names = ", ".join(_quoted(name) for name, _ in columns)
    selected = ", ".join(
        f"u.{_quoted(name)}::{type_[5:]}" if type_.startswith("hist:") else f"u.{_quoted(name)}"
        for name, type_ in columns
    )
    return f"SELECT {selected} FROM unnest({arrays}) AS u({names})"


def _upsert_groups_sql(rollup: Rollup, grain: Grain) -> str:
    table = tables_of(rollup, grain)["groups"]
    keys = ["bucket", *(key.name for key in rollup.keys)]
    columns = [("bucket", "timestamptz[]"), *((key.name, "text[]") for key in rollup.keys)]
    columns += [(m.name, _ARRAY_TYPES[m.sql_type]) for m in rollup.measures]
    updates = [
        f"{_quoted(m.name)} = " + _COMBINE[m.kind].format(column=_quoted(m.name)) for m in rollup.measures
    ]
    if rollup.latency is not None:
        columns += [(LATENCY_BINS, "hist:smallint[]"), (LATENCY_COUNTS, "hist:bigint[]")]
        merged = MERGE_ARRAYS_SQL.format(
            bins_a=f"t.{LATENCY_BINS}",
            counts_a=f"t.{LATENCY_COUNTS}",
            bins_b=f"EXCLUDED.{LATENCY_BINS}",
            counts_b=f"EXCLUDED.{LATENCY_COUNTS}",
        )
        updates.append(f"({LATENCY_BINS}, {LATENCY_COUNTS}) = {merged}")
    return (
        f"INSERT INTO {_quoted(table.name)} AS t ({', '.join(_quoted(name) for name, _ in columns)}) "
        f"{_from_arrays(columns)} "
        f"ON CONFLICT ({', '.join(_quoted(name) for name in keys)}) DO UPDATE SET {', '.join(updates)}"
    )


def _insert_members_sql(rollup: Rollup, grain: Grain) -> str:
    table = tables_of(rollup, grain)["members"]
    columns = [("bucket", "timestamptz[]"), *((key.name, "text[]") for key in rollup.keys)]
    columns.append(("member", "text[]"))
    return (
        f"INSERT INTO {_quoted(table.name)} ({', '.join(_quoted(name) for name, _ in columns)}) "
        f"{_from_arrays(columns)} ON CONFLICT DO NOTHING"
    )


def _literal(values: list[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


def _columns_of(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


def upsert(cursor: Any, deltas: Sequence[RollupDelta]) -> None:
    """Add ``deltas`` to the rollup tables (within the caller's transaction): one statement per
    rollup table. Rows go in key order, so two writers adding to the same groups lock them in the
    same order and never deadlock. Pipelined: the statements go out without waiting for each
    other's answers (a batch of one table is six of them), so round trips do not add up."""
    with cursor.connection.pipeline():
        _send(cursor, deltas)


def _send(cursor: Any, deltas: Sequence[RollupDelta]) -> None:
    for delta in deltas:
        rollup = delta.rollup
        # A float measure may hold ints (a sum that started at 0): an array is of one type.
        as_float = [measure.sql_type == "float" for measure in rollup.measures]
        rows: list[tuple[Any, ...]] = []
        for group in sorted(delta.groups):
            values = [float(v) if f else v for v, f in zip(delta.groups[group], as_float, strict=True)]
            row: tuple[Any, ...] = (*group, *values)
            if rollup.latency is not None:
                bins, counts = as_arrays(delta.latency.get(group, {}))
                row = (*row, _literal(bins), _literal(counts))
            rows.append(row)
        if rows:
            cursor.execute(_upsert_groups_sql(rollup, delta.grain), _columns_of(rows))
        if delta.members:
            members = [(*group, member) for group, member in sorted(delta.members)]
            cursor.execute(_insert_members_sql(rollup, delta.grain), _columns_of(members))
