"""``create-tables``: a fresh database, a second run that changes nothing, an older schema upgraded."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from exporter.migrations import LATEST_VERSION, MIGRATIONS_TABLE, migrate
from exporter.schema import TABLES
from homepot_analytics.cli import app
from homepot_foundation.database import create_engine
from tests.conftest import ADMIN_URL, _url_for

# The tables as the HOMEPOT system this project replaces created them (naive timestamps, JSON,
# no trace columns), holding rows that must survive the upgrade.
LEGACY_DDL = """
CREATE TABLE api_request_logs (
    id SERIAL PRIMARY KEY, timestamp TIMESTAMP NOT NULL DEFAULT now(), endpoint VARCHAR(255) NOT NULL,
    method VARCHAR(10) NOT NULL, status_code INTEGER NOT NULL, response_time_ms FLOAT NOT NULL,
    user_id VARCHAR(255), ip_address VARCHAR(45), user_agent VARCHAR(500), error_message TEXT,
    request_size_bytes INTEGER, response_size_bytes INTEGER);
CREATE TABLE device_state_history (
    id SERIAL PRIMARY KEY, timestamp TIMESTAMP NOT NULL DEFAULT now(), device_id VARCHAR(100) NOT NULL,
    previous_state VARCHAR(50), new_state VARCHAR(50) NOT NULL, changed_by VARCHAR(255), reason TEXT,
    extra_data JSON);
INSERT INTO api_request_logs (timestamp, endpoint, method, status_code, response_time_ms, user_id)
    VALUES ('2025-12-05 13:45:23', '/api/v1/devices', 'GET', 200, 45, 'user123');
INSERT INTO device_state_history (timestamp, device_id, previous_state, new_state, changed_by, extra_data)
    VALUES ('2025-12-05 14:00:00', 'dev_001', 'online', 'offline', 'user123', '{"site": "s1"}');
"""


@pytest.fixture()
def empty_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"homepot_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _url_for(name)
    monkeypatch.setenv("HOMEPOT_ANALYTICS_DATABASE_URL", url)
    from homepot_foundation.settings import get_settings

    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _columns(url: str, table: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s", (table,)
        ).fetchall()
    return dict(rows)


# 200 requests, one every 37 minutes from 2026-11-01: about six days of hours.
REQUESTS_OVER_SIX_DAYS = (
    "INSERT INTO api_request_logs (timestamp, endpoint, route, method, status_code, "
    "response_time_ms) SELECT timestamp '2026-11-01 00:00+00' + i * interval '37 minutes', "
    "'/d', '/d', 'GET', 200, i % 97 + 0.5 FROM generate_series(1, 200) AS i"
)


def _from(version: int) -> list[int]:
    """The versions a database at ``version - 1`` is migrated through."""
    return list(range(version, LATEST_VERSION + 1))


def _back_to_version_before(conn: psycopg.Connection[Any], version: int, purged: list[str]) -> None:
    """Migrations from ``version`` on not applied yet, the first day (1 November 2026) of the
    ``purged`` tables' raw rows gone (the rollups outlive them), no bucket marked stale."""
    conn.execute(f"DELETE FROM {MIGRATIONS_TABLE} WHERE version >= {version}")
    for table in purged:
        conn.execute(f"DELETE FROM {table} WHERE timestamp < '2026-11-02+00'")
    conn.execute("DELETE FROM rollup_stale_buckets")


def _migrate_and_refresh(engine: Engine, version: int) -> None:
    """Migrate from ``version``, then rebuild in the background what the migration marked."""
    from exporter.rollups.refresh import refresh

    assert [migration.version for migration in migrate(engine)] == _from(version)
    with engine.connect() as conn:
        assert refresh(conn).buckets > 0


def _rows_of(conn: psycopg.Connection[Any], table: str) -> list[dict[str, Any]]:
    """A table's rows by column name (a migration may add a column back in another position)."""
    cursor = conn.execute(f"SELECT * FROM {table}")
    names = [column.name for column in cursor.description or ()]
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return sorted(rows, key=lambda row: repr(sorted(row.items())))


