"""Rollups kept by the writer: every row really inserted counted once, in its own bucket, and the
same as a rebuild from raw rows says; on the real PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine

from exporter import conventions as c
from exporter.rollups.rebuild import rebuild
from exporter.rollups.schema import ROLLUP_TABLES
from exporter.stats import ExportStats
from exporter.writer import RowWriter
from tests.support.telemetry import event_log, failing_request_span, job_span, request_span, rows_by_table

Row = dict[str, Any]


def snapshot(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every rollup table's rows, sorted (floats rounded: sums may add in another order)."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(db_url) as conn:
        for parts in ROLLUP_TABLES.values():
            for table in parts.values():
                rows = conn.execute(f"SELECT * FROM {table.name}").fetchall()
                found[table.name] = sorted(
                    tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows
                )
    return found


def mixed_batch(at: datetime, count: int = 40) -> dict[str, list[Row]]:
    """Requests (2xx/4xx/5xx, several routes), jobs, errors, state changes, activities, spread
    over two hours around ``at``."""
    rng = random.Random(7)
    records: list[Any] = []
    for n in range(count):
        route = rng.choice(["/devices", "/jobs", "/sites/{id}"])
        status = rng.choice([200, 200, 201, 404, 503])
        records.append(
            request_span(route, status, **{"enduser.id": f"u{n % 5}", "http.request.body.size": n})
        )
        records.append(
            job_span(
                None,
                **{
                    c.JOB_STATUS: rng.choice(["success", "failed"]),
                    c.JOB_ERROR_CODE: "E1" if n % 3 else None,
                },
            )
        )
        records.append(failing_request_span("/boom"))
        records.append(
            event_log(
                c.DEVICE_STATE_EVENT,
                **{
                    c.DEVICE_ID: f"d{n % 4}",
                    c.DEVICE_PREVIOUS_STATE: "online",
                    c.DEVICE_NEW_STATE: "offline",
                },
            )
        )
        records.append(
            event_log(
                c.USER_ACTIVITY_EVENT,
                **{
                    c.ACTIVITY_TYPE: "search" if n % 4 == 0 else "click",
                    c.PAGE_URL: "/devices",
                    c.SESSION_ID: f"s{n % 6}",
                    c.SEARCH_QUERY: "pos" if n % 4 == 0 else None,
                },
            )
        )
    batch = rows_by_table(*records)
    for rows in batch.values():  # spread over two hours, a few each 5-minute bucket
        for index, row in enumerate(rows):
            row["timestamp"] = at + timedelta(minutes=(index * 7) % 120, seconds=index)
            for key in [k for k, v in row.items() if v is None and k == "error_code"]:
                row[key] = None
    return batch


@pytest.fixture()
def writer(db_url: str) -> Any:
    writer = RowWriter(db_url, stats=ExportStats())
    yield writer
    writer.close()


def test_written_rollups_equal_a_rebuild_from_raw_rows(db_url: str, writer: RowWriter) -> None:
    at = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    batch = mixed_batch(at)
    writer.write(batch)
    written = snapshot(db_url)
    assert written["rollup_requests_5m"], "the writer kept the request rollups"
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            hours = rebuild(conn, at - timedelta(hours=1), at + timedelta(hours=3))
    finally:
        engine.dispose()
    assert hours >= 2
    assert snapshot(db_url) == written


def test_a_replayed_batch_counts_once_and_a_late_row_lands_in_its_own_bucket(
    db_url: str, writer: RowWriter
) -> None:
    at = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    batch = mixed_batch(at, count=10)
    writer.write(batch)
    once = snapshot(db_url)
    writer.write(batch)  # a spool replay, a collector retry: every row is stored already
    assert snapshot(db_url) == once
    late = rows_by_table(request_span("/late", 200))
    late["api_request_logs"][0]["timestamp"] = at - timedelta(days=3, minutes=2)  # an hour... days late
    writer.write(late)
    with psycopg.connect(db_url) as conn:
        buckets = conn.execute(
            "SELECT bucket, count FROM rollup_requests_5m WHERE route = '/late'"
        ).fetchall()
    assert buckets == [(datetime(2026, 11, 27, 9, 55, tzinfo=UTC), 1)]


def test_a_partly_replayed_batch_counts_only_its_new_rows(db_url: str, writer: RowWriter) -> None:
    at = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    first = rows_by_table(*(request_span("/r", 200) for _ in range(3)))
    for row in first["api_request_logs"]:
        row["timestamp"] = at
    writer.write(first)
    more = rows_by_table(request_span("/r", 200))
    more["api_request_logs"][0]["timestamp"] = at
    writer.write({"api_request_logs": [*first["api_request_logs"], *more["api_request_logs"]]})
    with psycopg.connect(db_url) as conn:
        (count,) = conn.execute(
            "SELECT sum(count) FROM rollup_requests_1h WHERE route = '/r'"
        ).fetchone() or (0,)
        (binned,) = conn.execute(
            "SELECT sum(n) FROM rollup_requests_1h, unnest(latency_counts) AS n WHERE route = '/r'"
        ).fetchone() or (0,)
    assert (count, binned) == (4, 4)


def test_rollups_outlive_the_raw_rows_and_have_their_own_retention(
    db_url: str, writer: RowWriter, tmp_path: Any
) -> None:
    from exporter.retention import purge
    from homepot_foundation.settings import Settings

    now = datetime(2026, 12, 1, tzinfo=UTC)
    batch = rows_by_table(
        request_span("/old", 200), request_span("/older", 200), request_span("/recent", 200)
    )
    for row, age in zip(batch["api_request_logs"], (200, 500, 10), strict=True):
        row["timestamp"] = now - timedelta(days=age)
    writer.write(batch)
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        results = purge(
            engine, Settings(database_url=db_url, data_dir=tmp_path), now=now
        )  # raw 90 d, rollups 400 d
    finally:
        engine.dispose()
    with psycopg.connect(db_url) as conn:
        mine = "route IN ('/old', '/older', '/recent')"
        raw = {row[0] for row in conn.execute(f"SELECT route FROM api_request_logs WHERE {mine}")}
        rolled = {row[0] for row in conn.execute(f"SELECT route FROM rollup_requests_1h WHERE {mine}")}
    assert raw == {"/recent"}  # the raw rows are gone after 90 days...
    assert rolled == {"/old", "/recent"}  # ...their hourly trend is kept for 400
    rollups = next(result for result in results if result.table == "rollups")
    assert rollups.retention_days == 400 and rollups.rows > 0
    assert "rollups:" in rollups.describe()


def test_the_rebuild_command_recomputes_a_range_with_progress(
    db_url: str, writer: RowWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from homepot_analytics.cli import app
    from homepot_foundation.settings import get_settings

    at = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    writer.write(mixed_batch(at, count=8))
    written = snapshot(db_url)
    window = (datetime(2026, 11, 30, 9, tzinfo=UTC), datetime(2026, 11, 30, 13, tzinfo=UTC))

    def in_window(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [row for row in rows if window[0] <= row[0] < window[1]]

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM rollup_requests_5m")  # lost, or defined anew
    monkeypatch.setenv("HOMEPOT_ANALYTICS_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app,
            [
                "rollups",
                "rebuild",
                "--start",
                "2026-11-30T09:00",
                "--end",
                "2026-11-30T13:00",
                "--no-progress",
            ],
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "Rebuilt" in result.output
    assert in_window(snapshot(db_url)["rollup_requests_5m"]) == in_window(written["rollup_requests_5m"])
    bad = CliRunner().invoke(app, ["rollups", "rebuild", "--start", "2026-11-30", "--end", "2026-11-29"])
    assert bad.exit_code == 2 and "must be after" in bad.output
