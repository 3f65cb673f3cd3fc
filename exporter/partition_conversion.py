"""Migration 2: a plain table (of an older schema, or of the HOMEPOT system) replaced by one
partitioned by month (``exporter.partitions``) that keeps its rows, ids and grants."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, MetaData, PrimaryKeyConstraint, text
from sqlalchemy.schema import CreateTable

from exporter.own_logging import exporter_logger
from exporter.partitions import (
    PARTITION_KEY,
    PREMAKE_MONTHS,
    add_months,
    create_month_partition,
    default_name,
    history_name,
    is_partitioned,
    month_start,
    quote_identifier,
)
from exporter.schema import TABLES

# The name these messages were always logged under (before the module split).
logger = exporter_logger("exporter.partitions")

# Months before the current one that a converted table gets monthly partitions for; older rows
# share one history partition, dropped once all of it has expired.
HISTORY_MONTHS = 3


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
    quoted = quote_identifier(conn, table)
    for (name,) in conn.execute(
        text(
            "SELECT conname FROM pg_constraint "
            "WHERE conrelid = to_regclass(:t) AND contype IN ('p', 'u', 'x')"
        ),
        {"t": table},
    ).all():
        conn.execute(text(f"ALTER TABLE {quoted} DROP CONSTRAINT {quote_identifier(conn, name)}"))
    for (name,) in conn.execute(
        text(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = to_regclass(:t)"
        ),
        {"t": table},
    ).all():
        conn.execute(text(f"DROP INDEX {quote_identifier(conn, name)}"))


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
    quoted, quoted_old = quote_identifier(conn, table), quote_identifier(conn, old)
    conn.execute(text(f"ALTER TABLE {quoted} RENAME TO {quoted_old}"))
    old_sequence = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": old}).scalar()
    if old_sequence is not None:
        # The new identity sequence takes the usual name; the old one goes with its table.
        conn.execute(
            text(f"ALTER SEQUENCE {old_sequence} RENAME TO {quote_identifier(conn, old + '_id_seq')}")
        )
        old_sequence = f"{quote_identifier(conn, old + '_id_seq')}"
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
            conn.execute(text(f"ALTER TABLE {quoted} ADD COLUMN {quote_identifier(conn, name)} {old_type}"))
        elif _wider(old_type, new_types[name]):
            conn.execute(
                text(f"ALTER TABLE {quoted} ALTER COLUMN {quote_identifier(conn, name)} TYPE {old_type}")
            )

    key = quote_identifier(conn, PARTITION_KEY)
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
                f"CREATE TABLE {quote_identifier(conn, history_name(table))} PARTITION OF {quoted} "
                f"FOR VALUES FROM (MINVALUE) TO ('{first.isoformat()}')"
            )
        )
    month = first
    while month <= add_months(current, PREMAKE_MONTHS):
        create_month_partition(conn, table, month, add_months(month, 1))
        month = add_months(month, 1)
    conn.execute(
        text(f"CREATE TABLE {quote_identifier(conn, default_name(table))} PARTITION OF {quoted} DEFAULT")
    )

    columns = ", ".join(quote_identifier(conn, name) for name, _, _ in old_columns)
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
    following = conn.execute(
        text(f"SELECT coalesce(max(id), 0) + 1 FROM {quote_identifier(conn, table)}")
    ).scalar_one()
    if old_sequence is not None:
        old_next = conn.execute(
            text(f"SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM {old_sequence}")
        ).scalar_one()
        following = max(following, old_next)
    sequence = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar_one()
    conn.execute(text("SELECT setval(:s, :v, false)"), {"s": sequence, "v": following})
