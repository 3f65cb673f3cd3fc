"""Gets mapped rows into the tables, whatever the database is doing.

The OpenTelemetry SDK drops a batch whose export fails and never retries, so the exporters
hand every batch to a ``Delivery``: it writes the batch now, or, when the database is away,
keeps it in the on-disk spool and replays it with exponential backoff once the database
returns. Replays are idempotent (the writer skips rows already stored), so a batch written
just before a connection broke is never stored twice.

Two ways in. ``deliver(rows)`` writes on the caller's thread and answers once the rows are
stored or spooled (the OTLP sink must not say 200 before). ``submit(rows)`` hands the batch to
one writer thread and returns, so the exporters map the next batch while PostgreSQL takes this
one (the write waits on the database with the GIL released): mapping and writing overlap
instead of taking turns. The hand-off holds at most ``handoff_batches`` batches (the one being
written included); a full hand-off makes ``submit`` wait, so memory stays bounded and the SDK's
queue in front of the exporter gives the back-pressure, counted as it always was.
``flush`` waits for what was submitted; ``shutdown`` drains the hand-off before it stops.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, set_value

from exporter.forking import repair_after_fork
from exporter.own_logging import exporter_logger
from exporter.spool import Spool
from exporter.stats import STATS, DropReporter, ExportStats
from exporter.writer import UNAVAILABLE, RowWriter

logger = exporter_logger(__name__)

MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
# One batch being written and one waiting: the exporter maps the next while both are in hand.
HANDOFF_BATCHES = 2
# A waiting submit or flush looks this often whether the writer thread is still there.
_WRITER_CHECK_S = 1.0

Batch = dict[str, list[Any]]


def _non_empty(rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> Batch:
    return {table: list(table_rows) for table, table_rows in rows.items() if table_rows}


def _suppress_instrumentation() -> None:
    """For the rest of this thread: a host that instruments psycopg must not trace our own
    writes (each write would become a span, exported and written, and so on). The SDK does
    the same around ``export``; on our threads it is up to us."""
    attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))


class Delivery:
    """Write now, else spool and replay; counts every row's fate in ``stats``."""

    def __init__(
        self,
        writer: RowWriter,
        spool: Spool | None = None,
        *,
        stats: ExportStats = STATS,
        min_backoff_s: float = MIN_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        handoff_batches: int = HANDOFF_BATCHES,
    ) -> None:
        self.writer = writer
        self.spool = spool
        self.stats = stats
        # Plain attributes: a test (or an operator's hook) may shorten them on a live instance.
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.handoff_batches = max(1, handoff_batches)
        self.drops = DropReporter(logger)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._replayer: threading.Thread | None = None
        self._replay_lock = threading.Lock()
        self._outage_logged = False
        self._closed = False  # shut down: no writer thread any more, submit delivers itself
        self._reset_handoff()
        repair_after_fork(self, Delivery._reinit_after_fork)
        if spool is not None:
            spool.recover_claims()
            waiting = len(spool.pending())
            if waiting:
                logger.info("replaying %d spooled batches from %s", waiting, spool.directory)
                self._ensure_replayer()

    def _reset_handoff(self) -> None:
        self._handoff: collections.deque[Batch] = collections.deque()
        # Guards the hand-off and its counters; notified whenever a batch arrives or is done.
        self._handoff_changed = threading.Condition()
        self._submitted = 0  # batches handed to the writer thread
        self._finished = 0  # of those, written, spooled or counted dropped
        self._writer_thread: threading.Thread | None = None

    def _reinit_after_fork(self) -> None:
        """In a forked child only the forking thread exists: no writer, no replayer, and any
        lock may have been held by a thread of the parent. Batches the parent had in hand
        are the parent's to write; the child starts with an empty hand-off."""
        self._reset_handoff()
        forget = getattr(self.writer, "forget_after_fork", None)
        if forget is not None:
            forget()
        self._replay_lock = threading.Lock()
        self._replayer = None
        self._wake = threading.Event()
        stopping, self._stopping = self._stopping, threading.Event()
        if stopping.is_set():
            self._stopping.set()

    def submit(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> bool:
        """Hand a batch to the writer thread, which does what ``deliver`` does (every row's fate
        counted in ``stats``), and return; waits while the hand-off is full. Batches are written
        in the order they were submitted. After ``shutdown`` the batch is delivered here."""
        batch = _non_empty(rows)
        if not batch:
            return True
        with self._handoff_changed:
            closed = self._closed
            if not closed:
                while self._submitted - self._finished >= self.handoff_batches and self._writer_running():
                    self._handoff_changed.wait(_WRITER_CHECK_S)
                self._handoff.append(batch)
                self._submitted += 1
                self._handoff_changed.notify_all()
                if self._writer_running():
                    return True
        if closed:
            return self.deliver(batch)
        self._write_handoff_here()
        return True

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every batch submitted so far is written, spooled or counted dropped;
        False when ``timeout_s`` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._handoff_changed:
            if threading.current_thread() is self._writer_thread:
                return False  # it would wait for itself
            target = self._submitted
            while self._finished < target:
                if not self._writer_running():
                    break
                wait_s = _WRITER_CHECK_S
                if deadline is not None:
                    wait_s = min(wait_s, deadline - time.monotonic())
                    if wait_s <= 0:
                        return False
                self._handoff_changed.wait(wait_s)
            else:
                return True
        self._write_handoff_here()
        return True

    def _write_handoff_here(self) -> None:
        """No writer thread can be started (the interpreter is exiting): the caller writes."""
        while self._write_next(wait=False):
            pass

    def _writer_running(self) -> bool:
        """Whether a writer thread takes the hand-off; starts one at the first submit, and again
        should it be gone (the parent's thread does not exist in a forked child). Called with
        ``_handoff_changed`` held. False only when no thread can be started."""
        thread = self._writer_thread
        if thread is not None and thread.is_alive():
            return True
        # A daemon: a process that exits without shutting us down is not held up by it.
        thread = threading.Thread(target=self._write_submitted, name="homepot-analytics-writer", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown"
            self._writer_thread = None
            return False
        self._writer_thread = thread
        return True

    def _write_submitted(self) -> None:
        """The writer thread: delivers submitted batches in order until shut down and drained."""
        _suppress_instrumentation()
        while self._write_next(wait=True):
            pass

    def _write_next(self, wait: bool) -> bool:
        """Deliver the oldest submitted batch; False when there is none (and, with ``wait``,
        none will come: shut down). Never raises: the writer thread must not die of an error."""
        with self._handoff_changed:
            while not self._handoff:
                if not wait or self._closed:
                    return False
                self._handoff_changed.wait()
            batch = self._handoff.popleft()
        try:
            self.deliver(batch)
        except Exception:  # deliver keeps what the writer refuses: this is the spool failing
            self._count_lost(batch)
        finally:
            with self._handoff_changed:
                self._finished += 1
                self._handoff_changed.notify_all()
        return True

    def _count_lost(self, batch: Batch) -> None:
        try:
            logger.exception("unexpected error delivering analytics rows; batch dropped")
            counts = {table: len(table_rows) for table, table_rows in batch.items()}
            for table, count in counts.items():
                self.stats.add("dropped", table, count, reason="delivery_error")
            self.drops.report("delivery_error", counts)
        except Exception:  # pragma: no cover - the writer thread goes on whatever happens
            pass

    def deliver(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> bool:
        """True when the rows are written or safely spooled; False when they were dropped.
        Synchronous: returns once the rows are in the database or the spool."""
        batch = _non_empty(rows)
        if not batch:
            return True
        if self.spool is not None and self.spool.has_pending():
            # An outage is under way: keep the order of arrival and leave probing to the replayer.
            return self._keep(batch, None)
        try:
            self.writer.write(batch)
        except UNAVAILABLE as error:
            return self._keep(batch, error)
        except Exception as error:  # never raise into the SDK's worker thread
            logger.exception("unexpected error writing analytics rows")
            return self._keep(batch, error)
        if self._outage_logged:
            self._outage_logged = False
            logger.info("analytics database reachable again")
        return True

    def _keep(self, batch: Batch, error: BaseException | None) -> bool:
        if error is not None:
            for table in batch:
                self.stats.add("export_failures", table)
        if self.spool is not None and self.spool.put(batch):
            for table, table_rows in batch.items():
                self.stats.add("spooled", table, len(table_rows))
            if error is not None and not self._outage_logged:
                self._outage_logged = True
                logger.warning(
                    "analytics database unavailable (%s); spooling to %s for replay",
                    str(error).strip(),
                    self.spool.directory,
                )
            self._ensure_replayer()
            return True
        reason = "spool_full" if self.spool is not None else "no_spool"
        counts = {table: len(table_rows) for table, table_rows in batch.items()}
        for table, count in counts.items():
            self.stats.add("dropped", table, count, reason=reason)
        self.drops.report(reason, counts)
        if self.spool is not None:
            self._ensure_replayer()  # a full spool needs draining all the more
        return False

    def _ensure_replayer(self) -> None:
        if self.spool is None or self._stopping.is_set():
            return
        with self._replay_lock:
            if self._replayer is None:
                self._replayer = threading.Thread(
                    target=self._replay_loop, name="homepot-analytics-replay", daemon=True
                )
                self._replayer.start()
        self._wake.set()

    def replay_once(self, deadline: float | None = None) -> bool:
        """Write spooled batches oldest first; False when the database is still away.

        A batch the writer fails on for any reason but unavailability would fail the same way
        forever and block every batch behind it: it is set aside on disk and counted rejected.
        """
        assert self.spool is not None
        for claimed, batch in self.spool.claim():
            try:
                self.writer.write(batch)
            except UNAVAILABLE as error:
                self.spool.release(claimed)
                for table in batch:
                    self.stats.add("export_failures", table)
                logger.debug("replay deferred: %s", error)
                return False
            except Exception:
                kept = self.spool.set_aside(claimed, "failed")
                for table, table_rows in batch.items():
                    self.stats.add("rejected", table, len(table_rows))
                logger.exception("spooled batch cannot be written; kept as %s", kept)
                continue
            self.spool.done(claimed)
            for table, table_rows in batch.items():
                self.stats.add("replayed", table, len(table_rows))
            if deadline is not None and time.monotonic() > deadline:
                return False
        return True

    def _replay_loop(self) -> None:
        assert self.spool is not None
        _suppress_instrumentation()
        backoff = self.min_backoff_s
        while not self._stopping.is_set():
            self._wake.wait(backoff)
            self._wake.clear()
            if self._stopping.is_set():
                break
            if self.replay_once():
                backoff = self.min_backoff_s
                with self._replay_lock:
                    # Decided under the lock: a batch spooled after this check starts a new replayer.
                    if not self.spool.has_pending():
                        logger.info("spool drained: every kept batch is in the database")
                        self._replayer = None
                        return
            else:
                backoff = min(max(backoff, self.min_backoff_s) * 2, self.max_backoff_s)
        with self._replay_lock:
            self._replayer = None

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Write what was submitted, try a last replay (for at most ``timeout_s`` in all), then
        stop; what is still spooled waits for the next start."""
        deadline = time.monotonic() + timeout_s
        with self._handoff_changed:
            self._closed = True
            self._handoff_changed.notify_all()
            writer_thread = self._writer_thread
        if writer_thread is not None:
            # The hand-off drains first: what it holds is written, or spooled for the replay below.
            writer_thread.join(max(deadline - time.monotonic(), 0))
            if writer_thread.is_alive():
                logger.warning(
                    "analytics writer still busy after %.1f s at shutdown: %d submitted batches not "
                    "yet stored (the writer goes on while the process lives)",
                    timeout_s,
                    self._submitted - self._finished,
                )
        self._stopping.set()
        self._wake.set()
        replayer = self._replayer
        if replayer is not None:
            replayer.join(max(deadline - time.monotonic(), 0))
        if self.spool is not None and self.spool.has_pending():
            try:
                if not self.replay_once(deadline):
                    logger.warning(
                        "%d batches stay spooled in %s until the next start",
                        len(self.spool.pending()),
                        self.spool.directory,
                    )
            except Exception:  # pragma: no cover - best effort at exit
                logger.exception("final replay failed")
        self.drops.flush()
        self.writer.close()
