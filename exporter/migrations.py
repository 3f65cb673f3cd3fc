"""Versioned schema migrations: create the five tables, and upgrade older schemas in place.

Each migration runs once, in order, in its own transaction, and is recorded in
``homepot_analytics_schema_migrations``. Concurrent runs serialise on an advisory lock (each
step's transaction takes it, so it holds through a pooler in transaction mode).
Migration 1 also adopts the tables of the HOMEPOT system this project replaces (same names,
no trace columns, naive timestamps): it adds what is missing and keeps every row. Migration 2
turns the tables into monthly range partitions on "timestamp" (``exporter.partitions``,
``exporter.partition_conversion``). HOMEPOT may go on using its tables (a shared database):
every column added has a default or is nullable, a type is changed only where the new one holds
every old value, its keys and indexes are kept; what does change is returned, and printed by
``create-tables`` (the README lists it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, insert, inspect, select, text
from sqlalchemy import column as sql_column
from sqlalchemy import table as sql_table

from exporter.columns import COLUMNS
from exporter.containment import never_raise
from exporter.distinct_sketch import sketch_sql, union_sql
from exporter.own_logging import exporter_logger
from exporter.partition_conversion import convert_to_partitioned
from exporter.partitions import SCHEMA_LOCK_KEY, ensure_partitions
from exporter.rollups.definitions import (
    ACTIVITIES,
    COARSE,
    DAILY,
    ERRORS,
    GRAINS,
    LATENCY_BINS,
    LATENCY_COUNTS,
    PACKED_BINS,
    PACKED_COUNTS,
    ROLLUPS,
    STORED_QUANTILES,
    Rollup,
    sketch_column,
)
from exporter.rollups.rebuild import oldest_raw_row, rank_unranked, rebuild_all, rebuild_days_from_hours
from exporter.rollups.schema import rollup_metadata, tables_of
from exporter.rollups.stale import TRIGGERS_DDL, mark_all
from exporter.schema import TABLES, metadata
from exporter.trace_links import PENDING_JOINS_DDL

logger = exporter_logger(__name__)

MIGRATIONS_TABLE = "homepot_analytics_schema_migrations"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    # Returns what it changed in tables that were there before (HOMEPOT's, on a shared database):
    # types, keys, constraints, one sentence each, for ``create-tables`` to print.
    apply: Callable[[Connection], list[str]]


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    description: str
    changes: tuple[str, ...] = ()


# Columns of our schema that HOMEPOT's tables have as naive ``timestamp``.
_TIMESTAMPTZ = {
    name: tuple(spec.name for spec in specs if spec.kind == "timestamptz") for name, specs in COLUMNS.items()
}
_DEFAULTS = {name: {spec.name: spec.server_default for spec in specs} for name, specs in COLUMNS.items()}


def _adopt_existing_table(conn: Connection, name: str) -> list[str]:
    """Bring a table created by an older schema (ours, or HOMEPOT's) up to the current columns and
    indexes, so that its old writers keep writing: every column added has a default or is nullable."""
    table = TABLES[name]
    changes: list[str] = []
    existing = {column["name"]: column for column in inspect(conn).get_columns(name)}
    for column in table.columns:
        if column.name in existing:
            continue
        column_type = column.type.compile(dialect=conn.dialect)
        default = _DEFAULTS[name][column.name]
        clause = f" DEFAULT {default}" if default is not None else ""
        conn.execute(text(f'ALTER TABLE {name} ADD COLUMN "{column.name}" {column_type}{clause}'))
        logger.info("added column %s.%s", name, column.name)
    # Rows from before event_id existed get a random identity: they were never replayed. So do the
    # rows the old system goes on inserting without one (its inserts name only its own columns).
    conn.execute(text(f"UPDATE {name} SET event_id = gen_random_uuid() WHERE event_id IS NULL"))
    conn.execute(text(f"ALTER TABLE {name} ALTER COLUMN event_id SET DEFAULT gen_random_uuid()"))
    conn.execute(text(f"ALTER TABLE {name} ALTER COLUMN event_id SET NOT NULL"))
    for column_name in _TIMESTAMPTZ[name]:
        column_type = str(dict(existing.get(column_name) or {}).get("type", "")).upper()
        if "TIMESTAMP" in column_type and "TIME ZONE" not in column_type:
            # The old system stored naive UTC: say so to PostgreSQL rather than guess local time.
            conn.execute(
                text(
                    f'ALTER TABLE {name} ALTER COLUMN "{column_name}" TYPE timestamptz '
                    f"USING \"{column_name}\" AT TIME ZONE 'UTC'"
                )
            )
            changes.append(f"{name}.{column_name}: timestamp -> timestamptz (its values read as UTC)")
    for json_column in ("extra_data", "context"):
        if json_column in existing and "JSONB" not in str(existing[json_column]["type"]).upper():
            conn.execute(
                text(
                    f'ALTER TABLE {name} ALTER COLUMN "{json_column}" TYPE jsonb '
                    f'USING "{json_column}"::text::jsonb'
                )
            )
            changes.append(
                f"{name}.{json_column}: json -> jsonb (same values; key order and repeated keys not kept)"
            )
    for index in table.indexes:
        index.create(conn, checkfirst=True)
    return changes


def _create_tables(conn: Connection) -> list[str]:
    changes: list[str] = []
    present = set(inspect(conn).get_table_names())
    for name in TABLES:
        if name in present:
            changes += _adopt_existing_table(conn, name)
    if any("timestamp -> timestamptz" in change for change in changes):
        time_zone = conn.execute(text("SELECT current_setting('TimeZone')")).scalar()
        changes.append(
            "a naive timestamp inserted from now on is read in the session's TimeZone (here "
            f"{time_zone}: keep it UTC for HOMEPOT's naive UTC values); reads return timestamps with offset"
        )
    metadata.create_all(conn, checkfirst=True)
    return changes


def _partition_tables(conn: Connection) -> list[str]:
    changes: list[str] = []
    for name in TABLES:
        changes += convert_to_partitioned(conn, name)
    return changes


def _add_new_columns(conn: Connection) -> list[str]:
    """Columns the schema gained since a table was created (all nullable): added in place, on
    the partitioned parent, which adds them to every partition without rewriting a row."""
    for name, table in TABLES.items():
        existing = {column["name"] for column in inspect(conn).get_columns(name)}
        for column in table.columns:
            if column.name not in existing:
                column_type = column.type.compile(dialect=conn.dialect)
                conn.execute(
                    text(f'ALTER TABLE {name} ADD COLUMN IF NOT EXISTS "{column.name}" {column_type}')
                )
                logger.info("added column %s.%s", name, column.name)
    return []


def _create_pending_joins(conn: Connection) -> list[str]:
    for statement in PENDING_JOINS_DDL:
        conn.execute(text(statement))
    return []


def _default_event_ids(conn: Connection) -> list[str]:
    """Inserts that do not name event_id (HOMEPOT's own, into a table it shares with the exporter)
    get a random one, instead of failing on its NOT NULL. On the partitioned parent: the default
    applies to every insert through it, and is copied to every partition."""
    for name in TABLES:
        conn.execute(text(f"ALTER TABLE {name} ALTER COLUMN event_id SET DEFAULT gen_random_uuid()"))
    return []


def _create_rollups(conn: Connection) -> list[str]:
    rollup_metadata.create_all(conn, checkfirst=True)
    hours = rebuild_all(conn, commit_each=False)
    if hours:
        logger.info("rollups built from the stored rows: %d hours", hours)
    return []


def _rollups_refreshed_by_triggers(conn: Connection) -> list[str]:
    """Rollups of migration 6 as first released: a latency table beside each groups table (a row
    per bin), no daily grain, and the writer adding to them as it wrote. The bins move into their
    group's row as two arrays, and the days are summed from the hours (not rebuilt from raw rows:
    history older than them stays). Then triggers on the raw tables mark the buckets each
    statement changes, for ``exporter.rollups.refresh`` to rebuild."""
    changed: list[str] = []
    for rollup in ROLLUPS:
        if rollup.latency is None:
            continue
        keys = ", ".join(f'"{key.name}"' for key in rollup.keys)
        for grain in GRAINS:
            groups, old = rollup.table_name(grain), rollup.table_name(grain, "latency")
            if not inspect(conn).has_table(old):
                continue
            conn.execute(
                text(
                    f"ALTER TABLE {groups} "
                    f"ADD COLUMN IF NOT EXISTS {LATENCY_BINS} smallint[] NOT NULL DEFAULT '{{}}', "
                    f"ADD COLUMN IF NOT EXISTS {LATENCY_COUNTS} bigint[] NOT NULL DEFAULT '{{}}'"
                )
            )
            conn.execute(
                text(
                    f"UPDATE {groups} AS g SET {LATENCY_BINS} = h.bins, {LATENCY_COUNTS} = h.counts "
                    f"FROM (SELECT bucket, {keys}, array_agg(bin ORDER BY bin) AS bins, "
                    f"array_agg(count ORDER BY bin) AS counts FROM {old} WHERE count <> 0 "
                    f"GROUP BY bucket, {keys}) AS h "
                    f"WHERE g.bucket = h.bucket AND "
                    + " AND ".join(f'g."{key.name}" = h."{key.name}"' for key in rollup.keys)
                )
            )
            conn.execute(text(f"DROP TABLE {old}"))
            changed.append(f"{old} folded into {groups}")
    daily = [rollup.table_name(DAILY) for rollup in ROLLUPS]
    missing = [name for name in daily if not inspect(conn).has_table(name)]
    # A rollup migration 6 did not have at all (route_latency) is built from the raw rows.
    new = _missing_rollups(conn)
    rollup_metadata.create_all(conn, checkfirst=True)
    _add_rollup_columns_of_migration_8(conn)  # the rebuild below fills them
    _add_columns_of_migration_9(conn)  # ... and these (and migration 9's tables)
    _add_columns_of_migration_10(conn)  # ... and the packed histograms
    if new:
        hours = rebuild_all(conn, commit_each=False)
        logger.info("rollups built from the stored rows: %d hours", hours)
    if missing:  # after the rebuild: days older than the raw rows come from their hours
        days = rebuild_days_from_hours(conn)
        if days:
            logger.info("daily rollups summed from the hourly ones: %d days", days)
    # From here on the rollups are rebuilt from the raw rows for the buckets these triggers mark.
    for statement in TRIGGERS_DDL:
        conn.execute(text(statement))
    return changed


def _missing_rollups(conn: Connection) -> list[Rollup]:
    return [rollup for rollup in ROLLUPS if not inspect(conn).has_table(rollup.table_name(COARSE))]


def _add_rollup_columns_of_migration_8(conn: Connection) -> None:
    """The stored quantiles of the latency rollups, and the status measures of the error rollups
    (for a bucket already there: open, as nothing says otherwise, and no known latest occurrence
    until it is rebuilt)."""
    _add_latency_columns(conn, {column: "double precision" for column in STORED_QUANTILES.values()})
    for grain in GRAINS:
        name = ERRORS.table_name(grain)
        columns = {column["name"] for column in inspect(conn).get_columns(name)}
        if "unresolved" in columns:
            continue
        conn.execute(
            text(
                f"ALTER TABLE {name} ADD COLUMN unresolved bigint, ADD COLUMN latest_open timestamptz, "
                "ADD COLUMN latest_resolved_at timestamptz, ADD COLUMN latest_occurrence numeric"
            )
        )
        conn.execute(text(f"UPDATE {name} SET unresolved = count"))
        conn.execute(text(f"ALTER TABLE {name} ALTER COLUMN unresolved SET NOT NULL"))


def _add_columns_of_migration_9(conn: Connection) -> None:
    """The tables of distinct sketches, and the measures added with them (the activities'
    durations): empty (no row, 0) until their buckets are rebuilt."""
    rollup_metadata.create_all(conn, checkfirst=True)
    for rollup in ROLLUPS:
        for grain in GRAINS:
            name = rollup.table_name(grain)
            columns = {column["name"] for column in inspect(conn).get_columns(name)}
            added = [
                f"ADD COLUMN {m.name} {m.sql_type}" + ("" if m.nullable else " NOT NULL DEFAULT 0")
                for m in rollup.measures
                if m.name not in columns and m.kind == "sum"
            ]
            if added:
                conn.execute(text(f"ALTER TABLE {name} {', '.join(added)}"))


# The one column whose members version 8 kept per rollup, in tables of their own.
_MEMBERS_OF_VERSION_8 = {ERRORS.name: "user_id", ACTIVITIES.name: "session_id"}


def _distinct_sketches(conn: Connection) -> list[str]:
    """Distinct counts (affected users, sessions, an activity's users) from a sketch per group
    (``exporter.distinct_sketch``, in ``rollup_*_sketches``) instead of a row per member and
    bucket, which cost a 30-day count as many rows as the raw table; activities keep their
    durations too. The buckets that still have raw rows are marked stale, for ``refresh`` to
    rebuild in the background (reads take the raw rows until it has); the older ones, whose raw
    rows were purged, get their sketches from their members here (what version 8 did not keep,
    an activity's users, stays empty there). Then the members tables go."""
    _add_columns_of_migration_9(conn)
    changed: list[str] = []
    for rollup in ROLLUPS:
        if not rollup.distinct:
            continue
        oldest = oldest_raw_row(conn, [rollup])
        marked = mark_all(conn, rollup.source)
        if marked:
            logger.info("%s: %d 5-minute buckets to rebuild in the background", rollup.source.name, marked)
        counted = _MEMBERS_OF_VERSION_8.get(rollup.name)
        for grain in GRAINS:
            sketches, members = tables_of(rollup, grain)["sketches"], rollup.table_name(grain, "members")
            if counted is None or not inspect(conn).has_table(members):
                continue
            # At scale a long step (a few µs a member): said before it starts, so the log shows where
            # an upgrade is.
            logger.info("%s: the purged buckets' members into %s", members, sketches.name)
            pk = ["bucket", *(key.name for key in rollup.keys)]
            old = sql_table(members, *(sql_column(name) for name in pk), sql_column("member"))
            group = [old.c[name] for name in pk]
            united = union_sql(sketch_sql(old.c.member)).label(sketch_column(counted))
            query = select(*group, united).group_by(*group)
            if oldest is not None:  # newer buckets are rebuilt from their raw rows
                query = query.where(old.c.bucket < grain.bucket(oldest))
            conn.execute(insert(sketches).from_select([*pk, sketch_column(counted)], query))
            conn.execute(text(f"DROP TABLE {members}"))
            changed.append(f"{members} replaced by {sketches.name}")
    return changed


def _rollup_quantiles_error_status_and_job_latency(conn: Connection) -> list[str]:
    """Each latency rollup row keeps its quantiles, the error rollups what a group's status needs,
    and job_latency (a type's durations across statuses) is new. Every bucket that still has raw
    rows is marked stale: ``refresh`` (the service's, or ``rollups refresh``) rebuilds them in the
    background, and reads take the raw rows until it has, so the upgrade itself is quick and no
    answer is wrong meanwhile. The older buckets, whose raw rows are gone, get their quantiles
    ranked here from their bins (the rest of what they hold stays)."""
    rollup_metadata.create_all(conn, checkfirst=True)
    _add_rollup_columns_of_migration_8(conn)
    oldest: dict[str, datetime | None] = {}
    for source in sorted({rollup.source for rollup in ROLLUPS}, key=lambda table: table.name):
        oldest[source.name] = oldest_raw_row(conn, [r for r in ROLLUPS if r.source is source])
        marked = mark_all(conn, source)
        if marked:
            logger.info("%s: %d 5-minute buckets to rebuild in the background", source.name, marked)
    far_future = datetime.max.replace(tzinfo=UTC)
    days = rank_unranked(conn, {name: moment or far_future for name, moment in oldest.items()})
    if days:
        logger.info("rollup quantiles stored for %d days older than the raw rows", days)
    return []


def _add_latency_columns(conn: Connection, columns: dict[str, str]) -> None:
    """Add ``columns`` (name -> SQL type and default) to every latency rollup table there is."""
    added = ", ".join(f"ADD COLUMN IF NOT EXISTS {name} {sql}" for name, sql in columns.items())
    for rollup in ROLLUPS:
        for grain in GRAINS:
            name = rollup.table_name(grain)
            if rollup.latency is not None and inspect(conn).has_table(name):
                conn.execute(text(f"ALTER TABLE {name} {added}"))


def _add_columns_of_migration_10(conn: Connection) -> None:
    """The packed histogram columns of the latency rollups (empty until filled)."""
    packed = "bytea NOT NULL DEFAULT ''::bytea"
    _add_latency_columns(conn, {PACKED_BINS: packed, PACKED_COUNTS: packed})


def _packed(array: str, send: str) -> str:
    """SQL packing an array column as ``exporter.histogram`` packs (each element by ``send``, in
    the array's order), as the rebuild does."""
    return (
        f"coalesce((SELECT string_agg({send}(e), ''::bytea ORDER BY o) "
        f"FROM unnest({array}) WITH ORDINALITY AS u(e, o)), ''::bytea)"
    )


def _packed_histograms(conn: Connection) -> list[str]:
    """Each latency rollup row keeps its histogram packed beside its arrays, for the reads that
    merge many rows' (a 30-day hourly series by route packed 2.4M elements per request). Filled
    here from the arrays, the history older than the raw rows included: one pass per table (28 s
    for the request rollups of 10M rows on the machine of bench/README.md; said before each
    table, so the log shows where an upgrade is)."""
    _add_columns_of_migration_10(conn)
    for rollup in ROLLUPS:
        for grain in GRAINS:
            name = rollup.table_name(grain)
            if rollup.latency is None:
                continue
            logger.info("%s: packing the latency histograms", name)
            conn.execute(
                text(
                    f"UPDATE {name} SET {PACKED_BINS} = {_packed(LATENCY_BINS, 'int2send')}, "
                    f"{PACKED_COUNTS} = {_packed(LATENCY_COUNTS, 'int8send')} "
                    f"WHERE cardinality({LATENCY_BINS}) > 0"
                )
            )
    return []


MIGRATIONS: list[Migration] = [
    Migration(1, "create the five analytics tables (adopting older HOMEPOT tables)", _create_tables),
    Migration(2, "partition the five tables by month on timestamp, keeping every row", _partition_tables),
    Migration(3, "service_version and deployment_environment on every table", _add_new_columns),
    Migration(
        4, "a small table of error rows waiting for their request (trace joins)", _create_pending_joins
    ),
    Migration(5, "event_id defaults to a random uuid for inserts that give none", _default_event_ids),
    Migration(6, "rollup tables (5-minute and hourly buckets), built from the stored rows", _create_rollups),
    Migration(
        7,
        "rollups kept by triggers and refresh; histograms in their group rows; daily rollups",
        _rollups_refreshed_by_triggers,
    ),
    Migration(
        8,
        "rollup rows keep their quantiles, error rollups their groups' status; job_latency",
        _rollup_quantiles_error_status_and_job_latency,
    ),
    Migration(
        9,
        "distinct counts of the rollups from a sketch per group, not a row per member",
        _distinct_sketches,
    ),
    Migration(10, "latency rollup rows keep their histograms packed", _packed_histograms),
]

LATEST_VERSION = MIGRATIONS[-1].version


def current_version(conn: Connection) -> int:
    """The highest migration applied to this database, 0 for a new one."""
    if not inspect(conn).has_table(MIGRATIONS_TABLE):
        return 0
    return int(conn.execute(text(f"SELECT coalesce(max(version), 0) FROM {MIGRATIONS_TABLE}")).scalar_one())


def migrate(engine: Engine) -> list[AppliedMigration]:
    """Apply every pending migration; returns those applied (empty when up to date), each with
    what it changed in tables that were there before."""
    applied: list[AppliedMigration] = []
    with engine.connect() as conn:
        # The schema lock is a transaction's, taken again by each step, never the session's: a
        # session lock would outlive its transaction behind a pooler in transaction mode (held by
        # a server connection the next step may not get, unlocked by none).
        with conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            conn.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
                    "version integer PRIMARY KEY, description text NOT NULL, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"
                )
            )
        for migration in MIGRATIONS:
            with conn.begin():
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
                # Under the lock: another process may have applied it since the last step.
                if migration.version <= current_version(conn):
                    continue
                changes = migration.apply(conn)
                conn.execute(
                    text(f"INSERT INTO {MIGRATIONS_TABLE} (version, description) VALUES (:v, :d)"),
                    {"v": migration.version, "d": migration.description},
                )
            logger.info("applied migration %d: %s", migration.version, migration.description)
            for change in changes:
                logger.warning("changed an existing table: %s", change)
            applied.append(AppliedMigration(migration.version, migration.description, tuple(changes)))
    # Every start of an exporter or the service also makes sure next months' partitions exist.
    with never_raise(
        "could not create the coming months' partitions; rows go to the default partition", logger=logger
    ):
        ensure_partitions(engine)
    return applied
