"""Rebuild rollup buckets from raw rows: after a migration, after a change of definitions, or to
check the write-time rollups (a test compares the two).

A range is rebuilt one hour at a time (whole hourly buckets, so the 5-minute ones inside are whole
too), each hour in its own transaction: the old buckets deleted, the new ones aggregated from the
raw rows by the same definitions the writer uses. Then each day touched is rebuilt from its hourly
buckets (a day is exactly its 24 hours). Raw rows outlive neither their retention nor a purge, and
rollups do: the range is clamped to the oldest raw row of each table, so a rebuild never wipes the
history that only the rollups still hold, and a day is summed from hours, never from raw rows, so
its hours before the oldest raw row still count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Table,
    cast,
    column,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
    values,
)
from sqlalchemy.sql import Select, Subquery

from exporter.distinct_sketch import sketch_sql, union_sql
from exporter.histogram import arrays_sql, bucket_sql, quantiles
from exporter.rollups.definitions import (
    COARSE,
    DAILY,
    GRAINS,
    LATENCY_BINS,
    LATENCY_COUNTS,
    PACKED_BINS,
    PACKED_COUNTS,
    ROLLUPS,
    STORED_QUANTILES,
    Grain,
    Rollup,
    sketch_column,
)
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


# The grains rebuilt from raw rows, an hour at a time; the daily one is summed from the hours.
HOURLY_AND_FINER = tuple(grain for grain in GRAINS if grain.width <= COARSE.width)

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


def _sketch_select(rollup: Rollup, grain: Grain, since: datetime, until: datetime) -> Select[Any]:
    source = rollup.source
    bucket = grain.bucket_sql(source.c.timestamp).label("bucket")
    keys = [key.of_sql(source).label(key.name) for key in rollup.keys]
    sketches = [union_sql(sketch_sql(source.c[c])).label(sketch_column(c)) for c in rollup.distinct]
    # A group none of whose rows has a value gets no row: its count is 0 either way.
    counted = or_(*(source.c[c].is_not(None) for c in rollup.distinct))
    query = select(bucket, *keys, *sketches).where(counted).group_by(*_positions(len(keys) + 1))
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


def _set_histograms(conn: Connection, groups: Table, keys: list[str], long_rows: Subquery) -> None:
    """Fill the histograms of ``groups`` from long-format ``(bucket, keys..., bin, count)`` rows."""
    histograms = arrays_sql(long_rows, ["bucket", *keys], packed_too=True).subquery("histograms")
    conn.execute(
        update(groups)
        .where(*(groups.c[name] == histograms.c[name] for name in ["bucket", *keys]))
        .values(
            {
                LATENCY_BINS: histograms.c.bins,
                LATENCY_COUNTS: histograms.c.counts,
                PACKED_BINS: histograms.c.packed_bins,
                PACKED_COUNTS: histograms.c.packed_counts,
            }
        )
    )


_RANKED_PER_STATEMENT = 1000  # rows whose quantiles one UPDATE sets (a few bound values per row)


def _store_quantiles(
    conn: Connection, groups: Table, keys: list[str], since: datetime, until: datetime
) -> None:
    """Rank and store the quantiles (``STORED_QUANTILES``) of each row of ``groups`` in
    ``[since, until)`` from its bins, by ``histogram.quantiles``: the one ranking there is."""
    pk = ["bucket", *keys]
    rows = conn.execute(
        select(*(groups.c[name] for name in pk), groups.c[LATENCY_BINS], groups.c[LATENCY_COUNTS]).where(
            groups.c.bucket >= since, groups.c.bucket < until
        )
    ).all()
    fractions = {name: q for q, name in STORED_QUANTILES.items()}
    ranked = [
        (*row[: len(pk)], *quantiles(dict(zip(row[-2], row[-1], strict=True)), fractions).values())
        for row in rows
    ]
    columns = [column(name, groups.c[name].type) for name in pk]
    columns += [column(name, Float()) for name in fractions]
    for at in range(0, len(ranked), _RANKED_PER_STATEMENT):
        found = values(*columns, name="ranked").data(ranked[at : at + _RANKED_PER_STATEMENT])
        conn.execute(
            update(groups)
            .where(*(groups.c[name] == found.c[name] for name in pk))
            # Cast: a column of NULLs alone (rows without bins) would come out of VALUES as text.
            .values({name: cast(found.c[name], Float) for name in fractions})
        )


def _insert(conn: Connection, table: Table, query: Select[Any]) -> None:
    conn.execute(insert(table).from_select([c.name for c in query.selected_columns], query))


def rebuild_from_raw(
    conn: Connection, rollups: Iterable[Rollup], grain: Grain, since: datetime, until: datetime
) -> None:
    """Rebuild ``rollups``' buckets of ``grain`` in ``[since, until)`` (whole buckets) from raw rows."""
    for rollup in rollups:
        keys = [key.name for key in rollup.keys]
        tables = tables_of(rollup, grain)
        for table in tables.values():
            conn.execute(delete(table).where(table.c.bucket >= since, table.c.bucket < until))
        _insert(conn, tables["groups"], _group_select(rollup, grain, since, until))
        if rollup.latency is not None:
            long_rows = _latency_select(rollup, grain, since, until).subquery("long_rows")
            _set_histograms(conn, tables["groups"], keys, long_rows)
            _store_quantiles(conn, tables["groups"], keys, since, until)
        if "sketches" in tables:
            _insert(conn, tables["sketches"], _sketch_select(rollup, grain, since, until))