def test_create_tables_twice_second_run_changes_nothing(empty_database: str) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["create-tables"])
    assert first.exit_code == 0, first.output
    assert "Applied migration 1" in first.output
    second = runner.invoke(app, ["create-tables"])
    assert second.exit_code == 0, second.output
    assert "nothing to do" in second.output
    for name, table in TABLES.items():
        columns = _columns(empty_database, name)
        assert set(columns) == {column.name for column in table.columns}
        assert columns["timestamp"] == "timestamp with time zone"
    assert _columns(empty_database, "error_logs")["context"] == "jsonb"
    with psycopg.connect(empty_database) as conn:
        versions = conn.execute(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version").fetchall()
    assert [v for (v,) in versions] == list(range(1, LATEST_VERSION + 1))


def test_older_homepot_schema_is_upgraded_in_place_keeping_rows(empty_database: str) -> None:
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(LEGACY_DDL)
    engine = create_engine(empty_database)
    try:
        applied = migrate(engine)
    finally:
        engine.dispose()
    assert applied
    columns = _columns(empty_database, "api_request_logs")
    assert {"trace_id", "span_id", "service_name", "route", "event_id"} <= set(columns)
    assert columns["timestamp"] == "timestamp with time zone"
    assert _columns(empty_database, "device_state_history")["extra_data"] == "jsonb"
    with psycopg.connect(empty_database) as conn:
        request = conn.execute(
            "SELECT timestamp, endpoint, user_id, event_id FROM api_request_logs"
        ).fetchall()
        state = conn.execute("SELECT device_id, extra_data FROM device_state_history").fetchall()
        # New rows go in beside the old ones, ids continue.
        conn.execute(
            "INSERT INTO api_request_logs (timestamp, endpoint, method, status_code, response_time_ms, "
            "event_id) VALUES (now(), '/x', 'GET', 200, 1, gen_random_uuid())"
        )
    assert len(request) == 1
    assert request[0][0] == datetime(2025, 12, 5, 13, 45, 23, tzinfo=UTC)  # naive was UTC
    assert request[0][1:3] == ("/api/v1/devices", "user123")
    assert request[0][3] is not None
    assert state == [("dev_001", {"site": "s1"})]


def test_migration_3_adds_the_release_columns_to_existing_tables_keeping_rows(empty_database: str) -> None:
    engine = create_engine(empty_database)
    try:
        migrate(engine)
        with psycopg.connect(empty_database, autocommit=True) as conn:  # a database at version 2
            for table in TABLES:
                conn.execute(
                    f"ALTER TABLE {table} DROP COLUMN service_version, DROP COLUMN deployment_environment"
                )
            conn.execute(f"DELETE FROM {MIGRATIONS_TABLE} WHERE version >= 3")
            conn.execute(
                "INSERT INTO api_request_logs (timestamp, endpoint, method, status_code, response_time_ms,"
                " event_id) VALUES (now(), '/kept', 'GET', 200, 1, gen_random_uuid())"
            )
        assert [migration.version for migration in migrate(engine)] == _from(3)
    finally:
        engine.dispose()
    for table in TABLES:
        assert {"service_version", "deployment_environment"} <= set(_columns(empty_database, table))
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT endpoint, service_version FROM api_request_logs").fetchall() == [
            ("/kept", None)
        ]


def test_an_insert_without_event_id_gets_one_also_after_migration_5_upgrades_older_tables(
    empty_database: str,
) -> None:
    """Others' inserts into the tables (HOMEPOT's own, on a shared database) name no event_id."""
    engine = create_engine(empty_database)
    try:
        migrate(engine)
        with psycopg.connect(empty_database, autocommit=True) as conn:  # a database at version 4
            for table in TABLES:
                conn.execute(f"ALTER TABLE {table} ALTER COLUMN event_id DROP DEFAULT")
            conn.execute(f"DELETE FROM {MIGRATIONS_TABLE} WHERE version >= 5")
        assert [migration.version for migration in migrate(engine)] == _from(5)
    finally:
        engine.dispose()
    with psycopg.connect(empty_database) as conn:
        defaults = conn.execute(
            "SELECT table_name, column_default FROM information_schema.columns "
            "WHERE column_name = 'event_id' AND table_name = ANY(%s)",
            (list(TABLES),),
        ).fetchall()
        inserted = conn.execute(
            "INSERT INTO api_request_logs (timestamp, endpoint, method, status_code, response_time_ms) "
            "VALUES (now(), '/no-event-id', 'GET', 200, 1) RETURNING event_id"
        ).fetchone()
    assert dict(defaults) == dict.fromkeys(TABLES, "gen_random_uuid()")
    assert inserted is not None and isinstance(inserted[0], uuid.UUID)


