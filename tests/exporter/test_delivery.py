"""Delivery on the real PostgreSQL: write now, else spool; replay exactly once; drops counted;
submitted batches written in order by one writer thread, bounded, flushed and drained."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from exporter.delivery import Delivery
from exporter.spool import Spool
from exporter.stats import ExportStats
from exporter.writer import RowWriter
from tests.support.processes import refused_url
from tests.support.telemetry import request_rows


def count(url: str, table: str = "api_request_logs") -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def stats() -> ExportStats:
    return ExportStats()


@pytest.fixture
def deliveries() -> Iterator[Callable[..., Delivery]]:
    """Deliveries with a fast replay backoff, shut down after the test."""
    made: list[Delivery] = []

    def make(url: str, spool: Spool | None, stats: ExportStats, **options: float) -> Delivery:
        options = {"min_backoff_s": 0.02, "max_backoff_s": 0.1, **options}
        delivery = Delivery(RowWriter(url, stats=stats, connect_timeout=2), spool, stats=stats, **options)
        made.append(delivery)
        return delivery

    yield make
    for delivery in made:
        delivery.shutdown(timeout_s=2)


@pytest.fixture
def drop_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # The exporter's loggers do not propagate (they must not feed OTel logging): listen directly.
    logger = logging.getLogger("exporter.delivery")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def test_database_up_writes_now_and_spools_nothing(
    db_url: str, tmp_path: Path, stats: ExportStats, deliveries: Callable[..., Delivery]
) -> None:
    spool = Spool(tmp_path / "spool")
    delivery = deliveries(db_url, spool, stats)
    assert delivery.deliver({"api_request_logs": request_rows(3)}) is True
    assert count(db_url) == 3
    assert stats.get("written", "api_request_logs") == 3
    assert stats.total("spooled") == 0 and spool.pending() == []


def test_outage_spools_and_the_next_start_replays_exactly_once(
    db_url: str, tmp_path: Path, stats: ExportStats, deliveries: Callable[..., Delivery]
) -> None:
    spool_dir = tmp_path / "spool"
    down = deliveries(refused_url(), Spool(spool_dir), stats)
    batches = [request_rows(4) for _ in range(3)]
    assert all(down.deliver({"api_request_logs": rows}) for rows in batches)
    assert stats.get("spooled", "api_request_logs") == 12
    assert stats.get("export_failures", "api_request_logs") >= 1
    down.shutdown(timeout_s=1)
    assert len(Spool(spool_dir).pending()) == 3, "kept on disk for the next start"

    up = deliveries(db_url, Spool(spool_dir), stats)  # the next start, database back
    wait_until(lambda: count(db_url) == 12 and not Spool(spool_dir).pending())
    assert stats.get("replayed", "api_request_logs") == 12
    ids = {row["event_id"] for rows in batches for row in rows}
    with psycopg.connect(db_url) as conn:
        stored = [str(r[0]) for r in conn.execute("SELECT event_id FROM api_request_logs").fetchall()]
    assert sorted(stored) == sorted(ids)
    wait_until(lambda: up._replayer is None)  # the replayer stops once the spool is drained


def test_replaying_rows_already_stored_never_duplicates_them(
    db_url: str, tmp_path: Path, stats: ExportStats, deliveries: Callable[..., Delivery]
) -> None:
    # The commit reached the database but its acknowledgement did not reach us: spooled anyway.
    rows = request_rows(5)
    RowWriter(db_url).write({"api_request_logs": rows[:3]})
    spool = Spool(tmp_path / "spool")
    spool.put({"api_request_logs": rows})
    deliveries(db_url, spool, stats)
    # The counters are updated once the write returns, a moment after the rows are visible.
    wait_until(lambda: not spool.pending() and stats.get("replayed", "api_request_logs") == 5)
    assert count(db_url) == 5
    assert stats.get("written", "api_request_logs") == 2


def test_batches_arriving_during_a_replay_all_land(
    db_url: str, tmp_path: Path, stats: ExportStats, deliveries: Callable[..., Delivery]
) -> None:
    spool = Spool(tmp_path / "spool")
    for _ in range(20):
        spool.put({"api_request_logs": request_rows(50)})
    delivery = deliveries(db_url, spool, stats)
    for _ in range(20):
        assert delivery.deliver({"api_request_logs": request_rows(10)})
    wait_until(lambda: count(db_url) == 1200 and not spool.pending())
    assert stats.total("dropped") == 0


def test_a_batch_that_can_never_be_written_is_set_aside_not_blocking(
    db_url: str, tmp_path: Path, stats: ExportStats, deliveries: Callable[..., Delivery]
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put({"api_request_logs": request_rows(2)})
    spool.put({"api_request_logs": [{"endpoint": "/missing-every-other-column"}]})
    spool.put({"api_request_logs": request_rows(3)})
    (spool.directory / "00000000000000000000-1-000001.batch").write_bytes(b"not a pickle")
    deliveries(db_url, spool, stats)
    wait_until(lambda: not spool.pending() and count(db_url) == 5)
    assert len(list(spool.directory.glob("*.failed"))) == 1
    assert len(list(spool.directory.glob("*.corrupt"))) == 1
    assert stats.get("rejected", "api_request_logs") == 1


def test_full_spool_drops_counts_per_table_and_logs(
    tmp_path: Path,
    stats: ExportStats,
    deliveries: Callable[..., Delivery],
    drop_log: pytest.LogCaptureFixture,
) -> None:
    rows = request_rows(20)
    size = len(pickle.dumps({"api_request_logs": rows}, protocol=pickle.HIGHEST_PROTOCOL))
    spool = Spool(tmp_path / "spool", max_bytes=int(size * 1.5))
    delivery = deliveries(refused_url(), spool, stats)
    assert delivery.deliver({"api_request_logs": rows}) is True
    assert delivery.deliver({"api_request_logs": request_rows(20), "job_outcomes": [{}] * 7}) is False
    assert spool.size_bytes() <= spool.max_bytes
    assert stats.get("dropped", "api_request_logs", "spool_full") == 20
    assert stats.get("dropped", "job_outcomes", "spool_full") == 7
    assert any("dropped 27 analytics rows (spool_full)" in r.getMessage() for r in drop_log.records)


def test_without_a_spool_an_outage_drops_and_counts(tmp_path: Path, stats: ExportStats) -> None:
    delivery = Delivery(RowWriter(refused_url(), stats=stats, connect_timeout=2), None, stats=stats)
    assert delivery.deliver({"device_state_history": [{}] * 4}) is False
    assert stats.get("dropped", "device_state_history", "no_spool") == 4
    delivery.shutdown()


def test_batches_claimed_by_a_dead_process_are_replayed(
    db_url: str, tmp_path: Path, stats: ExportStats, deliveries: Callable[..., Delivery]
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put({"api_request_logs": request_rows(2)})
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (path,) = spool.pending()
    path.rename(path.with_name(f"{path.name}.{int(dead.stdout)}.claimed"))
    assert spool.pending() == []
    deliveries(db_url, spool, stats)
    wait_until(lambda: count(db_url) == 2)


def test_replay_backs_off_while_the_database_stays_away(
    tmp_path: Path, stats: ExportStats, deliveries: Callable[..., Delivery]
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put({"api_request_logs": request_rows(1)})
    deliveries(refused_url(), spool, stats, min_backoff_s=0.05, max_backoff_s=0.4)
    time.sleep(2.0)
    attempts = stats.get("export_failures", "api_request_logs")
    # 0.05, 0.1, 0.2, 0.4, 0.4 ... s apart: about 7 in 2 s (40 without backoff).
    assert 2 <= attempts <= 12, attempts
    assert spool.pending(), "kept while the database is away"


def test_shutdown_with_the_database_away_is_bounded(
    tmp_path: Path, stats: ExportStats, deliveries: Callable[..., Delivery]
) -> None:
    spool = Spool(tmp_path / "spool")
    delivery = deliveries(refused_url(), spool, stats)
    for _ in range(50):
        delivery.deliver({"api_request_logs": request_rows(2)})
    started = time.monotonic()
    delivery.shutdown(timeout_s=1)
    assert time.monotonic() - started < 3
    assert len(spool.pending()) == 50


def test_concurrent_deliveries_share_the_last_spool_bytes_safely(
    tmp_path: Path, stats: ExportStats, deliveries: Callable[..., Delivery]
) -> None:
    rows = request_rows(10)
    size = len(pickle.dumps({"api_request_logs": rows}, protocol=pickle.HIGHEST_PROTOCOL))
    spool = Spool(tmp_path / "spool", max_bytes=size * 10 + size // 2)
    delivery = deliveries(refused_url(), spool, stats)
    threads = [
        threading.Thread(target=lambda: [delivery.deliver({"api_request_logs": rows}) for _ in range(10)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert spool.size_bytes() <= spool.max_bytes
    spooled = stats.get("spooled", "api_request_logs")
    dropped = stats.get("dropped", "api_request_logs")
    assert spooled + dropped == 400 and spooled == 100


# --- submit: the exporters' asynchronous path ------------------------------------------------------
class RecordingWriter(RowWriter):
    """A real writer that remembers the batches it was asked to write, and can be held back."""

    def __init__(self, url: str, stats: ExportStats, *, fail_first: int = 0) -> None:
        super().__init__(url, stats=stats, connect_timeout=2)
        self.paths: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.writing = threading.Event()
        self._fail_first = fail_first

    def write(self, rows: Any, **options: Any) -> int:
        self.writing.set()
        assert self.release.wait(30)
        if self._fail_first:
            self._fail_first -= 1
            raise RuntimeError("a bug in the writer")
        self.paths += [str(row["endpoint"]) for row in rows.get("api_request_logs", [])]
        return super().write(rows, **options)


def test_flush_makes_submitted_rows_visible(db_url: str, stats: ExportStats) -> None:
    writer = RecordingWriter(db_url, stats)
    delivery = Delivery(writer, None, stats=stats)
    writer.release.clear()  # the writer thread is still busy when flush is called
    for _ in range(3):
        threading.Timer(0.2, writer.release.set).start()
        assert delivery.submit({"api_request_logs": request_rows(4)}) is True
    assert delivery.flush(timeout_s=30) is True
    assert count(db_url) == 12 and stats.get("written", "api_request_logs") == 12
    delivery.shutdown()


def test_submitted_batches_are_written_in_order(db_url: str, stats: ExportStats) -> None:
    writer = RecordingWriter(db_url, stats)
    delivery = Delivery(writer, None, stats=stats)
    paths = [f"/order/{n}" for n in range(40)]
    for path in paths:
        delivery.submit({"api_request_logs": request_rows(1, path)})
    assert delivery.flush(timeout_s=30)
    assert writer.paths == paths
    with psycopg.connect(db_url) as conn:
        stored = [r[0] for r in conn.execute("SELECT endpoint FROM api_request_logs ORDER BY id").fetchall()]
    assert stored == paths
    delivery.shutdown()


def test_a_full_handoff_makes_submit_wait_and_drops_nothing(db_url: str, stats: ExportStats) -> None:
    writer = RecordingWriter(db_url, stats)
    writer.release.clear()  # a database that does not answer
    delivery = Delivery(writer, None, stats=stats, handoff_batches=2)
    submitted: list[int] = []

    def exporter_thread() -> None:
        for n in range(5):
            delivery.submit({"api_request_logs": request_rows(1, f"/bp/{n}")})
            submitted.append(n)

    thread = threading.Thread(target=exporter_thread, daemon=True)
    thread.start()
    assert writer.writing.wait(10)
    time.sleep(0.3)
    # One batch in the writer, one waiting; the third submit waits for room.
    assert submitted == [0, 1] and thread.is_alive()
    assert len(delivery.handoff) == 1
    writer.release.set()
    thread.join(30)
    assert delivery.flush(timeout_s=30)
    assert count(db_url) == 5 and stats.total("dropped") == 0
    delivery.shutdown()


def test_flush_gives_up_after_its_timeout(db_url: str, stats: ExportStats) -> None:
    writer = RecordingWriter(db_url, stats)
    writer.release.clear()
    delivery = Delivery(writer, None, stats=stats)
    delivery.submit({"api_request_logs": request_rows(1)})
    started = time.monotonic()
    assert delivery.flush(timeout_s=0.3) is False
    assert time.monotonic() - started < 2
    writer.release.set()
    assert delivery.flush(timeout_s=30) is True
    delivery.shutdown()


def test_a_batch_submitted_during_an_outage_is_spooled_then_replayed(
    db_url: str, tmp_path: Path, stats: ExportStats, deliveries: Callable[..., Delivery]
) -> None:
    spool_dir = tmp_path / "spool"
    down = deliveries(refused_url(), Spool(spool_dir), stats)
    assert down.submit({"api_request_logs": request_rows(3)}) is True
    assert down.flush(timeout_s=30)
    assert stats.get("spooled", "api_request_logs") == 3 and count(db_url) == 0
    down.shutdown(timeout_s=1)
    assert len(Spool(spool_dir).pending()) == 1

    deliveries(db_url, Spool(spool_dir), stats)  # the next start, database back
    # Counted once the batch is done with, just after its rows are visible: wait for the count.
    wait_until(lambda: stats.get("replayed", "api_request_logs") == 3)
    assert count(db_url) == 3 and not Spool(spool_dir).pending()


def test_the_writer_thread_survives_unexpected_errors(
    db_url: str, tmp_path: Path, stats: ExportStats, deliveries: Callable[..., Delivery]
) -> None:
    class BrokenSpool(Spool):
        def put(self, rows: Any) -> bool:
            raise OSError("disk on fire")

    # A writer bug: the batch is spooled as today and replayed once the writer works again.
    writer = RecordingWriter(db_url, stats, fail_first=1)
    spool = Spool(tmp_path / "spool")
    delivery = Delivery(writer, spool, stats=stats, min_backoff_s=0.02, max_backoff_s=0.1)
    delivery.submit({"api_request_logs": request_rows(2)})
    delivery.submit({"api_request_logs": request_rows(3)})
    assert delivery.flush(timeout_s=30)
    wait_until(lambda: count(db_url) == 5 and not spool.pending())
    assert stats.get("export_failures", "api_request_logs") == 1
    delivery.shutdown()

    # The spool failing too: nowhere to keep the batch, so it is counted dropped; the thread goes on.
    writer = RecordingWriter(db_url, stats, fail_first=1)
    delivery = Delivery(writer, BrokenSpool(tmp_path / "broken"), stats=stats)
    delivery.submit({"api_request_logs": request_rows(4)})
    delivery.submit({"api_request_logs": request_rows(1, "/after")})
    assert delivery.flush(timeout_s=30)
    assert stats.get("dropped", "api_request_logs", "delivery_error") == 4
    assert writer.paths == ["/after"] and count(db_url) == 6
    assert delivery.handoff.thread is not None and delivery.handoff.thread.is_alive()
    delivery.shutdown()


def test_shutdown_drains_the_handoff_first(db_url: str, stats: ExportStats) -> None:
    writer = RecordingWriter(db_url, stats)
    delivery = Delivery(writer, None, stats=stats, handoff_batches=3)
    writer.release.clear()
    for n in range(3):
        delivery.submit({"api_request_logs": request_rows(2, f"/drain/{n}")})
    threading.Timer(0.3, writer.release.set).start()
    delivery.shutdown(timeout_s=30)
    assert count(db_url) == 6
    assert delivery.handoff.thread is None or not delivery.handoff.thread.is_alive()
    # After shutdown there is no writer thread: a late batch is written on the caller's thread.
    assert delivery.submit({"api_request_logs": request_rows(1, "/late")}) is True
    assert count(db_url) == 7
    delivery.writer.close()


def test_the_writer_thread_is_a_daemon_outside_instrumentation(db_url: str, stats: ExportStats) -> None:
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value

    seen: list[object] = []

    class Watching(RowWriter):
        def write(self, rows: Any, **options: Any) -> int:
            seen.append(get_value(_SUPPRESS_INSTRUMENTATION_KEY))
            return super().write(rows, **options)

    delivery = Delivery(Watching(db_url, stats=stats), None, stats=stats)
    delivery.submit({"api_request_logs": request_rows(1)})
    assert delivery.flush(timeout_s=30)
    assert delivery.handoff.thread is not None and delivery.handoff.thread.daemon
    assert seen == [True]  # a host's psycopg instrumentation must not trace our own writes
    delivery.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_writer_thread_and_connection(db_url: str, stats: ExportStats) -> None:
    delivery = Delivery(RowWriter(db_url, stats=stats), None, stats=stats)
    delivery.submit({"api_request_logs": request_rows(1, "/parent")})
    assert delivery.flush(timeout_s=30)  # the parent's writer thread runs
    later = request_rows(1, "/parent-again")  # made before the fork: ids the child does not reuse
    # As if a parent thread were mid-write at fork time: the child must not wait for that lock.
    delivery.writer._lock.acquire()
    pid = os.fork()
    if pid == 0:  # the child (gunicorn --preload forks workers like this)
        code = 1
        try:
            # The inherited connection is left to the parent: the child connects afresh.
            delivery.submit({"api_request_logs": request_rows(2, "/child")})
            code = 0 if delivery.flush(timeout_s=20) else 2
        finally:
            os._exit(code)
    delivery.writer._lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert count(db_url) == 3
    # The parent's own connection survived the child (a shared socket closed by it would not).
    delivery.submit({"api_request_logs": later})
    assert delivery.flush(timeout_s=30)
    assert count(db_url) == 4
    delivery.shutdown()


def test_when_no_thread_can_be_started_the_caller_writes(
    db_url: str, stats: ExportStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    class NoThreads(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't create new thread at interpreter shutdown")

    writer = RecordingWriter(db_url, stats)
    delivery = Delivery(writer, None, stats=stats)
    monkeypatch.setattr(threading, "Thread", NoThreads)  # as at interpreter exit
    for n in range(3):
        assert delivery.submit({"api_request_logs": request_rows(1, f"/exit/{n}")}) is True
    assert writer.paths == ["/exit/0", "/exit/1", "/exit/2"] and count(db_url) == 3
    assert delivery.flush(timeout_s=1) is True
    monkeypatch.undo()
    delivery.shutdown()


# --- batches handed over unmapped ---------------------------------------------------------------


def test_an_unmapped_batch_is_mapped_on_the_writer_thread_during_the_previous_write(
    db_url: str, stats: ExportStats
) -> None:
    """The writer maps the next waiting batch while PostgreSQL parses the last COPY of the one
    it writes: one thread keeps both busy, no second thread fights it for the GIL."""
    events: list[str] = []

    class Observed(RowWriter):
        def write(self, rows: Any, **options: Any) -> int:
            events.append(f"write {rows['api_request_logs'][0]['endpoint']}")
            written = super().write(rows, **options)
            events.append(f"written {rows['api_request_logs'][0]['endpoint']}")
            return written

    def mapping(path: str) -> Callable[[], dict[str, list[Any]]]:
        def map_rows() -> dict[str, list[Any]]:
            events.append(f"map {path} on {threading.current_thread().name}")
            return {"api_request_logs": request_rows(3, path)}

        return map_rows

    writer = Observed(db_url, stats=stats)
    writer.connect()
    delivery = Delivery(writer, None, stats=stats, handoff_batches=3)
    with delivery.handoff._changed:  # all three in hand before the writer takes the first
        delivery.submit({"api_request_logs": request_rows(1, "/first")})
        assert delivery.submit_unmapped(mapping("/a"), 3) and delivery.submit_unmapped(mapping("/b"), 3)
    assert delivery.flush(timeout_s=30)
    delivery.shutdown()
    writer_thread = "homepot-analytics-writer"
    assert f"map /a on {writer_thread}" in events and f"map /b on {writer_thread}" in events
    # /b is mapped once, inside the write of /a (before that write returned), never again.
    assert events.index(f"map /b on {writer_thread}") < events.index("written /a")
    assert events.index("write /a") < events.index(f"map /b on {writer_thread}")
    assert sum(event.startswith("map /b") for event in events) == 1
    assert count(db_url) == 7


def test_an_unmapped_batch_after_shutdown_is_mapped_and_written_by_the_caller(
    db_url: str, stats: ExportStats
) -> None:
    delivery = Delivery(RowWriter(db_url, stats=stats), None, stats=stats)
    delivery.shutdown()
    assert delivery.submit_unmapped(lambda: {"api_request_logs": request_rows(2, "/late")}, 2) is True
    assert count(db_url) == 2


def test_a_batch_whose_mapping_raises_is_counted_and_the_next_one_written(
    db_url: str, stats: ExportStats, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, list[Any]]:
        raise MemoryError("no room to map")

    delivery = Delivery(RowWriter(db_url, stats=stats), None, stats=stats)
    assert delivery.submit_unmapped(broken, 5)
    assert delivery.submit_unmapped(lambda: {"api_request_logs": request_rows(2, "/next")}, 2)
    assert delivery.flush(timeout_s=30)
    delivery.shutdown()
    assert stats.get("rejected", "unmapped") == 5
    assert "could not map a batch of 5 records" in caplog.text
    assert count(db_url) == 2
