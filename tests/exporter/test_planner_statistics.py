"""The writer analyses a partition PostgreSQL never analysed, once, so trace joins plan well."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from exporter.planner_statistics import PartitionStatistics
from exporter.stats import ExportStats
from exporter.writer import RowWriter
from tests.support.telemetry import request_rows


def _reltuples(url: str, name: str) -> float:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [name]).fetchone()
        assert row is not None
        return float(row[0])


def _now_rows(count: int) -> list[dict[str, object]]:
    rows = request_rows(count)
    for row in rows:
        row["timestamp"] = datetime.now(UTC)  # this month's partition exists in every test database
    return rows


def test_a_never_analysed_partition_is_analysed_by_the_first_write(db_url: str) -> None:
    database_url = db_url
    rows = _now_rows(3)
    month = datetime.now(UTC)
    name = f"api_request_logs_p{month:%Y%m}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        # As PostgreSQL leaves a partition until it is first analysed (autovacuum off, or a new month).
        admin.execute(f"UPDATE pg_class SET reltuples = -1 WHERE relname = '{name}'")
    assert _reltuples(database_url, name) == -1
    writer = RowWriter(database_url, stats=ExportStats())
    try:
        writer.write({"api_request_logs": rows})
    finally:
        writer.close()
    assert _reltuples(database_url, name) >= 0


def test_known_partitions_cost_no_query(database_url: str) -> None:
    statistics = PartitionStatistics()
    batch = {"api_request_logs": _now_rows(1)}
    with psycopg.connect(database_url) as conn:
        statistics.ensure(conn, batch)
        conn.close()  # a second look would fail on a closed connection
        statistics.ensure(conn, batch)