def test_migration_7_folds_latency_tables_into_their_groups_and_sums_days_from_hours(
    empty_database: str,
) -> None:
    """Migration 6 as first released kept a row per latency bin in a table beside each groups
    table, and no days. Its bins move into the group rows unchanged, and the days come from the
    hours, also those whose raw rows are gone."""
    from exporter.rollups.definitions import (
        DAILY,
        GRAINS,
        LATENCY_BINS,
        LATENCY_COUNTS,
        ROLLUPS,
        ROUTE_LATENCY,
    )
    from exporter.rollups.rebuild import rebuild

    engine = create_engine(empty_database)
    try:
        migrate(engine)
        with psycopg.connect(empty_database, autocommit=True) as conn:
            conn.execute(REQUESTS_OVER_SIX_DAYS)
        with engine.connect() as conn:
            rebuild(conn, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 7, tzinfo=UTC))
        with psycopg.connect(empty_database, autocommit=True) as conn:
            expected = {
                name: _rows_of(conn, name)
                for name in (rollup.table_name(grain) for rollup in ROLLUPS for grain in GRAINS)
            }
            # Back to the first shape of migration 6, then the raw rows of the first day purged.
            for grain in GRAINS:  # a rollup that migration 6 did not have
                conn.execute(f"DROP TABLE {ROUTE_LATENCY.table_name(grain)}")
            for rollup in ROLLUPS:
                if rollup is ROUTE_LATENCY:
                    continue
                conn.execute(f"DROP TABLE {rollup.table_name(DAILY)}")
                if rollup.latency is None:
                    continue
                keys = ", ".join(key.name for key in rollup.keys)
                for grain in GRAINS[:2]:
                    groups = rollup.table_name(grain)
                    conn.execute(
                        f"CREATE TABLE {rollup.table_name(grain, 'latency')} AS SELECT bucket, {keys}, "
                        f"unnest({LATENCY_BINS}) AS bin, unnest({LATENCY_COUNTS}) AS count FROM {groups}"
                    )
                    conn.execute(
                        f"ALTER TABLE {groups} DROP COLUMN {LATENCY_BINS}, DROP COLUMN {LATENCY_COUNTS}"
                    )
            conn.execute(f"DELETE FROM {MIGRATIONS_TABLE} WHERE version >= 7")
            conn.execute("DELETE FROM api_request_logs WHERE timestamp < '2026-11-02+00'")
        assert [migration.version for migration in migrate(engine)] == _from(7)
    finally:
        engine.dispose()
    with psycopg.connect(empty_database) as conn:
        found = {name: _rows_of(conn, name) for name in expected}
        latency_tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%latency'"
        ).fetchone()
    rebuilt = {name for name in expected if name.startswith("rollup_route_latency")}
    assert {k: v for k, v in found.items() if k not in rebuilt} == {
        k: v for k, v in expected.items() if k not in rebuilt
    }
    # The new rollup is built from the raw rows still there (from 2 November on).
    assert found["rollup_route_latency_1h"] == [
        row
        for row in expected["rollup_route_latency_1h"]
        if row["bucket"] >= datetime(2026, 11, 2, tzinfo=UTC)
    ]
    assert found["rollup_requests_1d"][0]["bucket"] == datetime(2026, 11, 1, tzinfo=UTC)  # a purged day kept
    assert latency_tables == (0,)


