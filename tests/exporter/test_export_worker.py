"""The export worker process: records cross to it as bytes, every one is stored once, whatever
happens to the worker (killed mid-flight, stopped, the service gone, a forked child)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan

from exporter.linked_processors import LinkedLogRecordProcessor, LinkedSpanProcessor
from exporter.stats import ExportStats
from exporter.worker_link import WorkerLink, WorkerStart, _Worker
from homepot_foundation.settings import Settings
from tests.support.telemetry import device_state_log, request_span

REPO = Path(__file__).resolve().parents[2]


def _count(url: str, table: str = "api_request_logs") -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def _wait_for(predicate: object, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.fixture()
def stats() -> ExportStats:
    return ExportStats()


def _link(db_url: str, tmp_path: Path, stats: ExportStats, **settings: object) -> WorkerLink:
    options: dict[str, object] = {"database_url": db_url, "data_dir": tmp_path, "export_delay_ms": 50}
    options.update(settings)
    return WorkerLink(WorkerStart(Settings(**options), "worker-test", None, None), stats=stats)  # type: ignore[arg-type]


@pytest.fixture()
def link(db_url: str, tmp_path: Path, stats: ExportStats) -> Iterator[WorkerLink]:
    made = _link(db_url, tmp_path, stats)
    yield made
    made.shutdown(10)


def test_records_are_stored_by_the_worker_and_its_counts_come_back(
    db_url: str, link: WorkerLink, stats: ExportStats
) -> None:
    spans, logs = LinkedSpanProcessor(link), LinkedLogRecordProcessor(link)
    for _ in range(5):
        spans.on_end(request_span("/through-the-worker"))
    logs.on_emit(device_state_log())
    assert spans.force_flush(30_000)
    assert _count(db_url) == 5 and _count(db_url, "device_state_history") == 1
    # What the worker did is counted in this process, where /metrics and the logs read it.
    assert stats.get("written", "api_request_logs") == 5
    assert stats.get("written", "device_state_history") == 1
    worker = link._worker
    assert worker is not None and worker.process.pid != os.getpid()


def _running(link: WorkerLink, path: str) -> tuple[LinkedSpanProcessor, _Worker]:
    """A span processor on ``link`` whose worker has stored one request (at ``path``)."""
    spans = LinkedSpanProcessor(link)
    spans.on_end(request_span(path))
    assert spans.force_flush(30_000)
    worker = link._worker
    assert worker is not None
    return spans, worker


def test_a_killed_worker_is_restarted_and_gets_what_it_had_not_stored(
    db_url: str, link: WorkerLink, stats: ExportStats, capsys: pytest.CaptureFixture[str]
) -> None:
    spans, first = _running(link, "/before")
    # Stopped, it takes frames into its pipe but stores none: then killed with them in hand.
    os.kill(first.process.pid, signal.SIGSTOP)
    for _ in range(20):
        spans.on_end(request_span("/in-flight"))
    assert _wait_for(lambda: link._unacked)  # sent, not acknowledged
    os.kill(first.process.pid, signal.SIGKILL)
    assert spans.force_flush(30_000)
    assert link._worker is not first and link.restarts == 1
    assert stats.get("worker_restarts", "") == 1
    assert (
        f"analytics export worker (pid {first.process.pid}) was killed by signal 9" in capsys.readouterr().err
    )
    assert _count(db_url) == 21  # every record once: none lost, none twice
    for _ in range(3):
        spans.on_end(request_span("/after"))
    assert spans.force_flush(30_000)
    assert _count(db_url) == 24


def test_a_frame_stored_before_the_worker_died_is_not_stored_twice(
    db_url: str, link: WorkerLink, stats: ExportStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[bytes] = []
    original_send = _Worker.send

    def recording_send(worker: _Worker, frame: bytes) -> None:
        sent.append(frame)
        original_send(worker, frame)

    monkeypatch.setattr(_Worker, "send", recording_send)
    spans = LinkedSpanProcessor(link)
    for _ in range(10):
        spans.on_end(request_span("/stored-then-killed"))
    assert spans.force_flush(30_000) and _count(db_url) == 10
    (frame,) = [data for data in sent if pickle.loads(data)[0] == "records"]
    # The state of a worker that stored this frame and died before acknowledging it.
    with link._changed:
        link._unacked[0] = (frame, 10)
        link._in_flight += 10
        link._accepted += 10
    worker = link._worker
    assert worker is not None
    os.kill(worker.process.pid, signal.SIGKILL)
    assert spans.force_flush(30_000)  # sent again to the next worker, and acknowledged
    assert _count(db_url) == 10  # the rows' event_id keys: stored once


def test_a_full_link_counts_what_it_refuses_and_keeps_what_it_took(
    db_url: str, tmp_path: Path, stats: ExportStats
) -> None:
    link = _link(db_url, tmp_path, stats, export_queue_size=512, export_batch_size=100)
    spans, worker = _running(link, "/warm")
    os.kill(worker.process.pid, signal.SIGSTOP)  # the worker stops taking anything
    try:
        for _ in range(600):
            spans.on_end(request_span("/flood"))
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
    dropped = stats.get("dropped", "api_request_logs", "queue_full")
    assert dropped >= 600 - 512 - 100  # at most 512 held (one frame may have gone out meanwhile)
    assert spans.force_flush(30_000)
    # What was taken is stored; the rest is counted, not lost silently.
    assert _count(db_url) - 1 + dropped == 600
    link.shutdown(10)


def test_after_shutdown_records_are_counted_and_the_worker_is_gone(
    db_url: str, tmp_path: Path, stats: ExportStats
) -> None:
    link = _link(db_url, tmp_path, stats)
    spans = LinkedSpanProcessor(link)
    spans.on_end(request_span("/last"))
    assert link.shutdown(10)
    worker = link._worker
    assert worker is not None and worker.process.poll() == 0
    assert _count(db_url) == 1
    spans.on_end(request_span("/too-late"))
    assert stats.get("dropped", "api_request_logs", "after_shutdown") == 1


def test_the_worker_stores_what_it_received_when_the_service_dies(db_url: str, tmp_path: Path) -> None:
    # The service hands records over, then dies without any shutdown (os._exit): the worker
    # sees its pipe close and still stores every record it was sent.
    script = textwrap.dedent(
        f"""
        import os, time
        from exporter.linked_processors import LinkedSpanProcessor
        from exporter.worker_link import WorkerLink, WorkerStart, _Worker
        from homepot_foundation.settings import Settings
        from tests.support.telemetry import request_span
        settings = Settings(database_url={db_url!r}, data_dir={str(tmp_path)!r}, export_delay_ms=20)
        link = WorkerLink(WorkerStart(settings, "dies", None, None))
        spans = LinkedSpanProcessor(link)
        for _ in range(50):
            spans.on_end(request_span("/orphaned"))
        deadline = time.monotonic() + 20
        def sent():
            return not link._spans and link._worker is not None and link._worker.sent_through >= 0
        while not sent() and time.monotonic() < deadline:
            time.sleep(0.01)
        print(link._worker.process.pid, flush=True)
        os._exit(0)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    worker_pid = int(done.stdout.split()[0])
    assert _wait_for(lambda: _count(db_url) == 50)
    assert _wait_for(lambda: not Path(f"/proc/{worker_pid}").exists() or _zombie(worker_pid))


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_its_own_worker(db_url: str, link: WorkerLink) -> None:
    spans, parent_worker = _running(link, "/parent")
    later = request_span("/parent-again")  # made before the fork: ids the child does not reuse
    pid = os.fork()
    if pid == 0:  # the child (gunicorn --preload forks workers like this)
        code = 1
        try:
            spans.on_end(request_span("/child"))
            ok = spans.force_flush(20_000)
            child_worker = link._worker
            code = 0 if ok and child_worker is not None and child_worker is not parent_worker else 2
            link.shutdown(10)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _count(db_url) == 2
    # The parent's worker is untouched by the child.
    assert parent_worker.process.poll() is None
    spans.on_end(later)
    assert spans.force_flush(30_000)
    assert _count(db_url) == 3 and link._worker is parent_worker


