"""Rebuild rollup buckets from raw rows: after a migration, after a change of definitions, or to
check the write-time rollups (a test compares the two).

A range is rebuilt one hour at a time (whole coarse buckets, so the fine ones inside are whole
too), each hour in its own transaction: the old buckets deleted, the new ones aggregated from the
raw rows by the same definitions the writer uses. Raw rows outlive neither their retention nor a
purge, and rollups do: the range is clamped to the oldest raw row of each table, so a rebuild
never wipes the history that only the rollups still hold.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Text, cast, delete, func, insert, literal_column, select
from sqlalchemy.sql import Select

from exporter.histogram import bucket_sql
from exporter.rollups.definitions import COARSE, GRAINS, ROLLUPS, Grain, Rollup
from exporter.rollups.schema import tables_of

Progress = Callable[[int, int], None]  # (hours done, hours in all)


def _filtered(rollup: Rollup, query: Select[Any], since: datetime, until: datetime) -> Select[Any]:
    source = rollup.source
    query = query.where(source.c.timestamp >= since, source.c.timestamp < until)
    if rollup.only_if_sql is not None:
        query = query.where(rollup.only_if_sql(source))
    return query


def _positions(count: int) -> list[ColumnElement[Any]]:
    """GROUP BY 1, 2, ...: the selected bucket and keys, without repeating their expressions."""
    return [literal_column(str(position)) for position in range(1, count + 1)]


_AGGREGATES: dict[str, Callable[[ColumnElement[Any]], ColumnElement[Any]]] = {
    "sum": func.sum,
    "min": func.min,
    "max": func.max,
}


def _group_select(rollup: Rollup, grain: Grain, since: datetime, until: datetime) -> Select[Any]:
    source = rollup.source
    bucket = grain.bucket_sql(source.c.timestamp).label("bucket")
    keys = [key.of_sql(source).label(key.name) for key in rollup.keys]
    measures: list[ColumnElement[Any]] = [
        _AGGREGATES[m.kind](m.of_sql(source)).label(m.name) for m in rollup.measures
    ]
    query = select(bucket, *keys, *measures).group_by(*_positions(len(keys) + 1))
    return _filtered(rollup, query, since, until)


def _latency_select(rollup: Rollup, grain: Grain, since: datetime, until: datetime) -> Select[Any]:
    source = rollup.source
    assert rollup.latency is not None
    bucket = grain.bucket_sql(source.c.timestamp).label("bucket")
    keys = [key.of_sql(source).label(key.name) for key in rollup.keys]
    latency = source.c[rollup.latency]
    query = select(bucket, *keys, bucket_sql(latency).label("bin"), func.count().label("count"))
    query = query.where(latency.is_not(None)).group_by(*_positions(len(keys) + 2))
    return _filtered(rollup, query, since, until)


def _members_select(rollup: Rollup, grain: Grain, since: datetime, until: datetime) -> Select[Any]:
    source = rollup.source
    assert rollup.members is not None
    bucket = grain.bucket_sql(source.c.timestamp).label("bucket")
    keys = [key.of_sql(source).label(key.name) for key in rollup.keys]
    member = source.c[rollup.members]
    query = select(bucket, *keys, cast(member, Text).label("member"))
    query = query.where(member.is_not(None)).distinct()
    return _filtered(rollup, query, since, until)


def rebuild_hour(conn: Connection, since: datetime) -> None:
    """Rebuild every rollup's buckets in ``[since, since + 1 h)`` (``since`` on the hour)."""
    until = since + COARSE.width
    for rollup in ROLLUPS:
        for grain in GRAINS:
            tables = tables_of(rollup, grain)
            for table in tables.values():
                conn.execute(delete(table).where(table.c.bucket >= since, table.c.bucket < until))
            groups = tables["groups"]
            select_groups = _group_select(rollup, grain, since, until)
            conn.execute(
                insert(groups).from_select([c.name for c in select_groups.selected_columns], select_groups)
            )
            if "latency" in tables:
                query = _latency_select(rollup, grain, since, until)
                conn.execute(
                    insert(tables["latency"]).from_select([c.name for c in query.selected_columns], query)
                )
            if "members" in tables:
                query = _members_select(rollup, grain, since, until)
                conn.execute(
                    insert(tables["members"]).from_select([c.name for c in query.selected_columns], query)
                )


def oldest_raw_row(conn: Connection) -> datetime | None:
    """The oldest timestamp in any raw table the rollups read (None: all empty)."""
    oldest = [
        conn.execute(select(func.min(table.c.timestamp))).scalar()
        for table in {rollup.source for rollup in ROLLUPS}
    ]
    found = [moment for moment in oldest if moment is not None]
    return min(found) if found else None


def _hours_with_rows(conn: Connection, since: datetime, until: datetime) -> list[datetime]:
    """The hours in ``[since, until)`` that hold raw rows or rollup buckets (the others have
    nothing to rebuild: a range of years with a few rows costs a few hours, not thousands)."""
    hours: set[datetime] = set()
    for source in {rollup.source for rollup in ROLLUPS}:
        hour = COARSE.bucket_sql(source.c.timestamp)
        query = select(hour).where(source.c.timestamp >= since, source.c.timestamp < until).distinct()
        hours.update(conn.execute(query).scalars())
    for rollup in ROLLUPS:
        groups = tables_of(rollup, COARSE)["groups"]
        query = select(groups.c.bucket).where(groups.c.bucket >= since, groups.c.bucket < until).distinct()
        hours.update(conn.execute(query).scalars())
    return sorted(hours)


def rebuild(
    conn: Connection,
    start: datetime,
    end: datetime,
    progress: Progress | None = None,
    *,
    commit_each: bool = True,
) -> int:
    """Rebuild the hours that overlap ``[start, end)`` and hold rows, clamped to where raw rows
    exist; returns how many hours were rebuilt. Each hour is committed on its own unless
    ``commit_each`` is False (a migration, which runs in one transaction)."""
    oldest = oldest_raw_row(conn)
    if oldest is None:
        return 0
    since = COARSE.bucket(max(start, oldest))
    hours = _hours_with_rows(conn, since, end)
    for done, hour in enumerate(hours, start=1):
        rebuild_hour(conn, hour)
        if commit_each:
            conn.commit()
        if progress is not None:
            progress(done, len(hours))
    return len(hours)


def rebuild_all(conn: Connection, *, commit_each: bool = True) -> int:
    """Rebuild from the oldest raw row to now (the migration that creates the rollups)."""
    oldest = oldest_raw_row(conn)
    if oldest is None:
        return 0
    return rebuild(conn, oldest, datetime.now(oldest.tzinfo) + timedelta(hours=1), commit_each=commit_each)
