"""Monthly range partitions on "timestamp" for the five tables: their layout, and creating them.

Why monthly: expiry drops whole partitions, so a month is the granularity of retention (a row
goes at the first purge after its whole month is older than the cut-off: kept N to N+31 days).
Daily partitions would expire more precisely, but multiply the partition count by 30: a table
kept for years would carry thousands of partitions, and every query that cannot prune them
locks each one and its indexes (the shared lock table holds 64 x max_connections locks by
default); converting years of history in one migration transaction would exhaust it.

Layout of a table: ``<table>_history`` (everything before the first monthly partition, only
when a table with old rows is converted, ``exporter.partition_conversion``),
``<table>_pYYYYMM`` for each month (UTC) from then on up to ``PREMAKE_MONTHS`` ahead, and
``<table>_default`` so that no row is ever refused (a timestamp far in the future, or in a month
whose partition has not been created). Rows in the default partition never block creating a
partition for their month: they are moved into it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from exporter.own_logging import exporter_logger
from exporter.schema import TABLES

logger = exporter_logger(__name__)

PARTITION_KEY = "timestamp"
# Months created ahead of the current one: an exporter that runs alone (no service doing the
# daily maintenance) still finds a partition for its rows for this long after its last start.
PREMAKE_MONTHS = 3
# Maintenance waits at most this long for a table lock, so that it never queues the writers
# behind a long query (an export); it is retried at the next start or daily run.
LOCK_TIMEOUT = "5s"
# The advisory lock of every schema change (migrations, partition maintenance): one at a time.
SCHEMA_LOCK_KEY = 0x484F4D45504F54  # "HOMEPOT"


@dataclass(frozen=True)
class Partition:
    """One partition and its bounds (None: unbounded, or the default partition)."""

    name: str
    start: datetime | None
    end: datetime | None
    is_default: bool = False


# --- months ------------------------------------------------------------------------------------
def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of the month ``moment`` falls in."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(start: datetime, months: int) -> datetime:
    index = start.year * 12 + (start.month - 1) + months
    return start.replace(year=index // 12, month=index % 12 + 1)


def partition_name(table: str, start: datetime) -> str:
    return f"{table}_p{start:%Y%m}"


def default_name(table: str) -> str:
    return f"{table}_default"


def history_name(table: str) -> str:
    return f"{table}_history"


def quote_identifier(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


# --- catalog -------------------------------------------------------------------------------------
def is_partitioned(conn: Connection, table: str) -> bool:
    kind = conn.execute(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:name)"), {"name": table}
    ).scalar()
    return kind == "p"


def partitions(conn: Connection, table: str) -> list[Partition]:
    """The partitions of ``table`` with their bounds, oldest first, the default one last."""
    # The bound expression prints timestamps with their offset: cast back, whatever TimeZone is.
    rows = conn.execute(
        text(
            """
            SELECT c.relname,
                   b.bound = 'DEFAULT' AS is_default,
                   (regexp_match(b.bound, 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz,
                   (regexp_match(b.bound, 'TO \\(''([^'']+)''\\)'))[1]::timestamptz
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) b
            WHERE i.inhparent = to_regclass(:name)
            """
        ),
        {"name": table},
    ).all()
    found = [Partition(name, start, end, bool(is_default)) for name, is_default, start, end in rows]
    far_past = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda p: (p.is_default, p.start or far_past))


def _overlaps(existing: Iterable[Partition], start: datetime, end: datetime) -> bool:
    for partition in existing:
        if partition.is_default:
            continue
        if (partition.start is None or partition.start < end) and (
            partition.end is None or start < partition.end
        ):
            return True
    return False


# --- creating partitions -----------------------------------------------------------------------------
def create_month_partition(conn: Connection, table: str, start: datetime, end: datetime) -> str:
    """Create the partition for [start, end) inside the caller's transaction, first moving the
    rows of that range out of the default partition (PostgreSQL refuses the partition otherwise)."""
    name = partition_name(table, start)
    parent, default = quote_identifier(conn, table), quote_identifier(conn, default_name(table))
    bounds = {"start": start, "end": end}
    has_default = conn.execute(
        text("SELECT to_regclass(:d) IS NOT NULL"), {"d": default_name(table)}
    ).scalar()
    moving = False
    if has_default:
        in_range = f'"{PARTITION_KEY}" >= :start AND "{PARTITION_KEY}" < :end'
        moving = bool(
            conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {default} WHERE {in_range})"), bounds).scalar()
        )
    if moving:
        conn.execute(
            text(f"CREATE TEMP TABLE _homepot_moving ON COMMIT DROP AS SELECT * FROM {default} LIMIT 0")
        )
        conn.execute(
            text(
                f"WITH moved AS (DELETE FROM {default} WHERE {in_range} RETURNING *) "
                "INSERT INTO _homepot_moving SELECT * FROM moved"
            ),
            bounds,
        )
    conn.execute(
        text(
            f"CREATE TABLE {quote_identifier(conn, name)} PARTITION OF {parent} "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
    )
    if moving:
        moved = conn.execute(
            text(f"INSERT INTO {parent} OVERRIDING SYSTEM VALUE SELECT * FROM _homepot_moving")
        ).rowcount
        conn.execute(text("DROP TABLE _homepot_moving"))
        logger.info("moved %d rows of %s from the default partition into %s", moved, table, name)
    return name


def ensure_partitions(
    engine: Engine,
    *,
    now: datetime | None = None,
    months_ahead: int = PREMAKE_MONTHS,
    tables: Iterable[str] = TABLES,
) -> dict[str, list[str]]:
    """Create the partitions of the current month and ``months_ahead`` after it where missing.

    Each table is handled in its own transaction under a lock timeout; a table whose lock is
    busy is skipped with a warning (its partitions exist months ahead). Returns what was created.
    """
    first = month_start(now or datetime.now(UTC))
    created: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for table in tables:
            try:
                with conn.begin():
                    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
                    if not is_partitioned(conn, table):
                        continue
                    existing = partitions(conn, table)
                    for offset in range(months_ahead + 1):
                        start, end = add_months(first, offset), add_months(first, offset + 1)
                        if not _overlaps(existing, start, end):
                            created.setdefault(table, []).append(
                                create_month_partition(conn, table, start, end)
                            )
            except DBAPIError as error:
                created.pop(table, None)
                logger.warning("could not create partitions of %s now (%s); will retry", table, error.orig)
    for names in created.values():
        logger.info("created partitions %s", ", ".join(names))
    return created
