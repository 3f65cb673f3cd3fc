"""Monthly range partitions on "timestamp" for the five tables: create them, convert old tables.

Why monthly: expiry drops whole partitions, so a month is the granularity of retention (a row
goes at the first purge after its whole month is older than the cut-off: kept N to N+31 days).
Daily partitions would expire more precisely, but multiply the partition count by 30: a table
kept for years would carry thousands of partitions, and every query that cannot prune them
locks each one and its indexes (the shared lock table holds 64 x max_connections locks by
default); converting years of history in one migration transaction would exhaust it.

Layout of a table: ``<table>_history`` (everything before the first monthly partition, only
when a table with old rows is converted), ``<table>_pYYYYMM`` for each month (UTC) from then
on up to ``PREMAKE_MONTHS`` ahead, and ``<table>_default`` so that no row is ever refused
(a timestamp far in the future, or in a month whose partition has not been created). Rows in
the default partition never block creating a partition for their month: they are moved into it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, MetaData, PrimaryKeyConstraint, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateTable

from exporter.schema import TABLES

logger = logging.getLogger(__name__)

PARTITION_KEY = "timestamp"
# Months created ahead of the current one: an exporter that runs alone (no service doing the
# daily maintenance) still finds a partition for its rows for this long after its last start.
PREMAKE_MONTHS = 3
# Months before the current one that a converted table gets monthly partitions for; older rows
# share one history partition, dropped once all of it has expired.
HISTORY_MONTHS = 3
# Maintenance waits at most this long for a table lock, so that it never queues the writers
# behind a long query (an export); it is retried at the next start or daily run.
LOCK_TIMEOUT = "5s"
LOCK_KEY = 0x484F4D45504F54  # the migrations' advisory lock: one schema change at a time


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


def _quote(conn: Connection, name: str) -> str:
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
    parent, default = _quote(conn, table), _quote(conn, default_name(table))
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
            f"CREATE TABLE {_quote(conn, name)} PARTITION OF {parent} "
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
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
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


# --- converting a plain table (migration 2) ------------------------------------------------------------
def _old_columns(conn: Connection, table: str) -> list[tuple[str, str, bool]]:
    """(name, type, nullable) of each column of a table, in order."""
    rows = conn.execute(
        text(
            "SELECT attname, format_type(atttypid, atttypmod), NOT attnotnull FROM pg_attribute "
            "WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        ),
        {"t": table},
    ).all()
    return [(name, type_, bool(nullable)) for name, type_, nullable in rows]


def _wider(old_type: str, new_type: str) -> bool:
    """Whether an old text column may hold longer values than the new one (keep the old type)."""
    if not new_type.startswith("character varying("):
        return False
    if old_type == "text" or old_type == "character varying":
        return True
    if old_type.startswith("character varying("):
        return int(old_type[18:-1]) > int(new_type[18:-1])
    return False


def _drop_indexes_and_keys(conn: Connection, table: str) -> None:
    """Free the index and constraint names for the new table (the old one is dropped anyway)."""
    quoted = _quote(conn, table)
    for (name,) in conn.execute(
        text(
            "SELECT conname FROM pg_constraint "
            "WHERE conrelid = to_regclass(:t) AND contype IN ('p', 'u', 'x')"
        ),
        {"t": table},
    ).all():
        conn.execute(text(f"ALTER TABLE {quoted} DROP CONSTRAINT {_quote(conn, name)}"))
    for (name,) in conn.execute(
        text(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = to_regclass(:t)"
        ),
        {"t": table},
    ).all():
        conn.execute(text(f"DROP INDEX {_quote(conn, name)}"))


def _grants(conn: Connection, table: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        text(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, a.privilege_type "
            "FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
            "LEFT JOIN pg_roles r ON r.oid = a.grantee "
            "WHERE c.oid = to_regclass(:t) AND a.grantee <> c.relowner"
        ),
        {"t": table},
    ).all()
    return [(grantee, privilege) for grantee, privilege in rows]


def convert_to_partitioned(conn: Connection, table: str, *, now: datetime | None = None) -> None:
    """Replace a plain table by a partitioned one with the same rows, ids and grants.

    Runs inside the caller's transaction (a migration): all of it happens, or none of it.
    """
    if (
        is_partitioned(conn, table)
        or conn.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is None
    ):
        return
    old = f"{table}_unpartitioned"
    quoted, quoted_old = _quote(conn, table), _quote(conn, old)
    conn.execute(text(f"ALTER TABLE {quoted} RENAME TO {quoted_old}"))
    old_sequence = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": old}).scalar()
    if old_sequence is not None:
        # The new identity sequence takes the usual name; the old one goes with its table.
        conn.execute(text(f"ALTER SEQUENCE {old_sequence} RENAME TO {_quote(conn, old + '_id_seq')}"))
        old_sequence = f"{_quote(conn, old + '_id_seq')}"
    _drop_indexes_and_keys(conn, old)
    grants = _grants(conn, old)

    new = TABLES[table].to_metadata(MetaData())
    new.c[PARTITION_KEY].primary_key = True
    new.append_constraint(PrimaryKeyConstraint(new.c.id, new.c[PARTITION_KEY], name=f"{table}_pkey"))
    new.dialect_options["postgresql"]["partition_by"] = f'RANGE ("{PARTITION_KEY}")'
    old_columns = _old_columns(conn, old)
    by_name = {name: (type_, nullable) for name, type_, nullable in old_columns}
    for column in new.columns:
        if column.name in by_name and by_name[column.name][1] and column.name not in ("id", PARTITION_KEY):
            column.nullable = True  # the old rows may hold NULLs there: keep them as they are
    conn.execute(CreateTable(new))
    new_types = {name: type_ for name, type_, _ in _old_columns(conn, table)}
    for name, old_type, _ in old_columns:
        if name not in new_types:
            # A column only the old system had: keep it and its values.
            conn.execute(text(f"ALTER TABLE {quoted} ADD COLUMN {_quote(conn, name)} {old_type}"))
        elif _wider(old_type, new_types[name]):
            conn.execute(text(f"ALTER TABLE {quoted} ALTER COLUMN {_quote(conn, name)} TYPE {old_type}"))

    key = _quote(conn, PARTITION_KEY)
    if by_name.get(PARTITION_KEY, ("", False))[1]:
        undated = conn.execute(text(f"UPDATE {quoted_old} SET {key} = now() WHERE {key} IS NULL")).rowcount
        if undated:
            logger.warning("%s: %d rows without a timestamp were given the migration time", table, undated)
    oldest = conn.execute(text(f"SELECT min({key}) FROM {quoted_old}")).scalar()
    current = month_start(now or datetime.now(UTC))
    # Monthly partitions from the oldest row's month (at most HISTORY_MONTHS back; none for empty
    # past months: every partition costs, e.g. TRUNCATE touches each one's files) to months ahead.
    first = (
        current
        if oldest is None
        else min(current, max(month_start(oldest), add_months(current, -HISTORY_MONTHS)))
    )
    if oldest is not None and oldest < first:
        conn.execute(
            text(
                f"CREATE TABLE {_quote(conn, history_name(table))} PARTITION OF {quoted} "
                f"FOR VALUES FROM (MINVALUE) TO ('{first.isoformat()}')"
            )
        )
    month = first
    while month <= add_months(current, PREMAKE_MONTHS):
        create_month_partition(conn, table, month, add_months(month, 1))
        month = add_months(month, 1)
    conn.execute(text(f"CREATE TABLE {_quote(conn, default_name(table))} PARTITION OF {quoted} DEFAULT"))

    columns = ", ".join(_quote(conn, name) for name, _, _ in old_columns)
    moved = conn.execute(
        text(f"INSERT INTO {quoted} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} FROM {quoted_old}")
    ).rowcount
    # Indexes after the rows: one sort per index instead of a tree insert per row.
    for index in new.indexes:
        index.create(conn)
    _continue_ids(conn, table, old_sequence)
    for grantee, privilege in grants:
        conn.execute(text(f"GRANT {privilege} ON {quoted} TO {grantee}"))
    conn.execute(text(f"DROP TABLE {quoted_old}"))
    logger.info("%s is now partitioned by month; %d rows kept", table, moved)


def _continue_ids(conn: Connection, table: str, old_sequence: str | None) -> None:
    """Make the new identity continue after both the old sequence and the highest id."""
    following = conn.execute(text(f"SELECT coalesce(max(id), 0) + 1 FROM {_quote(conn, table)}")).scalar_one()
    if old_sequence is not None:
        old_next = conn.execute(
            text(f"SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM {old_sequence}")
        ).scalar_one()
        following = max(following, old_next)
    sequence = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar_one()
    conn.execute(text("SELECT setval(:s, :v, false)"), {"s": sequence, "v": following})
