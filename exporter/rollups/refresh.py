"""Bring the rollups up to date with their raw rows: rebuild the buckets the triggers marked.

Run every few seconds by the service (``query_api.rollup_schedule``) and by ``homepot-analytics
rollups refresh``. The write path does nothing for the rollups beyond the triggers' one small
insert per statement: the aggregation happens here, in PostgreSQL, over whole buckets.

Per raw table and hour holding stale 5-minute buckets, those 5-minute buckets are rebuilt from
the raw rows, the hour from its 5-minute buckets, then each day touched from its hours, and the
marks deleted, all in one transaction: a reader (``stale.fresh_until``) sees the rebuilt buckets
and the marks gone together. A rebuilt bucket is exact whatever reached the raw table (a replay
stores nothing twice, so it counts nothing twice; a late row is in its own old bucket).

Several processes may refresh (two sinks, ``--workers``): a transaction-level advisory lock lets
one at a time in; the others skip that round. A writer's mark is a new row each time, and the
refresh deletes only the marks it read (by id): rows committed before it read a mark are in the
rebuild (it reads the raw rows after), a mark committed after is left for the next round, and
until then readers take raw rows for its bucket. Buckets older than the oldest raw row of their
table are not rebuilt (their rows were purged: the rollups are all that is left); their marks
are just cleared.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, select, text

from exporter.rollups.definitions import BY_SOURCE, COARSE, DAILY, FINE
from exporter.rollups.rebuild import rebuild_from_raw, roll_up
from exporter.rollups.schema import stale_buckets
from exporter.schema import TABLES

logger = logging.getLogger(__name__)

REFRESH_LOCK_KEY = 0x484F4D45524F4C  # "HOMEROL"
CHUNK = 2000  # marks per transaction: a long backlog (a day of late rows) commits as it goes

Progress = Callable[[int, int], None]  # (marks done, marks at the start)


@dataclass
class RefreshResult:
    buckets: int = 0  # stale 5-minute buckets brought up to date
    skipped: int = 0  # marks cleared without a rebuild: older than the table's oldest raw row
    busy: bool = False  # another process held the refresh lock: nothing done this time


def refresh(conn: Connection, progress: Progress | None = None) -> RefreshResult:
    """Rebuild every stale bucket (committing per chunk of ``CHUNK``)."""
    result = RefreshResult()
    marks = 0
    total = int(conn.execute(select(func.count()).select_from(stale_buckets)).scalar_one())
    conn.commit()
    while True:
        with conn.begin():
            locked = conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": REFRESH_LOCK_KEY})
            if not locked.scalar():
                result.busy = True
                return result
            chunk = conn.execute(
                select(stale_buckets.c.id, stale_buckets.c.source, stale_buckets.c.bucket)
                .order_by(stale_buckets.c.bucket)
                .limit(CHUNK)
            ).all()
            if not chunk:
                return result
            done, skipped = _rebuild(conn, sorted({(row.source, row.bucket) for row in chunk}))
            conn.execute(delete(stale_buckets).where(stale_buckets.c.id.in_([row.id for row in chunk])))
        result.buckets += done
        result.skipped += skipped
        marks += len(chunk)
        if progress is not None:
            progress(marks, max(total, marks))


def _rebuild(conn: Connection, marks: list[tuple[str, datetime]]) -> tuple[int, int]:
    """Rebuild the marked buckets; returns (rebuilt, skipped)."""
    by_hour: dict[tuple[str, datetime], list[datetime]] = defaultdict(list)
    skipped = 0
    oldest: dict[str, datetime | None] = {}
    for source, bucket in marks:
        if source not in oldest:
            table = TABLES[source]
            oldest[source] = conn.execute(select(func.min(table.c.timestamp))).scalar()
        first = oldest[source]
        if source not in BY_SOURCE or first is None or bucket < FINE.bucket(first):
            skipped += 1
            continue
        by_hour[(source, COARSE.bucket(bucket))].append(bucket)
    days: set[tuple[str, datetime]] = set()
    for (source, hour), buckets in sorted(by_hour.items()):
        rollups = BY_SOURCE[source]
        # One statement set per hour: the span of its stale buckets (clean ones between them are
        # rebuilt too, to the same rows).
        rebuild_from_raw(conn, rollups, FINE, min(buckets), max(buckets) + FINE.width)
        roll_up(conn, rollups, FINE, COARSE, hour)
        days.add((source, DAILY.bucket(hour)))
    for source, day in sorted(days):
        roll_up(conn, BY_SOURCE[source], COARSE, DAILY, day)
    return len(marks) - skipped, skipped
