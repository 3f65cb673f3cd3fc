"""Retention on the real PostgreSQL: whole months dropped, the default partition trimmed row by row,
per-table overrides, dry runs, a busy table skipped, the CLI, and the service's daily run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from exporter import retention
from exporter.migrations import migrate
from exporter.partitions import ensure_partitions
from exporter.retention import purge, retention_days_for, run_retention
from exporter.schema import TABLES
from homepot_analytics.cli import app as cli
from homepot_foundation.database import create_engine
from homepot_foundation.settings import Settings
from query_api import retention_schedule
from tests.support.throwaway import empty_tables, throwaway_database

# The clock of these tests: far from the real date, so the real months' partitions are simply
# older than every cut-off here.
NOW = datetime(2031, 6, 15, 12, tzinfo=UTC)  # 90 days before: 2031-03-17 12:00


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with throwaway_database() as url:
        engine = create_engine(url)
        migrate(engine)
        yield url, engine
        engine.dispose()


@pytest.fixture()
def url(database: tuple[str, Engine]) -> str:
    """The module's database with every table empty and the months around NOW partitioned."""
    url, engine = database
    empty_tables(url)
    for month in (1, 2, 3, 4, 5, 6):
        ensure_partitions(engine, now=datetime(2031, month, 1, tzinfo=UTC), months_ahead=0)
    return url


@pytest.fixture()
def engine(database: tuple[str, Engine], url: str) -> Engine:
    return database[1]


