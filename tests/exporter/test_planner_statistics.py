"""The writer analyses a partition PostgreSQL never analysed, and again as it grows, so the trace
joins plan on the partition's current size."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from exporter.partitions import create_month_partition
from exporter.planner_statistics import GROWTH, MIN_ROWS, PartitionStatistics
from exporter.stats import ExportStats
from exporter.writer import RowWriter
from homepot_foundation.database import create_engine
from tests.support.telemetry import request_rows

# A month of its own, far from every other test's rows: its partition starts empty here.
_MONTH = datetime(2031, 3, 1, tzinfo=UTC)


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


@pytest.fixture
def fresh_partition(db_url: str) -> Iterator[str]:
    """An empty, never-analysed api_request_logs partition for ``_MONTH``; dropped after."""
    engine = create_engine(db_url)
    with engine.begin() as conn:
        name = create_month_partition(conn, "api_request_logs", _MONTH, datetime(2031, 4, 1, tzinfo=UTC))
    try:
        yield name
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE "{name}"')
        engine.dispose()


def _month_rows(count: int, start: int = 0) -> list[dict[str, object]]:
    rows = request_rows(count)
    for index, row in enumerate(rows, start):
        row["timestamp"] = _MONTH + timedelta(days=10, milliseconds=index)
    return rows


def test_a_request_partition_is_analysed_again_as_it_grows(db_url: str, fresh_partition: str) -> None:
    """Statistics of a partition's first rows would plan its joins when it holds a thousand times
    as many (autovacuum off, as on this machine's server)."""
    writer = RowWriter(db_url, stats=ExportStats())
    try:
        writer.write({"api_request_logs": _month_rows(3)})
        assert _reltuples(db_url, fresh_partition) == 3  # analysed by the first write
        writer.write({"api_request_logs": _month_rows(MIN_ROWS, start=3)})
        assert _reltuples(db_url, fresh_partition) == MIN_ROWS + 3  # grown far more than GROWTH times
        writer.write({"api_request_logs": _month_rows(MIN_ROWS // 2, start=MIN_ROWS + 3)})
        assert _reltuples(db_url, fresh_partition) == MIN_ROWS + 3  # grown by half: not again yet
    finally:
        writer.close()


def test_another_writer_does_not_analyse_growth_already_analysed(db_url: str, fresh_partition: str) -> None:
    """Growth is measured against what the last analysis saw, whichever process made it."""
    first = RowWriter(db_url, stats=ExportStats())
    try:
        first.write({"api_request_logs": _month_rows(2 * MIN_ROWS)})
    finally:
        first.close()
    assert _reltuples(db_url, fresh_partition) == 2 * MIN_ROWS
    second = RowWriter(db_url, stats=ExportStats())
    try:
        second.write({"api_request_logs": _month_rows(2 * MIN_ROWS * (GROWTH - 2), start=2 * MIN_ROWS)})
    finally:
        second.close()
    assert _reltuples(db_url, fresh_partition) == 2 * MIN_ROWS  # looked at: grown, but not GROWTH times


def test_partitions_the_joins_do_not_read_are_looked_at_once(database_url: str) -> None:
    statistics = PartitionStatistics()
    moment = datetime.now(UTC)
    with psycopg.connect(database_url) as conn:
        statistics.ensure(conn, {"job_outcomes": [{"timestamp": moment}]})
        conn.close()  # a second look would fail on a closed connection
        statistics.ensure(conn, {"job_outcomes": [{"timestamp": moment}] * (100 * MIN_ROWS)})
