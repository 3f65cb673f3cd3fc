"""Monthly partitions on the real PostgreSQL: layout, months created ahead across a month boundary,
rows in the default partition moved, the writer unchanged, and migration 2 keeping every row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine

from exporter import migrations
from exporter.migrations import MIGRATIONS_TABLE, migrate
from exporter.partitions import PREMAKE_MONTHS, add_months, ensure_partitions, month_start
from exporter.schema import TABLES
from exporter.stats import ExportStats
from exporter.writer import RowWriter
from homepot_foundation.database import create_engine
from tests.support.telemetry import request_rows
from tests.support.throwaway import empty_tables, throwaway_database


@pytest.fixture(scope="module")
def partitioned() -> Iterator[tuple[str, Engine]]:
    """A database of this module's own, migrated: its partitions may be changed freely."""
    with throwaway_database() as url:
        engine = create_engine(url)
        migrate(engine)
        yield url, engine
        engine.dispose()


@pytest.fixture()
def url(partitioned: tuple[str, Engine]) -> str:
    url, _ = partitioned
    empty_tables(url)
    return url


@pytest.fixture()
def engine(partitioned: tuple[str, Engine], url: str) -> Engine:
    return partitioned[1]


def partition_names(url: str, table: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass ORDER BY 1",
            (table,),
        ).fetchall()
    return [name for (name,) in rows]


def insert_request(conn: psycopg.Connection[Any], at: datetime, endpoint: str = "/x") -> tuple[int, str]:
    row = conn.execute(
        "INSERT INTO api_request_logs (timestamp, endpoint, method, status_code, response_time_ms, event_id) "
        "VALUES (%s, %s, 'GET', 200, 1, gen_random_uuid()) RETURNING id, tableoid::regclass::text",
        (at, endpoint),
    ).fetchone()
    assert row is not None
    return row[0], row[1]


# --- layout -----------------------------------------------------------------------------------------------
def test_every_table_is_partitioned_by_month_with_a_default_partition(url: str) -> None:
    current = month_start(datetime.now(UTC))
    with psycopg.connect(url) as conn:
        for table in TABLES:
            key = conn.execute("SELECT pg_get_partkeydef(%s::regclass)", (table,)).fetchone()
            assert key == ('RANGE ("timestamp")',)
            primary_key = conn.execute(
                "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = %s::regclass AND i.indisprimary",
                (table,),
            ).fetchone()
            assert primary_key == (["id", "timestamp"],)
            unique = conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexname = %s",
                (table, f"uq_{table}_event_id"),
            ).fetchone()
            assert unique is not None and "UNIQUE" in unique[0] and '(event_id, "timestamp")' in unique[0]
            names = partition_names(url, table)
            assert f"{table}_default" in names
            for offset in range(PREMAKE_MONTHS + 1):
                assert f"{table}_p{add_months(current, offset):%Y%m}" in names