def rebuild_hour(conn: Connection, since: datetime, rollups: Sequence[Rollup] = ROLLUPS) -> None:
    """Rebuild the rollups' 5-minute and hourly buckets in ``[since, since + 1 h)`` (``since`` on
    the hour) from raw rows; the day holding them is ``rebuild_day``'s."""
    for grain in HOURLY_AND_FINER:
        rebuild_from_raw(conn, rollups, grain, since, since + COARSE.width)


def roll_up(
    conn: Connection, rollups: Iterable[Rollup], finer: Grain, coarser: Grain, bucket: datetime
) -> None:
    """Rebuild ``rollups``' ``coarser`` bucket ``bucket`` from its ``finer`` buckets: sums added,
    first and last seen the least and greatest, histograms merged, distinct sketches united."""
    until = bucket + coarser.width
    for rollup in rollups:
        keys = [key.name for key in rollup.keys]
        source, target = tables_of(rollup, finer), tables_of(rollup, coarser)
        for table in target.values():
            conn.execute(delete(table).where(table.c.bucket == bucket))
        parts = source["groups"]
        inside = (parts.c.bucket >= bucket, parts.c.bucket < until)
        start = literal(bucket, parts.c.bucket.type).label("bucket")
        measures = [_AGGREGATES[m.kind](parts.c[m.name]).label(m.name) for m in rollup.measures]
        groups = select(start, *(parts.c[name] for name in keys), *measures).where(*inside)
        _insert(conn, target["groups"], groups.group_by(*(parts.c[name] for name in keys)))
        if rollup.latency is not None:
            unnested = (
                select(
                    *(parts.c[name] for name in keys),
                    func.unnest(parts.c[LATENCY_BINS]).label("bin"),
                    func.unnest(parts.c[LATENCY_COUNTS]).label("n"),
                )
                .where(*inside)
                .subquery("unnested")
            )
            long_rows = (
                select(
                    literal(bucket, parts.c.bucket.type).label("bucket"),
                    *(unnested.c[name] for name in keys),
                    unnested.c.bin,
                    func.sum(unnested.c.n).label("count"),
                )
                .group_by(*(unnested.c[name] for name in keys), unnested.c.bin)
                .subquery("long_rows")
            )
            _set_histograms(conn, target["groups"], keys, long_rows)
            _store_quantiles(conn, target["groups"], keys, bucket, until)
        if "sketches" in target:
            parted = source["sketches"]
            united = [union_sql(parted.c[name]).label(name) for name in map(sketch_column, rollup.distinct)]
            sketches = select(start, *(parted.c[name] for name in keys), *united).where(
                parted.c.bucket >= bucket, parted.c.bucket < until
            )
            _insert(conn, target["sketches"], sketches.group_by(*(parted.c[name] for name in keys)))


def rebuild_day(conn: Connection, day: datetime, rollups: Sequence[Rollup] = ROLLUPS) -> None:
    """Rebuild the rollups' daily bucket ``day`` from their hourly buckets."""
    roll_up(conn, rollups, COARSE, DAILY, day)


