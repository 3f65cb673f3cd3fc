"""Gets mapped rows into the tables, whatever the database is doing.

The OpenTelemetry SDK drops a batch whose export fails and never retries, so the exporters
hand every batch to a ``Delivery``: it writes the batch now, or, when the database is away,
keeps it in the on-disk spool and replays it with exponential backoff once the database
returns. Replays are idempotent (the writer skips rows already stored), so a batch written
just before a connection broke is never stored twice.

Two ways in. ``deliver(rows)`` writes on the caller's thread and answers once the rows are
stored or spooled (the OTLP sink must not say 200 before). ``submit(rows)`` hands the batch to
the writer thread of ``exporter.handoff`` and returns; ``submit_unmapped(map_rows)`` hands over
a batch still to be mapped, which that thread maps while PostgreSQL takes the batch before it.
``flush`` waits for what was submitted; ``shutdown`` drains the hand-off before it stops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from exporter.containment import never_raise
from exporter.forking import repair_after_fork
from exporter.handoff import CAPACITY, Batch, Handoff, Unmapped, suppress_instrumentation
from exporter.own_logging import exporter_logger
from exporter.spool import Spool
from exporter.stats import STATS, DropReporter, ExportStats
from exporter.writer import UNAVAILABLE, RowWriter

logger = exporter_logger(__name__)

MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


def _non_empty(rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> Batch:
    return {table: list(table_rows) for table, table_rows in rows.items() if table_rows}


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
        handoff_batches: int = CAPACITY,
    ) -> None:
        self.writer = writer
        self.spool = spool
        self.stats = stats
        # Plain attributes: a test (or an operator's hook) may shorten them on a live instance.
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.drops = DropReporter(logger)
        self.handoff = Handoff(self._deliver_handed_over, self._count_lost, handoff_batches)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._replayer: threading.Thread | None = None
        self._replay_lock = threading.Lock()
        self._outage_logged = False
        repair_after_fork(self, Delivery._reinit_after_fork)
        if spool is not None:
            spool.recover_claims()
            waiting = len(spool.pending())
            if waiting:
                logger.info("replaying %d spooled batches from %s", waiting, spool.directory)
                self._ensure_replayer()

    def _reinit_after_fork(self) -> None:
        """In a forked child only the forking thread exists: no writer, no replayer, and any
        lock may have been held by a thread of the parent."""
        self.handoff.reset()
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
        return self.handoff.submit(batch) or self.deliver(batch)

    def submit_unmapped(
        self, map_rows: Callable[[], Mapping[str, Sequence[Mapping[str, Any]]]], records: int
    ) -> bool:
        """``submit`` for a batch of ``records`` still to be mapped: ``map_rows()`` (which counts
        what it cannot map) runs on the writer thread, while PostgreSQL takes the batch before
        it. Should it raise all the same, its records are counted rejected, logged, not lost
        unsaid."""

        def mapped() -> Batch:
            rows = None
            with never_raise(
                "could not map a batch of %d records; counted as rejected", records, logger=logger
            ):
                rows = map_rows()
            if rows is None:
                self.stats.add("rejected", "unmapped", records)
                return {}
            return _non_empty(rows)

        item = Unmapped(mapped)
        return self.handoff.submit(item) or self.deliver(item.rows())

    def _deliver_handed_over(self, batch: Batch, meanwhile: Callable[[], None]) -> bool:
        return self.deliver(batch, meanwhile=meanwhile)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every batch submitted so far is written, spooled or counted dropped;
        False when ``timeout_s`` passed first."""
        return self.handoff.flush(timeout_s)

    def _count_lost(self, batch: Batch) -> None:
        with never_raise("could not count a lost batch", logger=logger):  # the writer thread goes on
            counts = {table: len(table_rows) for table, table_rows in batch.items()}
            for table, count in counts.items():
                self.stats.add("dropped", table, count, reason="delivery_error")
            self.drops.report("delivery_error", counts)

    def deliver(
        self,
        rows: Mapping[str, Sequence[Mapping[str, Any]]],
        *,
        meanwhile: Callable[[], None] | None = None,
    ) -> bool:
        """True when the rows are written or safely spooled; False when they were dropped.
        Synchronous: returns once the rows are in the database or the spool. ``meanwhile`` is
        called while PostgreSQL takes the rows (``RowWriter.write``), at most once."""
        batch = _non_empty(rows)
        if not batch:
            return True
        if self.spool is not None and self.spool.has_pending():
            # An outage is under way: keep the order of arrival and leave probing to the replayer.
            return self._keep(batch, None)
        try:
            self.writer.write(batch, meanwhile=meanwhile)
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
        suppress_instrumentation()
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
        # The hand-off drains first: what it holds is written, or spooled for the replay below.
        if not self.handoff.close(timeout_s):
            logger.warning(
                "analytics writer still busy after %.1f s at shutdown: %d submitted batches not "
                "yet stored (the writer goes on while the process lives)",
                timeout_s,
                self.handoff.unfinished,
            )
        self._stopping.set()
        self._wake.set()
        replayer = self._replayer
        if replayer is not None:
            replayer.join(max(deadline - time.monotonic(), 0))
        if self.spool is not None and self.spool.has_pending():
            with never_raise("final replay failed", logger=logger):  # best effort at exit
                if not self.replay_once(deadline):
                    logger.warning(
                        "%d batches stay spooled in %s until the next start",
                        len(self.spool.pending()),
                        self.spool.directory,
                    )
        self.drops.flush()
        self.writer.close()
