"""The COPY writer on the real PostgreSQL: idempotent replays, bad rows isolated, outages raised."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from exporter.mapping import span_to_rows
from exporter.stats import ExportStats
from exporter.writer import UNAVAILABLE, RowWriter
from tests.conftest import fetch_rows
from tests.support.processes import refused_url
from tests.support.telemetry import failing_request_span, request_rows, request_span, rows_by_table


@pytest.fixture
def stats() -> ExportStats:
    return ExportStats()


@pytest.fixture
def writer(db_url: str, stats: ExportStats) -> Iterator[RowWriter]:
    writer = RowWriter(db_url, stats=stats)
    yield writer
    writer.close()


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]


def test_fast_path_writes_every_row_of_every_table(
    writer: RowWriter, db_url: str, stats: ExportStats
) -> None:
    batch = rows_by_table(request_span(), failing_request_span())
    assert writer.write(batch) == 3
    assert count(db_url, "api_request_logs") == 2
    assert count(db_url, "error_logs") == 1
    assert stats.get("written", "api_request_logs") == 2
    assert stats.get("written", "error_logs") == 1


def test_writing_a_batch_again_stores_each_row_once(
    writer: RowWriter, db_url: str, stats: ExportStats
) -> None:
    stored = request_rows(3)
    writer.write({"api_request_logs": stored})
    new = request_rows(2)
    # A replay of a batch that was committed just before the connection broke, plus new rows.
    assert writer.write({"api_request_logs": stored + new}) == 2
    assert count(db_url, "api_request_logs") == 5
    assert stats.get("written", "api_request_logs") == 5
    ids = [row["event_id"] for row in fetch_rows(db_url, "api_request_logs")]
    assert len(set(ids)) == 5


def test_a_row_the_database_refuses_costs_only_itself(
    writer: RowWriter, db_url: str, stats: ExportStats
) -> None:
    rows = request_rows(4)
    rows[2] = {**rows[2], "endpoint": "x" * 5000}  # longer than varchar(2048): refused
    assert writer.write({"api_request_logs": rows}) == 3
    assert stats.get("rejected", "api_request_logs") == 1
    assert sorted(str(r["event_id"]) for r in fetch_rows(db_url, "api_request_logs")) == sorted(
        str(r["event_id"]) for i, r in enumerate(rows) if i != 2
    )


def test_bad_row_among_already_stored_rows_costs_only_itself(
    writer: RowWriter, db_url: str, stats: ExportStats
) -> None:
    stored = request_rows(2)
    writer.write({"api_request_logs": stored})
    bad = {**request_rows(1)[0], "method": "M" * 40}  # varchar(16)
    new = request_rows(2)
    assert writer.write({"api_request_logs": [*stored, bad, *new]}) == 2
    assert count(db_url, "api_request_logs") == 4
    assert stats.get("rejected", "api_request_logs") == 1


def test_oversized_attribute_values_are_truncated_and_clamped(writer: RowWriter, db_url: str) -> None:
    huge = "é" * 300_000
    span = request_span(
        "/p/" + huge,
        **{
            "http.user_agent": "ua\x00" + huge,
            "enduser.id": huge,
            "http.status_code": 10**30,
            "http.request.body.size": 10**40,
            "http.response.body.size": -(10**40),
            "net.peer.ip": huge,
        },
    )
    ok = request_span()
    writer.write(rows_by_table(span, ok))
    rows = fetch_rows(db_url, "api_request_logs")
    assert len(rows) == 2
    big: dict[str, Any] = next(r for r in rows if r["trace_id"] == format(span.context.trace_id, "032x"))
    assert len(big["endpoint"]) == 2048 and big["endpoint"].startswith("/p/éé")
    assert len(big["user_agent"]) == 1024 and "\x00" not in big["user_agent"]
    assert len(big["user_id"]) == 255
    assert len(big["ip_address"]) == 64
    assert big["status_code"] == 2**31 - 1
    assert big["request_size_bytes"] == 2**63 - 1
    assert big["response_size_bytes"] == -(2**63 - 1)


def test_database_away_raises_unavailable_quickly(stats: ExportStats) -> None:
    writer = RowWriter(refused_url(), stats=stats, connect_timeout=2)
    with pytest.raises(UNAVAILABLE):
        writer.write({"api_request_logs": request_rows(1)})
    assert stats.total("written") == 0 and stats.total("rejected") == 0


def _exporter_backends(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT pid, state FROM pg_stat_activity "
            "WHERE application_name = 'homepot-analytics-exporter' AND datname = current_database()"
        ).fetchall()


def test_connect_opens_the_connection_the_first_batch_then_uses(writer: RowWriter, db_url: str) -> None:
    # An export worker of an earlier test may still be closing its own: only new ones count.
    others = {pid for pid, _ in _exporter_backends(db_url)}
    writer.connect()
    [(pid, state)] = [backend for backend in _exporter_backends(db_url) if backend[0] not in others]
    assert state == "idle"  # the device-key lookup's transaction is ended, no lock held
    writer.write({"api_request_logs": request_rows(2)})
    assert [backend for backend in _exporter_backends(db_url) if backend[0] not in others] == [(pid, "idle")]
    assert count(db_url, "api_request_logs") == 2


def test_connect_to_a_database_away_raises_unavailable(stats: ExportStats) -> None:
    writer = RowWriter(refused_url(), stats=stats, connect_timeout=2)
    with pytest.raises(UNAVAILABLE):
        writer.connect()


def test_lost_connection_raises_unavailable_then_reconnects(writer: RowWriter, db_url: str) -> None:
    writer.write({"api_request_logs": request_rows(1)})
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'homepot-analytics-exporter' AND datname = current_database()"
        )
    lost = request_rows(2)
    with pytest.raises(UNAVAILABLE):
        writer.write({"api_request_logs": lost})
    writer.write({"api_request_logs": lost})  # the rows the caller kept, on a new connection
    assert count(db_url, "api_request_logs") == 3


def test_missing_table_is_an_outage_not_a_bad_row(db_url: str, stats: ExportStats) -> None:
    # A search_path without the tables: every row would be "refused"; the batch must be kept.
    schema = f"empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    writer = RowWriter(f"{db_url}?options=-csearch_path%3D{schema}", stats=stats)
    try:
        with pytest.raises(UNAVAILABLE):
            writer.write({"api_request_logs": request_rows(3)})
        assert stats.total("rejected") == 0
    finally:
        writer.close()
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def test_failing_table_setup_is_retried_on_the_next_write(db_url: str, stats: ExportStats) -> None:
    attempts: list[str] = []

    def migrate(dsn: str) -> None:
        attempts.append(dsn)
        if len(attempts) == 1:
            raise RuntimeError("migration lock timeout")

    writer = RowWriter(db_url, stats=stats, on_first_connect=migrate)
    try:
        with pytest.raises(UNAVAILABLE):
            writer.write({"api_request_logs": request_rows(1)})
        writer.write({"api_request_logs": request_rows(1)})
    finally:
        writer.close()
    assert len(attempts) == 2
    assert count(db_url, "api_request_logs") == 1


def test_job_rows_with_huge_numbers_are_clamped(writer: RowWriter, db_url: str) -> None:
    from tests.support.telemetry import job_span

    span = job_span(**{"homepot.job.duration_ms": 10**20, "homepot.job.retry_count": "12" * 50})
    assert [table for table, _ in span_to_rows(span)] == ["job_outcomes"]
    writer.write(rows_by_table(span))
    (row,) = fetch_rows(db_url, "job_outcomes")
    assert row["duration_ms"] == 2**31 - 1
    assert row["retry_count"] == 2**31 - 1


def test_a_row_spooled_before_a_nullable_column_existed_is_written_with_null(
    db_url: str, writer: RowWriter
) -> None:
    (old,) = request_rows(1, "/spooled-by-an-older-version")
    del old["service_version"], old["deployment_environment"]  # the columns of migration 3
    assert writer.write({"api_request_logs": [old]}) == 1
    (row,) = fetch_rows(db_url, "api_request_logs")
    assert row["endpoint"] == "/spooled-by-an-older-version" and row["service_version"] is None


def test_meanwhile_runs_once_while_the_largest_copy_is_open(
    writer: RowWriter, db_url: str, stats: ExportStats
) -> None:
    """The caller's work (mapping the next batch) runs once the largest table's rows are all
    sent, before that COPY ends: PostgreSQL parses them meanwhile."""
    seen: list[tuple[str, int]] = []

    def meanwhile() -> None:
        with psycopg.connect(db_url) as conn:
            (query,) = conn.execute(
                "SELECT query FROM pg_stat_activity WHERE application_name = 'homepot-analytics-exporter'"
            ).fetchone()  # type: ignore[misc]
        seen.append((query, count(db_url, "api_request_logs")))

    batch = rows_by_table(request_span(), request_span(), failing_request_span())
    assert writer.write(batch, meanwhile=meanwhile) == 4
    assert len(seen) == 1
    query, visible = seen[0]
    assert query.startswith('COPY "api_request_logs"') and visible == 0  # open, not committed
    assert count(db_url, "api_request_logs") == 3 and count(db_url, "error_logs") == 1


def test_a_failing_meanwhile_costs_the_batch_nothing(
    writer: RowWriter, db_url: str, stats: ExportStats, caplog: pytest.LogCaptureFixture
) -> None:
    def meanwhile() -> None:
        raise RuntimeError("the next batch could not be mapped")

    assert writer.write({"api_request_logs": request_rows(2)}, meanwhile=meanwhile) == 2
    assert count(db_url, "api_request_logs") == 2
    assert "work done during a write failed" in caplog.text