def test_sigterm_to_the_process_group_leaves_the_worker_to_the_service(db_url: str, link: WorkerLink) -> None:
    # A container stop or Ctrl-C reaches every process of the group: the worker stays for the
    # service's own shutdown, which still has records to send.
    spans, worker = _running(link, "/one")
    os.kill(worker.process.pid, signal.SIGTERM)
    os.kill(worker.process.pid, signal.SIGINT)
    time.sleep(0.3)
    assert worker.process.poll() is None
    spans.on_end(request_span("/two"))
    assert link.shutdown(10)
    assert _count(db_url) == 2


def test_records_put_while_the_sender_takes_its_buffer_are_all_stored(
    db_url: str, tmp_path: Path, stats: ExportStats
) -> None:
    # Frames of one record: the sender swaps its buffer as often as records arrive, from threads.
    link = _link(db_url, tmp_path, stats, export_batch_size=1)
    spans = LinkedSpanProcessor(link)
    batches = [[request_span(f"/thread-{n}") for _ in range(150)] for n in range(3)]

    def put(batch: list[ReadableSpan]) -> None:
        for span in batch:
            spans.on_end(span)

    threads = [threading.Thread(target=put, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert spans.force_flush(60_000)
    assert _count(db_url) == 450 and stats.total("dropped") == 0
    link.shutdown(10)