def test_truncate_restart_identity_empties_every_partition(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        insert_request(conn, datetime.now(UTC))
        insert_request(conn, datetime(2040, 1, 1, tzinfo=UTC))  # the default partition
        conn.execute("TRUNCATE api_request_logs RESTART IDENTITY")
        assert conn.execute("SELECT count(*) FROM api_request_logs").fetchone() == (0,)
        assert insert_request(conn, datetime.now(UTC))[0] == 1


# --- creating months ahead ----------------------------------------------------------------------------------
def test_partitions_are_created_ahead_across_a_month_boundary(url: str, engine: Engine) -> None:
    last_second = datetime(2030, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)
    created = ensure_partitions(engine, now=last_second, months_ahead=1, tables=["api_request_logs"])
    assert created == {"api_request_logs": ["api_request_logs_p203001", "api_request_logs_p203002"]}
    # One microsecond later it is February: only the month after it is new.
    created = ensure_partitions(
        engine, now=last_second + timedelta(microseconds=1), months_ahead=1, tables=["api_request_logs"]
    )
    assert created == {"api_request_logs": ["api_request_logs_p203003"]}
    assert ensure_partitions(engine, now=last_second, months_ahead=2, tables=["api_request_logs"]) == {}
    with psycopg.connect(url, autocommit=True) as conn:
        assert insert_request(conn, last_second)[1] == "api_request_logs_p203001"
        assert insert_request(conn, last_second + timedelta(microseconds=1))[1] == "api_request_logs_p203002"
        assert insert_request(conn, datetime(2030, 3, 31, 12, tzinfo=UTC))[1] == "api_request_logs_p203003"
        assert insert_request(conn, datetime(2030, 4, 1, tzinfo=UTC))[1] == "api_request_logs_default"
    # Month arithmetic over a year's end, and for a moment given in another time zone.
    assert add_months(datetime(2030, 11, 1, tzinfo=UTC), 3) == datetime(2031, 2, 1, tzinfo=UTC)
    assert month_start(datetime.fromisoformat("2030-03-01T00:30:00+01:00")) == datetime(
        2030, 2, 1, tzinfo=UTC
    )


def test_rows_in_the_default_partition_move_into_their_new_month(url: str, engine: Engine) -> None:
    at = datetime(2032, 7, 10, 8, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        row_id, partition = insert_request(conn, at, "/early")
        assert partition == "api_request_logs_default"
        other_id, _ = insert_request(conn, datetime(2032, 9, 1, tzinfo=UTC), "/stays")
    created = ensure_partitions(
        engine, now=datetime(2032, 7, 1, tzinfo=UTC), months_ahead=0, tables=["api_request_logs"]
    )
    assert created == {"api_request_logs": ["api_request_logs_p203207"]}
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, endpoint, tableoid::regclass::text FROM api_request_logs "
            "WHERE timestamp >= '2032-01-01' ORDER BY id"
        ).fetchall()
    assert rows == [
        (row_id, "/early", "api_request_logs_p203207"),
        (other_id, "/stays", "api_request_logs_default"),
    ]


def test_a_busy_table_is_skipped_not_waited_for(
    url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exporter import partitions

    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "200ms")
    with psycopg.connect(url) as blocker:
        blocker.execute("LOCK TABLE user_activities IN ACCESS SHARE MODE")  # a long export, say
        created = ensure_partitions(engine, now=datetime(2034, 5, 1, tzinfo=UTC), months_ahead=0)
    assert "user_activities" not in created
    assert created["api_request_logs"] == ["api_request_logs_p203405"]
    assert "user_activities_p203405" not in partition_names(url, "user_activities")


# --- the writer against partitioned tables ------------------------------------------------------------
def test_writer_fast_path_replay_and_bad_rows_work_on_partitioned_tables(url: str) -> None:
    now = datetime.now(UTC)
    rows = request_rows(4)
    rows[0]["timestamp"] = now
    rows[1]["timestamp"] = now - timedelta(days=40)  # another month
    rows[2]["timestamp"] = datetime(2041, 1, 1, tzinfo=UTC)  # no partition: the default one
    stats = ExportStats()
    writer = RowWriter(url, stats=stats)
    try:
        assert writer.write({"api_request_logs": rows}) == 4
        # A replay plus new rows: the unique (event_id, timestamp) index of each partition
        # rejects the COPY, the staging path inserts only what is new.
        new = request_rows(2)
        assert writer.write({"api_request_logs": rows + new}) == 2
        bad = {**request_rows(1)[0], "method": "M" * 40}  # varchar(16): refused by the database
        assert writer.write({"api_request_logs": [*rows, bad, *request_rows(1)]}) == 1
    finally:
        writer.close()
    assert stats.get("rejected", "api_request_logs") == 1
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT event_id FROM api_request_logs").fetchall()
    assert len(stored) == 7 and len(set(stored)) == 7


# --- migration 2 on an existing database ------------------------------------------------------------
LEGACY_DDL = """
CREATE TABLE api_request_logs (
    id SERIAL PRIMARY KEY, timestamp TIMESTAMP NOT NULL DEFAULT now(), endpoint VARCHAR(255) NOT NULL,
    method VARCHAR(10) NOT NULL, status_code INTEGER NOT NULL, response_time_ms FLOAT NOT NULL,
    user_id VARCHAR(255), ip_address VARCHAR(45), user_agent VARCHAR(500), error_message TEXT,
    request_size_bytes INTEGER, response_size_bytes INTEGER, legacy_note TEXT);
CREATE INDEX ix_api_request_logs_timestamp ON api_request_logs (timestamp);
CREATE TABLE job_outcomes (
    id SERIAL PRIMARY KEY, timestamp TIMESTAMP NOT NULL DEFAULT now(), job_id VARCHAR(100) NOT NULL,
    job_type VARCHAR(300), device_id VARCHAR(100), status VARCHAR(20) NOT NULL, duration_ms INTEGER,
    error_code VARCHAR(50), error_message TEXT, retry_count INTEGER, initiated_by VARCHAR(255),
    extra_data JSON);
"""


def _legacy_rows(now: datetime) -> list[tuple[datetime, str, str | None]]:
    """Timestamps (naive UTC, as the old system stored them) over history, recent months, the future."""
    naive = now.replace(tzinfo=None)
    return [
        (datetime(2024, 2, 29, 23, 59, 59), "/old", "u1"),
        (naive - timedelta(days=200), "/older", None),
        (naive - timedelta(days=70), "/recent", "u2"),
        (naive, "/now", "u3"),
        (naive + timedelta(days=3650), "/future", None),
    ]


def _snapshot(url: str, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT row_to_json(t)::text FROM {table} t ORDER BY id").fetchall()
    return [json.loads(text) for (text,) in rows]


@pytest.fixture()
def legacy_at_version_1(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """An old HOMEPOT database brought to schema version 1 (plain tables), with rows and a grant."""
    role = f"homepot_reader_{uuid.uuid4().hex[:6]}"
    with throwaway_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(LEGACY_DDL)
            for at, endpoint, user in _legacy_rows(datetime.now(UTC)):
                conn.execute(
                    "INSERT INTO api_request_logs (timestamp, endpoint, method, status_code, "
                    "response_time_ms, user_id, legacy_note) VALUES (%s, %s, 'GET', 200, 12.5, %s, %s)",
                    (at, endpoint, user, f"note {endpoint}"),
                )
            # The sequence is ahead of max(id): a deleted row's id must never come back.
            conn.execute(
                "INSERT INTO api_request_logs (endpoint, method, status_code, response_time_ms) "
                "VALUES ('/deleted', 'GET', 200, 1)"
            )
            conn.execute("DELETE FROM api_request_logs WHERE endpoint = '/deleted'")
            conn.execute(
                "INSERT INTO job_outcomes (timestamp, job_id, job_type, status, retry_count, extra_data) "
                "VALUES ('2026-01-02 03:04:05', 'job-1', NULL, 'success', NULL, '{\"a\": [1, 2]}')"
            )
            conn.execute(f'CREATE ROLE "{role}"')
            conn.execute(f'GRANT SELECT ON api_request_logs TO "{role}"')
        monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
        engine = create_engine(url)
        try:
            migrate(engine)
        finally:
            engine.dispose()
        monkeypatch.undo()
        try:
            yield url, role
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP OWNED BY "{role}"')
                conn.execute(f'DROP ROLE "{role}"')


def test_migrating_an_unpartitioned_database_keeps_every_row(legacy_at_version_1: tuple[str, str]) -> None:
    url, role = legacy_at_version_1
    before = {table: _snapshot(url, table) for table in TABLES}
    with psycopg.connect(url) as conn:
        (sequence_next,) = conn.execute("SELECT last_value + 1 FROM api_request_logs_id_seq").fetchone()  # type: ignore[misc]
    engine = create_engine(url)
    try:
        applied = migrate(engine)
    finally:
        engine.dispose()
    every_version = [migration.version for migration in migrations.MIGRATIONS]
    assert [migration.version for migration in applied] == every_version[1:]  # all after the first
    assert {table: _snapshot(url, table) for table in TABLES} == before
    assert len(before["api_request_logs"]) == 5 and len(before["job_outcomes"]) == 1
    assert before["job_outcomes"][0]["job_type"] is None  # a NULL the new schema would refuse, kept
    with psycopg.connect(url) as conn:
        placed: dict[str, str] = dict(
            conn.execute("SELECT endpoint, tableoid::regclass::text FROM api_request_logs").fetchall()
        )
        new_id, _ = insert_request(conn, datetime.now(UTC))
        privileges = conn.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE table_name = 'api_request_logs' AND grantee = %s",
            (role,),
        ).fetchall()
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%%unpartitioned%%'"
        ).fetchone()
        versions = conn.execute(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version").fetchall()
    current = month_start(datetime.now(UTC))
    assert placed["/old"] == "api_request_logs_history"
    assert (
        placed["/recent"] == f"api_request_logs_p{month_start(datetime.now(UTC) - timedelta(days=70)):%Y%m}"
    )
    assert placed["/now"] == f"api_request_logs_p{current:%Y%m}"
    assert placed["/future"] == "api_request_logs_default"
    assert new_id == sequence_next  # ids continue after the old sequence, not after max(id)
    assert privileges == [("SELECT",)]
    assert leftovers == (0,)
    assert [version for (version,) in versions] == every_version


def test_a_conversion_that_fails_leaves_the_old_table_untouched(
    legacy_at_version_1: tuple[str, str],
) -> None:
    url, _ = legacy_at_version_1
    before = _snapshot(url, "api_request_logs")
    with psycopg.connect(url, autocommit=True) as conn:
        # Something of the deployment's own that depends on the table: the old table cannot go.
        conn.execute("CREATE VIEW recent_requests AS SELECT * FROM api_request_logs")
    engine = create_engine(url)
    try:
        with pytest.raises(Exception, match="depend"):
            migrate(engine)
    finally:
        engine.dispose()
    with psycopg.connect(url) as conn:
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'api_request_logs'").fetchone()
        versions = conn.execute(f"SELECT max(version) FROM {MIGRATIONS_TABLE}").fetchone()
    assert kind == ("r",) and versions == (1,)
    assert _snapshot(url, "api_request_logs") == before


def test_a_converted_table_keeps_the_other_systems_checks_defaults_and_indexes() -> None:
    """What another system's writers rely on survives migration 2; what cannot is said."""
    with throwaway_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE api_request_logs (id SERIAL PRIMARY KEY, "
                "timestamp TIMESTAMP NOT NULL DEFAULT now(), endpoint VARCHAR(255) NOT NULL, "
                "method VARCHAR(10) NOT NULL CHECK (method <> ''), status_code INTEGER NOT NULL, "
                "response_time_ms FLOAT NOT NULL, shift VARCHAR(5) NOT NULL DEFAULT '10:30', "
                "request_id VARCHAR(36) UNIQUE)"
            )
            conn.execute("CREATE INDEX legacy_shift ON api_request_logs (shift)")
            conn.execute(
                "INSERT INTO api_request_logs (endpoint, method, status_code, response_time_ms, request_id) "
                "VALUES ('/old', 'GET', 200, 1, 'r-1')"
            )
        engine = create_engine(url)
        try:
            applied = migrate(engine)
        finally:
            engine.dispose()
        changes = [change for migration in applied for change in migration.changes]
        with psycopg.connect(url, autocommit=True) as conn:
            # The old system's insert: neither a timestamp nor a shift, nor any column of ours.
            conn.execute(
                "INSERT INTO api_request_logs (endpoint, method, status_code, response_time_ms, request_id) "
                "VALUES ('/new', 'GET', 200, 1, 'r-1')"
            )
            rows = conn.execute("SELECT endpoint, shift FROM api_request_logs ORDER BY id").fetchall()
            indexes = conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'api_request_logs'"
            ).fetchall()
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(
                    "INSERT INTO api_request_logs (endpoint, method, status_code, response_time_ms) "
                    "VALUES ('/bad', '', 200, 1)"
                )
    assert rows == [("/old", "10:30"), ("/new", "10:30")]
    assert {("legacy_shift",), ("api_request_logs_request_id_key",)} <= set(indexes)
    assert (
        "api_request_logs: unique index api_request_logs_request_id_key is now a plain index "
        '(a unique index of a partitioned table must include "timestamp")'
    ) in changes
    assert 'api_request_logs: PRIMARY KEY (id) is now PRIMARY KEY (id, "timestamp")' in " ".join(changes)
