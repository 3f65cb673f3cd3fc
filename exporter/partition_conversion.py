"""Migration 2: a plain table (of an older schema, or of the HOMEPOT system) replaced by one
partitioned by month (``exporter.partitions``) that keeps its rows, ids, grants, foreign keys,
checks, indexes, and the column types and defaults its other writers and readers rely on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import Connection, MetaData, PrimaryKeyConstraint, TextClause, text
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


class _Column(NamedTuple):
    name: str
    type: str  # as PostgreSQL prints it: "character varying(255)"
    nullable: bool
    category: str  # pg_type.typcategory: N numeric, S string, D date/time, ...
    default: str | None


def _columns(conn: Connection, table: str) -> list[_Column]:
    """The columns of a table, in order."""
    rows = conn.execute(
        text(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, t.typcategory, "
            "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = to_regclass(:t) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
        ),
        {"t": table},
    ).all()
    return [
        _Column(name, type_, bool(nullable), category, default)
        for name, type_, nullable, category, default in rows
    ]


_INTEGERS = ("smallint", "integer", "bigint")
_FLOATS = ("real", "double precision")


def _wider(old_type: str, new_type: str) -> bool:
    """Whether an old column may hold values the new type cannot (then it keeps its type)."""
    for family in (_INTEGERS, _FLOATS):
        if old_type in family and new_type in family:
            return family.index(old_type) > family.index(new_type)
    if not new_type.startswith("character varying("):
        return False
    if old_type == "text" or old_type == "character varying":
        return True
    if old_type.startswith("character varying("):
        return int(old_type[18:-1]) > int(new_type[18:-1])
    return False


def _widening(old: _Column, new: _Column) -> bool:
    """Whether the new type holds every value of the old one as the same value: a number of a
    wider type of its family, a text of a longer (or unbounded) one. Any other change (a number
    becoming text, as HOMEPOT's integer device key would) keeps the old type."""
    for family in (_INTEGERS, _FLOATS):
        if old.type in family and new.type in family:
            return True
    return old.category == new.category == "S"


class _Definitions(NamedTuple):
    """What of an old table's keys and indexes the new one gets again, as SQL."""

    primary_key: str | None  # "PRIMARY KEY (id)"
    indexes: list[tuple[str, str, bool]]  # (name, CREATE INDEX ..., unique without the partition key)
    constraints: list[tuple[str, str]]  # foreign keys and checks: (name, definition)
    exclusions: list[str]  # exclusion constraints: a partitioned table cannot have them on other keys
    ours: bool  # created by this schema (an identity id), not by another system: no one else's keys


def _definitions(conn: Connection, table: str) -> _Definitions:
    """Read while the old table still has its name: the index definitions name the table."""
    params = {"t": table, "key": PARTITION_KEY}
    primary_key = conn.execute(
        text(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = to_regclass(:t) AND contype = 'p'"
        ),
        params,
    ).scalar()
    indexes = conn.execute(
        text(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisunique AND NOT EXISTS ("
            " SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attname = :key"
            " AND a.attnum = ANY(i.indkey::int2[])) "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid "
            "WHERE i.indrelid = to_regclass(:t) AND NOT i.indisprimary AND k.contype IS DISTINCT FROM 'x' "
            "ORDER BY 1"
        ),
        params,
    ).all()
    constraints = conn.execute(
        text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = to_regclass(:t) AND contype IN ('f', 'c') ORDER BY conname"
        ),
        params,
    ).all()
    exclusions = conn.execute(
        text(
            "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(:t) AND contype = 'x' ORDER BY 1"
        ),
        params,
    ).all()
    ours = conn.execute(
        text(
            "SELECT attidentity <> '' FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attname = 'id'"
        ),
        params,
    ).scalar()
    return _Definitions(
        primary_key,
        [(name, definition, bool(unique)) for name, definition, unique in indexes],
        [(name, definition) for name, definition in constraints],
        [name for (name,) in exclusions],
        bool(ours),
    )


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


def convert_to_partitioned(conn: Connection, table: str, *, now: datetime | None = None) -> list[str]:
    """Replace a plain table by a partitioned one with the same rows, ids, grants, foreign keys,
    checks and indexes; a column of another type than ours keeps its type unless ours holds each
    of its values as it is (``_widening``). Returns what changed for the table's other writers and
    readers (types, keys, constraints: printed by ``create-tables``), one sentence each.

    Runs inside the caller's transaction (a migration): all of it happens, or none of it.
    """
    if (
        is_partitioned(conn, table)
        or conn.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is None
    ):
        return []
    changes: list[str] = []
    old = f"{table}_unpartitioned"
    quoted, quoted_old = quote_identifier(conn, table), quote_identifier(conn, old)
    definitions = _definitions(conn, table)
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
    old_columns = _columns(conn, old)
    by_name = {column.name: column for column in old_columns}
    for column in new.columns:
        if (
            column.name in by_name
            and by_name[column.name].nullable
            and column.name not in ("id", PARTITION_KEY)
        ):
            column.nullable = True  # the old rows may hold NULLs there: keep them as they are
    conn.execute(CreateTable(new))
    changes += _keep_old_columns(conn, table, old_columns)

    key = quote_identifier(conn, PARTITION_KEY)
    if PARTITION_KEY in by_name and by_name[PARTITION_KEY].nullable:
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

    columns = ", ".join(quote_identifier(conn, column.name) for column in old_columns)
    moved = conn.execute(
        text(f"INSERT INTO {quoted} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} FROM {quoted_old}")
    ).rowcount
    # Indexes after the rows: one sort per index instead of a tree insert per row.
    for index in new.indexes:
        index.create(conn)
    changes += _restore_definitions(conn, table, definitions, {index.name for index in new.indexes})
    _continue_ids(conn, table, old_sequence)
    for grantee, privilege in grants:
        conn.execute(text(f"GRANT {privilege} ON {quoted} TO {grantee}"))
    conn.execute(text(f"DROP TABLE {quoted_old}"))
    logger.info("%s is now partitioned by month; %d rows kept", table, moved)
    return changes


def _sql(statement: str) -> TextClause:
    """SQL holding text from the catalog (a default, an index or a check): no ``:name`` in it is
    a parameter (a literal '10:30' in a default, say)."""
    return text(statement.replace(":", "\\:"))


def short_type(type_: str) -> str:
    """A type as people write it: ``varchar(255)``, ``timestamptz``."""
    return (
        type_.replace("character varying", "varchar")
        .replace("timestamp with time zone", "timestamptz")
        .replace("timestamp without time zone", "timestamp")
    )


def _keep_old_columns(conn: Connection, table: str, old_columns: list[_Column]) -> list[str]:
    """Give the new (still empty) table what it needs of the old one's columns, so that the old
    table's writers and readers keep working: the columns only it had, its types where ours would
    change a value's kind or drop part of it, its defaults where ours have none."""
    quoted = quote_identifier(conn, table)
    changes: list[str] = []
    widened: list[str] = []
    new_columns = {column.name: column for column in _columns(conn, table)}
    for old in old_columns:
        name = quote_identifier(conn, old.name)
        new = new_columns.get(old.name)
        if new is None:
            # A column only the old system had: keep it, its values and its default.
            default = f" DEFAULT {old.default}" if old.default is not None else ""
            conn.execute(_sql(f"ALTER TABLE {quoted} ADD COLUMN {name} {old.type}{default}"))
            if not old.nullable and old.default is not None:
                conn.execute(text(f"ALTER TABLE {quoted} ALTER COLUMN {name} SET NOT NULL"))
            elif not old.nullable:
                changes.append(f"{table}.{old.name}: NOT NULL dropped (the exporter writes no value there)")
            continue
        if old.type != new.type:
            if _wider(old.type, new.type):
                conn.execute(text(f"ALTER TABLE {quoted} ALTER COLUMN {name} TYPE {old.type}"))
            elif _widening(old, new):
                widened.append(f"{old.name} {short_type(old.type)} -> {short_type(new.type)}")
            else:
                # The new table is still empty: the cast converts no value.
                conn.execute(
                    text(f"ALTER TABLE {quoted} ALTER COLUMN {name} TYPE {old.type} USING {name}::{old.type}")
                )
                changes.append(
                    f"{table}.{old.name}: kept as {short_type(old.type)}, not made {short_type(new.type)} "
                    "(its writers and readers use that type)"
                )
        if not old.nullable and new.nullable:
            changes.append(f"{table}.{old.name}: NOT NULL dropped (rows of the exporter may have none)")
        if old.default is not None and new.default is None and old.name != "id":
            conn.execute(_sql(f"ALTER TABLE {quoted} ALTER COLUMN {name} SET DEFAULT {old.default}"))
    if widened:
        changes.insert(0, f"{table}: wider types, every value kept: {', '.join(widened)}")
    return changes


def _restore_definitions(
    conn: Connection, table: str, definitions: _Definitions, our_indexes: set[str | None]
) -> list[str]:
    """The old table's foreign keys, checks and indexes, on the new table; what cannot be kept
    as it was (the primary key, unique indexes without the partition key) is said."""
    quoted = quote_identifier(conn, table)
    changes: list[str] = []
    if definitions.primary_key is not None and not definitions.ours:
        changes.append(
            f'{table}: {definitions.primary_key} is now PRIMARY KEY (id, "{PARTITION_KEY}") (a partitioned '
            "table's keys include its partition key; the identity still gives every row its own id)"
        )
    for name, definition, unique_without_key in definitions.indexes:
        if name in our_indexes:
            continue  # one of ours (migration 1 created it): already there
        if unique_without_key:
            definition = definition.replace("CREATE UNIQUE INDEX", "CREATE INDEX", 1)
            changes.append(
                f"{table}: unique index {name} is now a plain index (a unique index of a partitioned "
                f'table must include "{PARTITION_KEY}")'
            )
        conn.execute(_sql(definition))
    for name, definition in definitions.constraints:
        conn.execute(_sql(f"ALTER TABLE {quoted} ADD CONSTRAINT {quote_identifier(conn, name)} {definition}"))
    for name in definitions.exclusions:
        changes.append(f"{table}: exclusion constraint {name} dropped (not possible on a partitioned table)")
    return changes


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
