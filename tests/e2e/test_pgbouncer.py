"""Behind a pooler: pgbouncer in transaction mode in front of a database of its own, the tables
created through it, the OTLP sink writing (COPY, a replay), the query API reading and resolving,
and the daily retention run, all through the pooler."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from bench.otlp_traffic import request_traces
from exporter.migrations import migrate
from exporter.retention import run_retention
from homepot_foundation.database import create_engine
from homepot_foundation.settings import Settings
from query_api.app import create_app
from tests.conftest import JWT_SECRET
from tests.query_api.conftest import PREFIX, bearer
from tests.support.pgbouncer import pgbouncer_in_front_of
from tests.support.throwaway import throwaway_database

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def direct_url() -> Iterator[str]:
    with throwaway_database("homepot_pooled") as url:
        yield url


@pytest.fixture(scope="module")
def pooled_url(direct_url: str) -> Iterator[str]:
    with pgbouncer_in_front_of(direct_url) as url:
        yield url


def _advisory_locks(direct_url: str) -> int:
    with psycopg.connect(direct_url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
    return int(row[0]) if row else -1


def test_the_pooler_loses_prepared_statements_between_transactions(pooled_url: str) -> None:
    """What the project must avoid, shown: psycopg's default prepares a statement after five
    runs, and the next transaction runs where that statement does not exist."""
    with psycopg.connect(pooled_url) as conn, pytest.raises(psycopg.errors.InvalidSqlStatementName):
        for n in range(20):
            conn.execute("SELECT %s::int", (n,))
            conn.commit()


def test_service_writes_and_reads_through_the_pooler(
    pooled_url: str, direct_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=pooled_url, data_dir=tmp_path / "data", jwt_secret=JWT_SECRET, export_delay_ms=50
    )
    with TestClient(create_app(settings)) as client:  # its start creates the tables, through the pooler
        client.headers.update(bearer(settings))
        sent: list[str] = []
        for _ in range(8):  # more than psycopg's prepare threshold of the same statements
            body, trace_ids = request_traces(25, failing_every=5)
            assert client.post("/v1/traces", json=body).status_code == 200
            sent += trace_ids
        # A collector's retry: the rows are there already (the idempotent path, a temp table).
        assert client.post("/v1/traces", json=body).status_code == 200

        for _ in range(8):
            listed = client.get(f"{PREFIX}/requests", params={"limit": 1000})
            assert listed.status_code == 200, listed.text
        assert sorted(row["trace_id"] for row in listed.json()["data"]) == sorted(sent)
        summary = client.get(f"{PREFIX}/requests/summary")
        assert summary.status_code == 200, summary.text
        assert summary.json()["total"]["count"] == len(sent)
        assert client.get(f"{PREFIX}/requests/timeseries").status_code == 200
        errors = client.get(f"{PREFIX}/errors", params={"limit": 1000}).json()["data"]
        assert len(errors) == len(sent) // 5
        resolved = client.patch(f"{PREFIX}/errors/{errors[0]['id']}", json={"resolved": True})
        assert resolved.status_code == 200, resolved.text
        assert client.get(f"{PREFIX}/errors/summary").status_code == 200
    with psycopg.connect(direct_url) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM api_request_logs").fetchone()
    assert row == (len(sent), len(sent))
    assert _advisory_locks(direct_url) == 0


def test_migrations_and_retention_leave_no_lock_behind_the_pooler(
    pooled_url: str, direct_url: str, tmp_path: Path
) -> None:
    engine = create_engine(pooled_url)
    settings = Settings(database_url=pooled_url, data_dir=tmp_path / "data")
    try:
        for _ in range(3):
            migrate(engine)
            # A lock left on a pooled server connection would make the next run skip its purge.
            assert run_retention(engine, settings) is not None
        assert _advisory_locks(direct_url) == 0
    finally:
        engine.dispose()