def test_migration_8_ranks_latency_rows_rebuilds_error_status_and_builds_job_latency(
    empty_database: str,
) -> None:
    """Stored quantiles are ranked from each row's own bins, also in buckets whose raw rows are
    gone; the error rollups' status measures and job_latency, new, come from the raw rows still
    there, rebuilt by the refresh (a purged bucket's errors are taken as open, their latest
    occurrence unknown)."""
    from exporter.rollups.definitions import ERRORS, GRAINS, JOB_LATENCY, ROLLUPS, STORED_QUANTILES
    from exporter.rollups.rebuild import rebuild

    quantile_columns = ", ".join(STORED_QUANTILES.values())
    engine = create_engine(empty_database)
    try:
        migrate(engine)
        with psycopg.connect(empty_database, autocommit=True) as conn:
            conn.execute(REQUESTS_OVER_SIX_DAYS)
            conn.execute(
                "INSERT INTO job_outcomes (timestamp, job_id, job_type, status, duration_ms) "
                "SELECT timestamp '2026-11-01 00:00+00' + i * interval '41 minutes', 'j' || i, "
                "'restart', CASE WHEN i % 3 = 0 THEN 'failed' ELSE 'success' END, i * 13 "
                "FROM generate_series(1, 200) AS i"
            )
            conn.execute(
                "INSERT INTO error_logs (timestamp, category, severity, error_message, fingerprint, "
                "resolved, resolved_at) SELECT timestamp '2026-11-01 00:00+00' + i * interval '43 minutes', "
                "'api', 'error', 'boom', 'fp' || (i % 3), i % 4 = 0, "
                "CASE WHEN i % 4 = 0 THEN timestamp '2026-11-08 00:00+00' END "
                "FROM generate_series(1, 200) AS i"
            )
        with engine.connect() as conn:
            rebuild(conn, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 7, tzinfo=UTC))
        latency_tables = [
            rollup.table_name(grain) for rollup in ROLLUPS if rollup.latency is not None for grain in GRAINS
        ]
        error_tables = [ERRORS.table_name(grain) for grain in GRAINS]
        status_columns = ["unresolved", "latest_open", "latest_resolved_at", "latest_occurrence"]
        with psycopg.connect(empty_database, autocommit=True) as conn:
            expected = {name: _rows_of(conn, name) for name in [*latency_tables, *error_tables]}
            assert conn.execute(
                "SELECT count(*) FROM rollup_requests_1h WHERE latency_p50 IS NULL"
            ).fetchone() == (0,)
            # Back to version 7: no stored quantiles, no job_latency; then a day of raw rows purged.
            for name in latency_tables:
                if name.startswith(f"rollup_{JOB_LATENCY.name}_"):
                    conn.execute(f"DROP TABLE {name}")
                else:
                    dropped = ", ".join(f"DROP COLUMN {c}" for c in STORED_QUANTILES.values())
                    conn.execute(f"ALTER TABLE {name} {dropped}")
            for name in error_tables:
                conn.execute(f"ALTER TABLE {name} " + ", ".join(f"DROP COLUMN {c}" for c in status_columns))
            _back_to_version_before(conn, 8, ["api_request_logs", "job_outcomes", "error_logs"])
        _migrate_and_refresh(engine, 8)
    finally:
        engine.dispose()
    with psycopg.connect(empty_database) as conn:
        found = {name: _rows_of(conn, name) for name in [*latency_tables, *error_tables]}
        unranked = conn.execute(
            f"SELECT count(*) FROM rollup_requests_5m WHERE ({quantile_columns}) IS NULL"
        ).fetchone()
    built = {name for name in latency_tables if name.startswith(f"rollup_{JOB_LATENCY.name}_")}
    built |= set(error_tables)
    # Every older rollup row, the purged day's included, has the quantiles a rebuild gives it.
    assert {k: v for k, v in found.items() if k not in built} == {
        k: v for k, v in expected.items() if k not in built
    }
    assert unranked == (0,)
    # The new rollup from the raw rows still there (from 2 November on).
    assert found["rollup_job_latency_1h"] == [
        row for row in expected["rollup_job_latency_1h"] if row["bucket"] >= datetime(2026, 11, 2, tzinfo=UTC)
    ]
    kept_from = datetime(2026, 11, 2, tzinfo=UTC)
    for name in error_tables:
        for old, new in zip(expected[name], found[name], strict=True):
            if old["bucket"] >= kept_from:
                assert new == old  # rebuilt from the raw rows
            else:  # purged: the counts kept, taken as open, the latest occurrence unknown
                unknown = {"unresolved": old["count"], "latest_open": None, "latest_resolved_at": None}
                assert new == old | unknown | {"latest_occurrence": None}
    assert any(row["unresolved"] < row["count"] for row in found["rollup_errors_1d"])


