"""Retention: rows older than a table's retention period are removed, a whole month at a time.

``purge`` drops every partition that lies entirely before the cut-off (``now`` minus the table's
retention days) and deletes row by row only in the default partition, where stray rows land.
The service runs ``run_retention`` once a day (``query_api.retention_schedule``);
``homepot-analytics purge`` runs it on demand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, func, inspect, select, text
from sqlalchemy.exc import DBAPIError

from exporter.own_logging import exporter_logger
from exporter.partitions import (
    LOCK_TIMEOUT,
    PARTITION_KEY,
    Partition,
    ensure_partitions,
    is_partitioned,
    partitions,
    quote_identifier,
)
from exporter.rollups.schema import ROLLUP_TABLES
from exporter.schema import TABLES
from homepot_foundation.settings import Settings

logger = exporter_logger(__name__)

# Only one process purges at a time; the others skip that day's run.
_PURGE_LOCK_KEY = 0x484F4D45505247  # "HOMEPRG"


def retention_days_for(settings: Settings, table: str) -> int:
    """The table's retention in days: its own setting, else the default (0: kept forever)."""
    override = getattr(settings, f"retention_days_{table}", None)
    return settings.retention_days if override is None else int(override)


@dataclass
class TablePurge:
    """What a purge removed from one table (or would remove, for a dry run)."""

    table: str
    retention_days: int
    cutoff: datetime | None
    dropped: list[tuple[str, int]] = field(default_factory=list)  # (partition, rows)
    default_rows: int = 0
    skipped: list[str] = field(default_factory=list)  # partitions whose lock was busy
    unpartitioned: bool = False  # the table predates migration 2: nothing can be dropped

    deleted_rows: int = 0  # rows deleted by bucket (the rollups)

    @property
    def rows(self) -> int:
        return sum(rows for _, rows in self.dropped) + self.default_rows + self.deleted_rows

    def describe(self) -> str:
        if self.cutoff is None:
            return f"{self.table}: kept forever (retention 0), nothing removed"
        if self.unpartitioned:
            return f"{self.table}: not partitioned yet, nothing removed (run homepot-analytics create-tables)"
        head = f"{self.table}: {self.rows} rows older than {self.cutoff:%Y-%m-%d %H:%M} UTC"
        parts = []
        if self.dropped:
            names = ", ".join(name for name, _ in self.dropped)
            parts.append(f"{len(self.dropped)} partitions dropped ({names})")
        if self.default_rows:
            parts.append(f"{self.default_rows} rows deleted from the default partition")
        if self.deleted_rows:
            parts.append(f"{self.deleted_rows} buckets' rows deleted")
        if self.skipped:
            parts.append(f"skipped (table busy, retried next run): {', '.join(self.skipped)}")
        return f"{head}: {'; '.join(parts) if parts else 'nothing to remove'}"


def _expired(partition: Partition, cutoff: datetime) -> bool:
    return not partition.is_default and partition.end is not None and partition.end <= cutoff


def _purge_table(conn: Connection, table: str, cutoff: datetime, result: TablePurge, dry_run: bool) -> None:
    with conn.begin():
        if not is_partitioned(conn, table):
            logger.warning("%s is not partitioned (migration 2 pending); retention skipped", table)
            result.unpartitioned = True
            return
        existing = partitions(conn, table)
    for partition in existing:
        if _expired(partition, cutoff):
            _drop_partition(conn, partition, result, dry_run)
    default = next((p for p in existing if p.is_default), None)
    if default is not None:
        quoted = quote_identifier(conn, default.name)
        condition = f"{quote_identifier(conn, PARTITION_KEY)} < :cutoff"
        with conn.begin():
            if dry_run:
                statement = f"SELECT count(*) FROM {quoted} WHERE {condition}"
                result.default_rows = conn.execute(text(statement), {"cutoff": cutoff}).scalar_one()
            else:
                deleted = conn.execute(text(f"DELETE FROM {quoted} WHERE {condition}"), {"cutoff": cutoff})
                result.default_rows = max(deleted.rowcount, 0)


def _drop_partition(conn: Connection, partition: Partition, result: TablePurge, dry_run: bool) -> None:
    quoted = quote_identifier(conn, partition.name)
    # Counted before the exclusive lock is taken: counting under it would stall the writers.
    with conn.begin():
        rows = conn.execute(text(f"SELECT count(*) FROM {quoted}")).scalar_one()
    if dry_run:
        result.dropped.append((partition.name, rows))
        return
    try:
        with conn.begin():
            conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            conn.execute(text(f"DROP TABLE {quoted}"))
    except DBAPIError as error:
        logger.warning("could not drop %s now (%s); retried at the next run", partition.name, error.orig)
        result.skipped.append(partition.name)
        return
    result.dropped.append((partition.name, rows))


def purge(
    engine: Engine, settings: Settings, *, now: datetime | None = None, dry_run: bool = False
) -> list[TablePurge]:
    """Apply each table's retention now; returns what was removed per table."""
    now = now or datetime.now(UTC)
    results = []
    with engine.connect() as conn:
        for table in TABLES:
            days = retention_days_for(settings, table)
            cutoff = now - timedelta(days=days) if days > 0 else None
            result = TablePurge(table, days, cutoff)
            if cutoff is not None:
                _purge_table(conn, table, cutoff, result, dry_run)
            results.append(result)
        results.append(_purge_rollups(conn, settings.rollup_retention_days, now, dry_run))
    return results


def _purge_rollups(conn: Connection, days: int, now: datetime, dry_run: bool) -> TablePurge:
    """The rollups' own retention (default 400 days, longer than the raw rows'): whole buckets
    older than the cutoff go, table by table, each in its own short transaction."""
    cutoff = now - timedelta(days=days) if days > 0 else None
    result = TablePurge("rollups", days, cutoff)
    if cutoff is None:
        return result
    with conn.begin():
        # A database whose migrations are pending (no rollups yet): reported, as such a table is.
        result.unpartitioned = not inspect(conn).has_table(next(iter(ROLLUP_TABLES.values()))["groups"].name)
    if result.unpartitioned:
        return result
    for parts in ROLLUP_TABLES.values():
        for table in parts.values():
            with conn.begin():
                if dry_run:
                    statement = select(func.count()).select_from(table).where(table.c.bucket < cutoff)
                    result.deleted_rows += conn.execute(statement).scalar_one()
                else:
                    deleted = conn.execute(delete(table).where(table.c.bucket < cutoff))
                    result.deleted_rows += max(deleted.rowcount, 0)
    return result


def run_retention(
    engine: Engine, settings: Settings, *, now: datetime | None = None
) -> list[TablePurge] | None:
    """The daily maintenance: purge, then create the coming months' partitions.

    Returns None when another process holds the purge lock (it is doing today's run)."""
    # The lock belongs to a transaction left open while the purge runs on other connections: a
    # session lock would stay behind on a pooled server connection (pgbouncer, transaction mode).
    # The transaction takes no snapshot between statements, so it holds back no vacuum.
    with engine.connect() as conn, conn.begin():
        if not conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _PURGE_LOCK_KEY}).scalar():
            logger.info("retention: another process is purging; skipped")
            return None
        results = purge(engine, settings, now=now)
        ensure_partitions(engine, now=now)
        return results