def settings_for(url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(database_url=url, data_dir=tmp_path / "data", **overrides)


def insert(url: str, table: str, *moments: datetime) -> None:
    statements = {
        "api_request_logs": "INSERT INTO api_request_logs (timestamp, endpoint, method, status_code, "
        "response_time_ms, event_id) VALUES (%s, '/x', 'GET', 200, 1, gen_random_uuid())",
        "error_logs": "INSERT INTO error_logs (timestamp, category, severity, error_message, event_id) "
        "VALUES (%s, 'api', 'error', 'boom', gen_random_uuid())",
        "job_outcomes": "INSERT INTO job_outcomes (timestamp, job_id, job_type, status, event_id) "
        "VALUES (%s, 'j', 'restart', 'success', gen_random_uuid())",
    }
    with psycopg.connect(url, autocommit=True) as conn:
        for moment in moments:
            conn.execute(statements[table], (moment,))


def stored(url: str, table: str) -> list[tuple[datetime, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"SELECT timestamp, tableoid::regclass::text FROM {table} ORDER BY timestamp"
        ).fetchall()


def partition_names(url: str, table: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            (table,),
        ).fetchall()
    return {name for (name,) in rows}


def at(month: int, day: int, hour: int = 0) -> datetime:
    return datetime(2031, month, day, hour, tzinfo=UTC)


EXPIRED_MONTH = [at(1, 10), at(2, 27)]  # in partitions wholly before the cut-off
STRADDLING_OLD = at(3, 10)  # older than the cut-off, but its month partition is not wholly expired
KEPT = [at(3, 20), at(6, 1)]
DEFAULT_OLD = datetime(2030, 12, 5, tzinfo=UTC)  # no partition for 2030-12: the default partition
DEFAULT_NEW = datetime(2031, 9, 1, tzinfo=UTC)  # beyond the premade months: default as well


def test_retention_drops_whole_months_and_trims_the_default_partition(
    url: str, engine: Engine, tmp_path: Path
) -> None:
    insert(url, "api_request_logs", *EXPIRED_MONTH, STRADDLING_OLD, *KEPT, DEFAULT_OLD, DEFAULT_NEW)
    results = {r.table: r for r in purge(engine, settings_for(url, tmp_path), now=NOW)}
    requests = results["api_request_logs"]
    assert requests.cutoff == NOW - timedelta(days=90)
    dropped = dict(requests.dropped)
    assert dropped["api_request_logs_p203101"] == 1 and dropped["api_request_logs_p203102"] == 1
    assert "api_request_logs_p203103" not in dropped
    assert requests.default_rows == 1 and requests.rows == 3
    assert stored(url, "api_request_logs") == [
        (STRADDLING_OLD, "api_request_logs_p203103"),
        (KEPT[0], "api_request_logs_p203103"),
        (KEPT[1], "api_request_logs_p203106"),
        (DEFAULT_NEW, "api_request_logs_default"),
    ]
    names = partition_names(url, "api_request_logs")
    assert not {"api_request_logs_p203101", "api_request_logs_p203102"} & names
    assert {"api_request_logs_p203103", "api_request_logs_default"} <= names
    description = requests.describe()
    assert "api_request_logs_p203101" in description and "1 rows deleted from the default" in description
    # A second run finds nothing left to remove.
    again = {r.table: r for r in purge(engine, settings_for(url, tmp_path), now=NOW)}
    assert again["api_request_logs"].rows == 0


def test_each_table_keeps_its_own_retention(url: str, engine: Engine, tmp_path: Path) -> None:
    old = at(1, 10)
    for table in ("api_request_logs", "error_logs", "job_outcomes"):
        insert(url, table, old, at(6, 1))
    settings = settings_for(url, tmp_path, retention_days_error_logs=0, retention_days_job_outcomes=400)
    assert retention_days_for(settings, "error_logs") == 0
    assert retention_days_for(settings, "api_request_logs") == 90
    results = {r.table: r for r in purge(engine, settings, now=NOW)}
    assert results["error_logs"].cutoff is None and "kept forever" in results["error_logs"].describe()
    assert len(stored(url, "error_logs")) == 2
    assert len(stored(url, "job_outcomes")) == 2  # 400 days: January is still kept
    assert len(stored(url, "api_request_logs")) == 1


def test_a_dry_run_reports_without_removing(url: str, engine: Engine, tmp_path: Path) -> None:
    insert(url, "api_request_logs", *EXPIRED_MONTH, DEFAULT_OLD, *KEPT)
    results = {r.table: r for r in purge(engine, settings_for(url, tmp_path), now=NOW, dry_run=True)}
    assert results["api_request_logs"].rows == 3
    assert len(stored(url, "api_request_logs")) == 5
    assert "api_request_logs_p203101" in partition_names(url, "api_request_logs")


def test_a_partition_in_use_is_skipped_and_reported(
    url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "LOCK_TIMEOUT", "200ms")
    insert(url, "api_request_logs", *EXPIRED_MONTH)
    with psycopg.connect(url) as reader:
        reader.execute("SELECT count(*) FROM api_request_logs_p203101")  # a long export holds it
        started = time.monotonic()
        results = {r.table: r for r in purge(engine, settings_for(url, tmp_path), now=NOW)}
        assert time.monotonic() - started < 5
    requests = results["api_request_logs"]
    assert requests.skipped == ["api_request_logs_p203101"]
    assert dict(requests.dropped) == {"api_request_logs_p203102": 1}
    assert "retried next run" in requests.describe()
    assert "api_request_logs_p203101" in partition_names(url, "api_request_logs")


def test_daily_maintenance_purges_and_creates_coming_months(url: str, engine: Engine, tmp_path: Path) -> None:
    insert(url, "api_request_logs", *EXPIRED_MONTH)
    results = run_retention(engine, settings_for(url, tmp_path), now=NOW)
    assert results is not None and sum(r.rows for r in results) == 2
    assert "api_request_logs_p203109" in partition_names(url, "api_request_logs")  # NOW + 3 months
    # While another process holds the purge lock, a second run stands aside.
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (retention._PURGE_LOCK_KEY,))
        assert run_retention(engine, settings_for(url, tmp_path), now=NOW) is None


def test_a_database_not_yet_partitioned_is_reported_not_purged(tmp_path: Path) -> None:
    from exporter import migrations

    with throwaway_database() as url:
        engine = create_engine(url)
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
                migrate(engine)
            insert(url, "api_request_logs", datetime(2020, 1, 1, tzinfo=UTC))
            results = purge(engine, settings_for(url, tmp_path), now=NOW)
        finally:
            engine.dispose()
        assert len(stored(url, "api_request_logs")) == 1
    assert all(r.unpartitioned and r.rows == 0 for r in results)
    assert "run homepot-analytics create-tables" in results[0].describe()


def test_purge_command_reports_per_table(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    insert(url, "api_request_logs", datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC))
    monkeypatch.setenv("HOMEPOT_ANALYTICS_DATABASE_URL", url)
    monkeypatch.setenv("HOMEPOT_ANALYTICS_DATA_DIR", str(tmp_path))
    from homepot_foundation.settings import get_settings

    get_settings.cache_clear()
    try:
        runner = CliRunner()
        dry = runner.invoke(cli, ["purge", "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert "Would remove: api_request_logs: 1 rows" in dry.output
        done = runner.invoke(cli, ["purge"])
        assert done.exit_code == 0, done.output
        for table in TABLES:
            assert f"{table}: " in done.output
        assert "api_request_logs: 1 rows older than" in done.output
        assert "Removed 1 rows in total." in done.output
    finally:
        get_settings.cache_clear()
    assert len(stored(url, "api_request_logs")) == 1


def test_the_service_applies_retention_on_its_own_every_day(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from query_api.app import create_app

    insert(url, "api_request_logs", datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC))
    monkeypatch.setattr(retention_schedule, "FIRST_RUN_DELAY_S", 0.05)
    monkeypatch.setattr(retention_schedule, "DAY_S", 0.1)
    service = create_app(settings_for(url, tmp_path, jwt_secret="x" * 32))
    with TestClient(service):
        task = service.state.retention
        deadline = time.monotonic() + 20
        while task.runs < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert task.runs >= 2  # the first run, and the next "day"
    assert len(stored(url, "api_request_logs")) == 1
    assert task.last_results is not None