def oldest_raw_row(conn: Connection, rollups: Sequence[Rollup] = ROLLUPS) -> datetime | None:
    """The oldest timestamp in any raw table the rollups read (None: all empty)."""
    oldest = [
        conn.execute(select(func.min(table.c.timestamp))).scalar()
        for table in {rollup.source for rollup in rollups}
    ]
    found = [moment for moment in oldest if moment is not None]
    return min(found) if found else None


def _hours_with_rows(
    conn: Connection, since: datetime, until: datetime, rollups: Sequence[Rollup]
) -> list[datetime]:
    """The hours in ``[since, until)`` that hold raw rows or rollup buckets (the others have
    nothing to rebuild: a range of years with a few rows costs a few hours, not thousands)."""
    hours: set[datetime] = set()
    for source in {rollup.source for rollup in rollups}:
        hour = COARSE.bucket_sql(source.c.timestamp)
        query = select(hour).where(source.c.timestamp >= since, source.c.timestamp < until).distinct()
        hours.update(conn.execute(query).scalars())
    for rollup in rollups:
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
    rollups: Sequence[Rollup] = ROLLUPS,
) -> int:
    """Rebuild the hours that overlap ``[start, end)`` and hold rows, clamped to where raw rows
    exist; returns how many hours were rebuilt. Each hour is committed on its own unless
    ``commit_each`` is False (a migration, which runs in one transaction)."""
    oldest = oldest_raw_row(conn, rollups)
    if oldest is None:
        return 0
    since = COARSE.bucket(max(start, oldest))
    hours = _hours_with_rows(conn, since, end, rollups)
    for done, hour in enumerate(hours, start=1):
        rebuild_hour(conn, hour, rollups)
        next_day = DAILY.bucket(hour + COARSE.width)
        if done == len(hours) or DAILY.bucket(hours[done]) >= next_day:  # the day's last hour
            rebuild_day(conn, DAILY.bucket(hour), rollups)
        if commit_each:
            conn.commit()
        if progress is not None:
            progress(done, len(hours))
    return len(hours)


def rank_unranked(conn: Connection, before: Mapping[str, datetime | None]) -> int:
    """Store the quantiles of the latency rollup rows that have none yet and are older than
    ``before`` (per source table: its oldest raw row; newer buckets are rebuilt from the raw rows),
    from their bins; a day at a time, so a year of 5-minute rows is never in memory at once.
    The migration that adds them. Returns the days ranked."""
    days = 0
    for rollup in ROLLUPS:
        oldest = before.get(rollup.source.name)
        if rollup.latency is None or oldest is None:
            continue
        keys = [key.name for key in rollup.keys]
        for grain in GRAINS:
            groups = tables_of(rollup, grain)["groups"]
            unranked = (
                groups.c[STORED_QUANTILES[0.5]].is_(None)
                & (func.cardinality(groups.c[LATENCY_BINS]) > 0)
                & (groups.c.bucket < oldest)
            )
            day = DAILY.bucket_sql(groups.c.bucket)
            for (start,) in conn.execute(select(day).where(unranked).distinct().order_by(day)).all():
                _store_quantiles(conn, groups, keys, start, min(start + DAILY.width, oldest))
                days += 1
    return days


def rebuild_days_from_hours(conn: Connection) -> int:
    """Build every daily bucket from the hourly ones (the migration that adds the daily grain:
    from the hours, so the history older than the raw rows is in the days too)."""
    days: set[datetime] = set()
    for rollup in ROLLUPS:
        hours = select(tables_of(rollup, COARSE)["groups"].c.bucket).distinct()
        days.update(DAILY.bucket(hour) for hour in conn.execute(hours).scalars())
    for day in sorted(days):
        rebuild_day(conn, day)
    return len(days)


def rebuild_all(conn: Connection, *, commit_each: bool = True, rollups: Sequence[Rollup] = ROLLUPS) -> int:
    """Rebuild ``rollups`` from the oldest raw row to now (the migrations that create rollups)."""
    oldest = oldest_raw_row(conn, rollups)
    if oldest is None:
        return 0
    end = datetime.now(oldest.tzinfo) + timedelta(hours=1)
    return rebuild(conn, oldest, end, commit_each=commit_each, rollups=rollups)
