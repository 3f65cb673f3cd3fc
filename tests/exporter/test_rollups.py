"""Rollups kept by the triggers and ``refresh``: every row stored counted once, in its own bucket,
whoever wrote it, and the same as a rebuild from raw rows says; on the real PostgreSQL."""

from __future__ import annotations

import random
import struct
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine

from exporter import conventions as c
from exporter.histogram import quantiles
from exporter.rollups.definitions import (
    GRAINS,
    LATENCY_BINS,
    LATENCY_COUNTS,
    PACKED_BINS,
    PACKED_COUNTS,
    ROLLUPS,
    STORED_QUANTILES,
)
from exporter.rollups.rebuild import rebuild
from exporter.rollups.refresh import REFRESH_LOCK_KEY, RefreshResult, refresh
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


class RefreshingWriter(RowWriter):
    """The writer, then a refresh (as the service runs every few seconds) after each batch."""

    def write(self, rows: Any, **options: Any) -> int:
        written = super().write(rows, **options)
        refreshed(self._dsn)
        return written


def refreshed(db_url: str) -> RefreshResult:
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return refresh(conn)
    finally:
        engine.dispose()


def stale_marks(db_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT source, bucket FROM rollup_stale_buckets ORDER BY 1, 2").fetchall()


@pytest.fixture()
def writer(db_url: str) -> Any:
    writer = RefreshingWriter(db_url, stats=ExportStats())
    yield writer
    writer.close()


def test_refreshed_rollups_equal_a_rebuild_from_raw_rows(db_url: str) -> None:
    at = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    batch = mixed_batch(at)
    plain = RowWriter(db_url, stats=ExportStats())
    try:
        plain.write(batch)
    finally:
        plain.close()
    marks = stale_marks(db_url)
    assert {source for source, _ in marks} == {
        "api_request_logs",
        "job_outcomes",
        "error_logs",
        "device_state_history",
        "user_activities",
    }
    assert len(marks) <= 5 * 25  # a few 5-minute buckets per table, not a mark per row
    result = refreshed(db_url)
    assert result.buckets == len(marks) and not result.busy
    assert stale_marks(db_url) == []
    written = snapshot(db_url)
    assert written["rollup_requests_5m"], "the refresh built the request rollups"
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            hours = rebuild(conn, at - timedelta(hours=1), at + timedelta(hours=3))
    finally:
        engine.dispose()
    assert hours >= 2
    assert snapshot(db_url) == written


def test_every_latency_row_stores_its_bins_packed_and_the_quantiles_of_them(db_url: str) -> None:
    plain = RowWriter(db_url, stats=ExportStats())
    try:
        plain.write(mixed_batch(datetime(2026, 11, 30, 10, 0, tzinfo=UTC)))
    finally:
        plain.close()
    refreshed(db_url)
    fractions = {name: q for q, name in STORED_QUANTILES.items()}
    checked = 0
    with psycopg.connect(db_url) as conn:
        for rollup in ROLLUPS:
            for grain in GRAINS:
                if rollup.latency is None:
                    continue
                rows = conn.execute(
                    f"SELECT {LATENCY_BINS}, {LATENCY_COUNTS}, {PACKED_BINS}, {PACKED_COUNTS}, "
                    f"{', '.join(fractions)} FROM {rollup.table_name(grain)}"
                ).fetchall()
                for bins, counts, packed_bins, packed_counts, *stored in rows:
                    assert stored == list(quantiles(dict(zip(bins, counts, strict=True)), fractions).values())
                    # The packed histogram is the arrays' (``exporter.histogram``'s packed form).
                    assert packed_bins == struct.pack(f">{len(bins)}h", *bins)
                    assert packed_counts == struct.pack(f">{len(counts)}q", *counts)
                    checked += 1
    assert checked > 20


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


def test_rows_inserted_by_another_program_count_too(db_url: str) -> None:
    """HOMEPOT writes some rows itself, into the tables it shares (no event_id: the default)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO device_state_history (timestamp, device_id, previous_state, new_state) "
            "VALUES ('2026-11-30 10:01+00', 'pos-1', 'online', 'offline'), "
            "('2026-11-30 10:02+00', 'pos-2', 'online', 'offline')"
        )
    refreshed(db_url)
    with psycopg.connect(db_url) as conn:
        counts = conn.execute(
            "SELECT bucket, count FROM rollup_device_states_1d WHERE new_state = 'offline'"
        ).fetchall()
    assert counts == [(datetime(2026, 11, 30, tzinfo=UTC), 2)]


def test_a_deleted_row_is_taken_out_and_an_updated_one_recounted(db_url: str, writer: RowWriter) -> None:
    at = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    batch = rows_by_table(request_span("/gone", 200), request_span("/gone", 200))
    for row in batch["api_request_logs"]:
        row["timestamp"] = at
    writer.write(batch)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM api_request_logs WHERE ctid = (SELECT min(ctid) FROM api_request_logs)")
        conn.execute("UPDATE api_request_logs SET status_code = 503")
    refreshed(db_url)
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT count, count_5xx FROM rollup_requests_1h WHERE route = '/gone'"
        ).fetchall()
    assert rows == [(1, 1)]


def test_marks_older_than_the_oldest_raw_row_keep_the_history(db_url: str, writer: RowWriter) -> None:
    """Raw rows purged, their rollups kept: a mark there (a late row since deleted, a DELETE by
    hand) must not rebuild the bucket from nothing."""
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    old = rows_by_table(request_span("/old", 200))
    old["api_request_logs"][0]["timestamp"] = now - timedelta(days=100)
    writer.write(old)
    recent = rows_by_table(request_span("/recent", 200))
    recent["api_request_logs"][0]["timestamp"] = now
    writer.write(recent)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM api_request_logs WHERE route = '/old'")  # as a purge would
    result = refreshed(db_url)
    assert (result.buckets, result.skipped) == (0, 1)
    with psycopg.connect(db_url) as conn:
        kept = conn.execute("SELECT route, count FROM rollup_requests_1d ORDER BY route").fetchall()
    assert kept == [("/old", 1), ("/recent", 1)]


def test_one_process_refreshes_at_a_time(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_request_logs (timestamp, endpoint, method, status_code, response_time_ms) "
            "VALUES (now(), '/x', 'GET', 200, 1)"
        )
    with psycopg.connect(db_url) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (REFRESH_LOCK_KEY,))  # another sink
        assert refreshed(db_url).busy
    assert stale_marks(db_url) != []  # left for the next round
    assert refreshed(db_url).buckets == 1 and stale_marks(db_url) == []


def test_reads_take_raw_rows_where_the_rollups_are_behind(db_url: str) -> None:
    """Before a refresh the summary still counts every row: the stale buckets come from raw rows."""
    from query_api import rollup_reads, summaries
    from query_api.filters import TimeWindow

    at = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    plain = RowWriter(db_url, stats=ExportStats())
    try:
        plain.write(mixed_batch(at))
        refreshed(db_url)
        late = mixed_batch(at + timedelta(minutes=50), count=12)
        plain.write(late)  # not refreshed yet
    finally:
        plain.close()
    window = TimeWindow(at - timedelta(hours=1), at + timedelta(hours=4))
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            from exporter.rollups.definitions import REQUESTS
            from exporter.rollups.stale import fresh_until

            stale_from = fresh_until(conn, REQUESTS.source)
            assert stale_from is not None and at < stale_from < at + timedelta(hours=2)
            planned = rollup_reads.plan(REQUESTS, [], window, stale_from)
            assert planned is not None and planned.pieces[-1] == rollup_reads.Piece(
                None, stale_from, window.end
            )
            from_rollups = summaries.request_summary(conn, [], window, 100)
            exact = summaries.request_summary(conn, [], window, 100, use_rollups=False)
    finally:
        engine.dispose()
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT count(*) FROM api_request_logs").fetchone()
    assert stored is not None
    assert from_rollups["total"]["count"] == exact["total"]["count"] == stored[0]
    assert from_rollups["total"]["p95_ms"] == pytest.approx(exact["total"]["p95_ms"], rel=0.01)


def test_the_refresh_command_and_the_service_bring_the_rollups_up_to_date(
    db_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from homepot_analytics.cli import app
    from homepot_foundation.settings import Settings, get_settings
    from query_api.app import create_app

    insert = (
        "INSERT INTO api_request_logs (timestamp, endpoint, method, status_code, response_time_ms) "
        "VALUES (now(), '/x', 'GET', 200, 1)"
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(insert)
    monkeypatch.setenv("HOMEPOT_ANALYTICS_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(app, ["rollups", "refresh", "--no-progress"])
    finally:
        get_settings.cache_clear()
    assert done.exit_code == 0, done.output
    assert "Refreshed 1 stale 5-minute buckets" in done.output
    assert stale_marks(db_url) == []
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(insert)
    service = create_app(
        Settings(database_url=db_url, data_dir=tmp_path, jwt_secret="x" * 32, rollup_refresh_seconds=0.05)
    )
    with TestClient(service):
        deadline = time.monotonic() + 20
        # The marks go when the refresh commits; the run is counted just after.
        while (stale_marks(db_url) or service.state.rollup_refresh.runs < 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.state.rollup_refresh.runs >= 1
    assert stale_marks(db_url) == []
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT sum(count) FROM rollup_requests_1d").fetchone() == (2,)


def test_refreshing_while_writers_write_loses_nothing(db_url: str) -> None:
    """Two writers fill the same buckets while refreshes run: after a last refresh the rollups
    are what a rebuild from the raw rows says (a mark written mid-refresh is kept for the next)."""
    import threading

    at = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    stop = threading.Event()
    failures: list[BaseException] = []

    def write(seed: int) -> None:
        writer = RowWriter(db_url, stats=ExportStats())
        try:
            for n in range(12):
                batch = rows_by_table(*(request_span(f"/r{n % 3}", 200 + seed) for _ in range(20)))
                for index, row in enumerate(batch["api_request_logs"]):
                    row["timestamp"] = at + timedelta(seconds=n * 7 + index)
                writer.write(batch)
        except BaseException as error:  # reported by the test thread
            failures.append(error)
        finally:
            writer.close()

    def keep_refreshing() -> None:
        while not stop.is_set():
            try:
                refreshed(db_url)
            except BaseException as error:
                failures.append(error)
                return

    writers = [threading.Thread(target=write, args=(seed,)) for seed in (0, 1)]
    refresher = threading.Thread(target=keep_refreshing)
    refresher.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    refresher.join()
    assert failures == []
    refreshed(db_url)
    kept = snapshot(db_url)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT sum(count) FROM rollup_requests_1d").fetchone() == (2 * 12 * 20,)
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            rebuild(conn, at - timedelta(hours=1), at + timedelta(hours=2))
    finally:
        engine.dispose()
    assert snapshot(db_url) == kept
