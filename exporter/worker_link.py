"""The service's end of the export worker: finished records go out as bytes, acknowledged back.

An instrumented service pays for its telemetry in its own interpreter only up to the moment a
span or log record ends: ``exporter.compact`` turns it into bytes there and then, and this link
sends the bytes in frames down a pipe to a worker process (``exporter.worker``) that maps and
writes them. So neither the mapping nor the COPY takes the service's GIL, and no span object
waits in a queue for the garbage collector to walk (bench/README.md has the figures).

What the link keeps:
- At most ``export_queue_size`` records, buffered or sent and not yet acknowledged. A record
  that finds it full is not taken: the processor counts it dropped (``queue_full``) per table
  and says so in the log, as the SDK's full queue was counted.
- Every frame until the worker acknowledges it, i.e. until its rows are written, spooled or
  counted. A worker that dies (killed, out of memory) is started again and gets every frame it
  had not acknowledged; the rows' ``event_id`` keys make a frame written twice store once.
  Each restart is logged and counted (``worker_restarts``).
- The worker's counters: each acknowledgement carries what its frame's rows became, added to
  this process's ``STATS`` so ``/metrics`` and the logs of the service see them.

The worker starts with the first frame (a gunicorn ``--preload`` master that records nothing
never starts one) and stops when the link shuts down or the service's end of the pipe closes
(the service exited without shutting down: the worker still writes what it received). A forked
child forgets its parent's worker and starts its own.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from exporter.compact import Interned
from exporter.containment import never_raise
from exporter.forking import repair_after_fork
from exporter.own_logging import exporter_logger
from exporter.stats import STATS, WORKER_RESTARTS, ExportStats
from homepot_foundation.settings import Settings

logger = exporter_logger(__name__)

# A worker that dies sooner than this after its start is started again only after a pause,
# doubled each time up to MAX_RESTART_PAUSE_S, so a worker that cannot run does not spin.
_HEALTHY_AFTER_S = 5.0
_FIRST_RESTART_PAUSE_S = 0.5
MAX_RESTART_PAUSE_S = 30.0
# How long a lost worker is given to exit before it is killed.
_EXIT_WAIT_S = 2.0
# The directory that holds the ``exporter`` package: the worker imports it from there too.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass(frozen=True)
class WorkerStart:
    """What the worker needs to build the pipeline: the service's own settings object (so a
    ``Settings`` built in code means what it means here), its name, the database."""

    settings: Settings
    name: str
    database_url: str | None
    auto_migrate: bool | None


class _Worker:
    """One worker process and the two ends of its pipes held by the service."""

    def __init__(self, start: WorkerStart) -> None:
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        environment = dict(os.environ)
        paths = [_PACKAGE_ROOT, *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
        environment["PYTHONPATH"] = os.pathsep.join(paths)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "exporter.worker", str(to_worker_r), str(from_worker_w)],
                pass_fds=(to_worker_r, from_worker_w),
                stdin=subprocess.DEVNULL,
                env=environment,
            )
        finally:
            os.close(to_worker_r)
            os.close(from_worker_w)
        self.inbox = Connection(from_worker_r, writable=False)
        self.outbox = Connection(to_worker_w, readable=False)
        self.started = time.monotonic()
        self.sent_through = -1  # the last frame sequence number sent to this worker
        self.lost = False
        self.send(pickle.dumps(("hello", start), pickle.HIGHEST_PROTOCOL))

    def send(self, frame: bytes) -> None:
        self.outbox.send_bytes(frame)  # the write releases the GIL

    def close(self) -> None:
        for end in (self.outbox, self.inbox):
            with never_raise("could not close a pipe of the export worker", logger=logger):
                end.close()

    def end(self) -> str:
        """Make sure the process is gone (one that still runs with its pipe broken is killed:
        it must not go on writing beside the next), and say how it ended."""
        try:
            code = self.process.wait(_EXIT_WAIT_S)  # its pipe closes a moment before it is reaped
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return "was unresponsive and was killed"
        return f"exited with status {code}" if code >= 0 else f"was killed by signal {-code}"


# Links of a forked child's parent: their pipes and processes are the parent's; kept referenced
# so nothing of them is closed or waited for by the child.
_INHERITED: list[Any] = []


class WorkerLink:
    """Frames of encoded records to one worker process, kept until it acknowledges them."""

    def __init__(self, start: WorkerStart, *, stats: ExportStats = STATS) -> None:
        settings = start.settings
        self.start = start
        self.stats = stats
        self.capacity = settings.export_queue_size
        self.batch_size = min(settings.export_batch_size, self.capacity)
        self.delay_s = settings.export_delay_ms / 1000
        self.interned = Interned()
        self.restarts = 0
        self._reset()
        repair_after_fork(self, WorkerLink._reset_after_fork)

    def _reset(self) -> None:
        # Guards everything below; notified when records arrive, frames are acknowledged, a
        # worker is lost, or a flush or the shutdown asks for the buffer to go out.
        self._mutex = threading.RLock()
        self._changed = threading.Condition(self._mutex)
        self._spans: list[bytes] = []
        self._logs: list[bytes] = []
        self._unacked: dict[int, tuple[bytes, int]] = {}  # seq -> (frame, records), in seq order
        self._in_flight = 0  # records in unacknowledged frames
        self._accepted = 0  # records taken since the start
        self._finished = 0  # of those, acknowledged
        self._next_seq = 0
        self._flush_wanted = False
        self._start_wanted = False
        self._closing = False
        self._sender: threading.Thread | None = None
        # Set while the sender's loop runs (cleared as it returns or dies): checked on every put,
        # where Thread.is_alive() would take a lock of its own.
        self._sender_running = False
        self._worker: _Worker | None = None
        self._pause_s = 0.0
        self._restart_at = 0.0

    def _reset_after_fork(self) -> None:
        """In a forked child: the parent's worker, pipes and buffered records are the parent's."""
        _INHERITED.append((self._worker, self._spans, self._logs, self._unacked))
        self.interned = Interned()
        self._reset()

    # --- the service's side ----------------------------------------------------------------
    def put_span(self, data: bytes) -> bool:
        return self._put(data, is_span=True)

    def put_log_record(self, data: bytes) -> bool:
        return self._put(data, is_span=False)

    def _put(self, data: bytes, *, is_span: bool) -> bool:
        """Take one encoded record; False when the link is full or shut down (the caller counts
        the drop: it knows the record's tables)."""
        with self._mutex:  # the condition's own lock, without its Python-level __enter__
            if self._closing:
                return False
            buffered = len(self._spans) + len(self._logs)
            if buffered + self._in_flight >= self.capacity:
                return False
            # The list is looked up under the lock: the sender swaps in new ones as it takes them.
            (self._spans if is_span else self._logs).append(data)
            self._accepted += 1
            if buffered + 1 >= self.batch_size:
                self._changed.notify_all()
            self._ensure_sender()
        return True

    def start_worker(self) -> None:
        """Start the worker now rather than with the first record: a spool left by the last run
        is replayed at once (the worker's delivery does that as it starts)."""
        with self._changed:
            self._start_wanted = True
            self._changed.notify_all()
            self._ensure_sender()

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def queued(self) -> int:
        """Records buffered or sent and not yet acknowledged."""
        return len(self._spans) + len(self._logs) + self._in_flight

    def flush(self, timeout_s: float | None = None) -> bool:
        """Send what is buffered and wait until every record taken so far is acknowledged
        (written, spooled or counted by the worker); False when ``timeout_s`` passed first."""
        with self._changed:
            target = self._accepted
            if self._finished >= target:
                return True
            self._flush_wanted = True
            self._changed.notify_all()
            self._ensure_sender()
            return self._changed.wait_for(lambda: self._finished >= target, timeout_s)

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Flush, then stop the worker (it writes or spools what it holds); False when that did
        not finish within ``timeout_s`` (the worker goes on and exits when done)."""
        deadline = time.monotonic() + timeout_s
        flushed = self.flush(timeout_s)
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            sender, worker = self._sender, self._worker
        if sender is not None:
            sender.join(max(deadline - time.monotonic(), 0))
        if not flushed:
            with self._changed:
                waiting = self.queued
            logger.warning(
                "analytics export worker still busy after %.1f s at shutdown: %d records not yet "
                "acknowledged (the worker goes on while it lives)",
                timeout_s,
                waiting,
            )
        if worker is None or worker.lost:
            return flushed
        with never_raise("could not stop the export worker", logger=logger):
            worker.send(pickle.dumps(("stop",), pickle.HIGHEST_PROTOCOL))
        try:
            worker.process.wait(max(deadline - time.monotonic(), 0.5))
        except subprocess.TimeoutExpired:
            logger.warning("analytics export worker (pid %d) still stopping", worker.process.pid)
            return False
        return flushed

    # --- the sender thread ------------------------------------------------------------------
    def _ensure_sender(self) -> None:
        """Start the sender thread unless it runs (called with ``_changed`` held)."""
        if self._sender_running:
            return
        thread = threading.Thread(target=self._send_loop, name="homepot-analytics-sender", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutdown: nothing more can be sent
            return
        self._sender = thread
        self._sender_running = True

    def _send_loop(self) -> None:
        try:
            self._send_until_closed()
        finally:
            with self._changed:
                self._sender_running = False

    def _send_until_closed(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(self._something_to_do, self.delay_s)
                spans, logs = self._spans, self._logs
                self._spans, self._logs = [], []
                self._flush_wanted = False
                closing = self._closing
                seq = self._next_seq
                if spans or logs:
                    self._next_seq += 1
                    self._in_flight += len(spans) + len(logs)
            if spans or logs:
                # Pickled outside the lock: a list of bytes is one copy, whatever its length.
                frame = pickle.dumps(
                    ("records", seq, self.interned.descriptions(), spans, logs), pickle.HIGHEST_PROTOCOL
                )
                with self._changed:
                    self._unacked[seq] = (frame, len(spans) + len(logs))
            self._pump()
            if closing:
                with self._changed:
                    if not self._spans and not self._logs:
                        return

    def _something_to_do(self) -> bool:
        buffered = len(self._spans) + len(self._logs)
        return (
            buffered >= self.batch_size
            or self._flush_wanted
            or self._start_wanted
            or self._closing
            or (self._worker is not None and self._worker.lost and bool(self._unacked))
        )

    def _pump(self) -> None:
        """Send every unacknowledged frame the current worker has not had; a lost worker is
        replaced first (after its pause) and gets them all again."""
        with self._changed:
            frames = list(self._unacked.items())
            wanted, self._start_wanted = self._start_wanted, False
        if not frames and not wanted:
            return
        worker = self._current_worker()
        if worker is None:
            return
        for seq, (frame, _records) in frames:
            if seq <= worker.sent_through:
                continue
            try:
                worker.send(frame)
            except (OSError, EOFError, ValueError):
                self._lost(worker)
                return
            worker.sent_through = seq

    def _current_worker(self) -> _Worker | None:
        worker = self._worker
        if worker is not None and not worker.lost:
            return worker
        now = time.monotonic()
        if now < self._restart_at:
            return None
        if worker is not None:
            worker.close()
            ended = worker.end()
            with self._changed:
                frames, records = len(self._unacked), self._in_flight
            self.restarts += 1
            self.stats.add(WORKER_RESTARTS, "")
            logger.error(
                "analytics export worker (pid %d) %s; starting another and sending it the %d "
                "frames (%d records) it had not stored",
                worker.process.pid,
                ended,
                frames,
                records,
            )
            lived = now - worker.started
            self._pause_s = (
                0.0
                if lived > _HEALTHY_AFTER_S
                else min(max(self._pause_s * 2, _FIRST_RESTART_PAUSE_S), MAX_RESTART_PAUSE_S)
            )
            if self._pause_s:
                self._restart_at = now + self._pause_s
                self._worker = None
                return None
        try:
            worker = _Worker(self.start)
        except (OSError, ValueError) as error:
            self._pause_s = min(max(self._pause_s * 2, _FIRST_RESTART_PAUSE_S), MAX_RESTART_PAUSE_S)
            self._restart_at = now + self._pause_s
            logger.error(
                "could not start the analytics export worker (%s); retrying in %.1f s", error, self._pause_s
            )
            return None
        self._worker = worker
        reader = threading.Thread(
            target=self._read_loop, args=(worker,), name="homepot-analytics-acks", daemon=True
        )
        reader.start()
        return worker

    def _lost(self, worker: _Worker) -> None:
        with self._changed:
            worker.lost = True
            self._changed.notify_all()

    # --- the acknowledgement thread ---------------------------------------------------------
    def _read_loop(self, worker: _Worker) -> None:
        while True:
            try:
                message = pickle.loads(worker.inbox.recv_bytes())
            except (OSError, EOFError, pickle.UnpicklingError):
                break
            kind, *rest = message
            if kind == "ack":
                seq, counts = rest
                self._acknowledged(seq, counts)
            elif kind in ("counts", "stopped"):
                self._add_counts(rest[-1])
        if not self._closing:
            self._lost(worker)

    def _acknowledged(self, seq: int, counts: list[tuple[tuple[str, str, str], int]]) -> None:
        self._add_counts(counts)
        with self._changed:
            entry = self._unacked.pop(seq, None)
            if entry is not None:  # a frame sent again after a restart is counted once
                self._in_flight -= entry[1]
                self._finished += entry[1]
            self._changed.notify_all()

    def _add_counts(self, counts: list[tuple[tuple[str, str, str], int]]) -> None:
        for (outcome, table, reason), count in counts:
            self.stats.add(outcome, table, count, reason=reason)