def test_migration_9_turns_member_rows_into_the_sketches_a_rebuild_gives(empty_database: str) -> None:
    """Version 8 kept a row per (bucket, group, member) for distinct counts. Migration 9 folds the
    members of buckets whose raw rows are gone into their groups' sketches, marks the rest for the
    refresh, and drops the members tables: every sketch is then bit for bit the one a rebuild from
    the raw rows gives (so the purged day's affected users are still counted), and the summary
    reads them."""
    from exporter.rollups.definitions import ACTIVITIES, ERRORS, GRAINS
    from exporter.rollups.rebuild import rebuild

    # The one column version 8 kept members of; no activity has a user or a duration here, so
    # what version 8 did not keep (an activity's users, durations) is empty after a rebuild too.
    members_of = {ERRORS: "user_id", ACTIVITIES: "session_id"}
    tables = [
        rollup.table_name(grain, part)
        for rollup in members_of
        for grain in GRAINS
        for part in ("", "sketches")
    ]
    engine = create_engine(empty_database)
    try:
        migrate(engine)
        with psycopg.connect(empty_database, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO error_logs (timestamp, category, severity, error_message, fingerprint, user_id) "
                "SELECT timestamp '2026-11-01 00:00+00' + i * interval '3 minutes', 'api', 'error', 'boom', "
                "'fp' || (i % 3), CASE WHEN i % 10 <> 0 THEN 'user' || (i % 700) END "
                "FROM generate_series(1, 2000) AS i"
            )
            conn.execute(
                "INSERT INTO user_activities (timestamp, activity_type, page_url, session_id) "
                "SELECT timestamp '2026-11-01 00:00+00' + i * interval '7 minutes', 'page_view', '/sites', "
                "'s' || (i % 90) FROM generate_series(1, 600) AS i"
            )
        with engine.connect() as conn:
            rebuild(conn, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 6, tzinfo=UTC))
        with psycopg.connect(empty_database, autocommit=True) as conn:
            expected = {name: _rows_of(conn, name) for name in tables}
            # Back to version 8: the members of each bucket in a table of their own, no sketches.
            for rollup, member in members_of.items():
                keys = ", ".join(f"coalesce({key.name}::text, '') AS {key.name}" for key in rollup.keys)
                for grain in GRAINS:
                    seconds = int(grain.width.total_seconds())
                    conn.execute(
                        f"CREATE TABLE {rollup.table_name(grain, 'members')} AS SELECT DISTINCT "
                        f"date_bin(interval '{seconds} seconds', timestamp, '1970-01-01+00') AS bucket, "
                        f"{keys}, {member}::text AS member FROM {rollup.source.name} "
                        f"WHERE {member} IS NOT NULL"
                    )
                    conn.execute(f"DROP TABLE {rollup.table_name(grain, 'sketches')}")
                    added = [m.name for m in rollup.measures if m.name.startswith("duration")]
                    if added:
                        dropped = ", ".join(f"DROP COLUMN {name}" for name in added)
                        conn.execute(f"ALTER TABLE {rollup.table_name(grain)} {dropped}")
            _back_to_version_before(conn, 9, ["error_logs", "user_activities"])
        _migrate_and_refresh(engine, 9)
    finally:
        engine.dispose()
    with psycopg.connect(empty_database) as conn:
        found = {name: _rows_of(conn, name) for name in tables}
        members_tables = "SELECT array_agg(tablename) FROM pg_tables WHERE tablename LIKE 'rollup%members'"
        left = conn.execute(members_tables).fetchone()
    assert found == expected
    assert left == (None,)
    assert any(row["user_id_sketch"] for row in found["rollup_errors_1d_sketches"] if row["bucket"].day == 1)
    assert any(
        row["session_id_sketch"] for row in found["rollup_activities_1d_sketches"] if row["bucket"].day == 1
    )


def test_migration_10_packs_every_latency_row_as_a_rebuild_does(empty_database: str) -> None:
    """Version 9 kept a latency histogram as two arrays only. Migration 10 packs every row's,
    also in buckets whose raw rows are gone, into the bytes a rebuild gives it."""
    from exporter.rollups.definitions import GRAINS, PACKED_BINS, PACKED_COUNTS, ROLLUPS
    from exporter.rollups.rebuild import rebuild

    latency_tables = [
        rollup.table_name(grain) for rollup in ROLLUPS if rollup.latency is not None for grain in GRAINS
    ]
    engine = create_engine(empty_database)
    try:
        migrate(engine)
        with psycopg.connect(empty_database, autocommit=True) as conn:
            conn.execute(REQUESTS_OVER_SIX_DAYS)
            conn.execute(
                "INSERT INTO job_outcomes (timestamp, job_id, job_type, status, duration_ms) "
                "SELECT timestamp '2026-11-01 00:00+00' + i * interval '41 minutes', 'j' || i, "
                "'restart', 'success', i * 13 FROM generate_series(1, 200) AS i"
            )
        with engine.connect() as conn:
            rebuild(conn, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 7, tzinfo=UTC))
        with psycopg.connect(empty_database, autocommit=True) as conn:
            expected = {name: _rows_of(conn, name) for name in latency_tables}
            assert all(row[PACKED_BINS] for row in expected["rollup_requests_1d"])
            # Back to version 9: no packed columns; then a day of raw rows purged.
            for name in latency_tables:
                conn.execute(f"ALTER TABLE {name} DROP COLUMN {PACKED_BINS}, DROP COLUMN {PACKED_COUNTS}")
            _back_to_version_before(conn, 10, ["api_request_logs", "job_outcomes"])
        assert [migration.version for migration in migrate(engine)] == _from(10)
    finally:
        engine.dispose()
    with psycopg.connect(empty_database) as conn:
        found = {name: _rows_of(conn, name) for name in latency_tables}
    assert found == expected
