"""What the rows a batch really inserted add to the rollups, and the upserts that add it.

Called by the writer in the transaction that inserts the rows, with exactly the rows that were
inserted (a replay's already-stored rows are not among them), so a rollup counts each row once;
a row arriving late lands in its own (old) bucket. Rows deleted afterwards (an exception stored
twice, merged by ``exporter.trace_links``) are subtracted with ``sign=-1``. Pure up to
``upsert``: ``deltas_of`` only computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
    per_grain = [RollupDelta(rollup, grain) for grain in GRAINS]
    kinds = [measure.kind for measure in rollup.measures]
    for row in rows:
        if rollup.only_if is not None and not rollup.only_if(row):
            continue
        keys = tuple(key.of_row(row) for key in rollup.keys)
        values = [measure.of_row(row) for measure in rollup.measures]
        if sign < 0:
            values = [-value if kind == "sum" else value for kind, value in zip(kinds, values, strict=True)]
        latency_bin = None
        if rollup.latency is not None:
            latency = row.get(rollup.latency)
            latency_bin = bucket_of(float(latency)) if latency is not None else None
        member = row.get(rollup.members) if rollup.members is not None else None
        moment = row["timestamp"]
        for delta in per_grain:
            group = (delta.grain.bucket(moment), *keys)
            current = delta.groups.get(group)
            if current is None:
                delta.groups[group] = list(values)
            else:
                _add(current, values, kinds)
            if latency_bin is not None:
                slot = (group, latency_bin)
                delta.latency[slot] = delta.latency.get(slot, 0) + sign
            if member is not None and sign > 0:
                delta.members.add((group, str(member)))
    return [delta for delta in per_grain if delta.groups]


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
