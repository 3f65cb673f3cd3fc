"""Which rollup buckets are behind their raw rows: triggers mark them, readers ask up to when
the rollups can be trusted.

Every statement that inserts, updates or deletes rows of a raw table the rollups read marks the
5-minute buckets of those rows in ``rollup_stale_buckets`` (one statement-level trigger per kind
of change, reading the statement's transition table: a COPY of 512 rows marks one or two
buckets in one small insert). Whoever writes is seen: our writer's COPY, HOMEPOT's own INSERTs
into a shared table, the trace-link merges' DELETEs, an UPDATE by hand. Dropping a partition (a
purge) fires nothing, so history kept only by the rollups stays.

A reader takes the rollups up to ``fresh_until`` (the oldest stale bucket of the table, or
everything when none is) and raw rows after it, so an answer never lags the rows, whether or not
``refresh`` has run yet.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Table, func, insert, literal, select

from exporter.rollups.definitions import FINE, ROLLUPS
from exporter.rollups.schema import stale_buckets

SOURCES = sorted({rollup.source.name for rollup in ROLLUPS})

_FINE_WIDTH = f"{int(FINE.width.total_seconds())} seconds"


def _mark(transition: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION homepot_rollups_mark_{transition}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {stale_buckets.name} (source, bucket)
    SELECT DISTINCT TG_TABLE_NAME, date_bin('{_FINE_WIDTH}', timestamp, '1970-01-01 00:00:00+00')
    FROM {transition}_rows;
    RETURN NULL;
END $$"""


def _trigger(table: str, event: str, transition: str) -> list[str]:
    name = f"homepot_rollups_{event.lower()}"
    return [
        f"DROP TRIGGER IF EXISTS {name} ON {table}",
        f"CREATE TRIGGER {name} AFTER {event} ON {table} "
        f"REFERENCING {transition.upper()} TABLE AS {transition}_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION homepot_rollups_mark_{transition}()",
    ]


# The functions, then per raw table its three triggers (UPDATE reads the new rows: a timestamp
# never changes, a user or endpoint filled in later does). Idempotent: migrations run it again.
TRIGGERS_DDL: list[str] = [
    _mark("new"),
    _mark("old"),
    *(
        statement
        for table in SOURCES
        for event, transition in (("INSERT", "new"), ("UPDATE", "new"), ("DELETE", "old"))
        for statement in _trigger(table, event, transition)
    ),
]


def mark_all(conn: Connection, source: Table) -> int:
    """Mark every 5-minute bucket holding rows of ``source`` stale (a migration that changes what
    the rollups keep: ``refresh`` rebuilds them in the background, and reads take the raw rows
    until it has); returns how many were marked."""
    bucket = FINE.bucket_sql(source.c.timestamp)
    # Counted from RETURNING: a cursor's rowcount for INSERT ... SELECT is -1 when it inserts none.
    marked = conn.execute(
        insert(stale_buckets)
        .from_select(["source", "bucket"], select(literal(source.name), bucket).distinct())
        .returning(stale_buckets.c.id)
    )
    return len(marked.all())


def fresh_until(conn: Connection, source: Table) -> datetime | None:
    """The start of the oldest stale bucket of ``source`` (the rollups are exact before it);
    None when none is stale."""
    query = select(func.min(stale_buckets.c.bucket)).where(stale_buckets.c.source == source.name)
    found: datetime | None = conn.execute(query).scalar()
    return found
