"""Gets mapped rows into the tables, whatever the database is doing.

The OpenTelemetry SDK drops a batch whose export fails and never retries, so the exporters
hand every batch to a ``Delivery``: it writes the batch now, or, when the database is away,
keeps it in the on-disk spool and replays it with exponential backoff once the database
returns. Replays are idempotent (the writer skips rows already stored), so a batch written
just before a connection broke is never stored twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from exporter.spool import Spool
from exporter.stats import STATS, DropReporter, ExportStats, exporter_logger
from exporter.writer import UNAVAILABLE, RowWriter

logger = exporter_logger(__name__)

MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


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
    ) -> None:
        self.writer = writer
        self.spool = spool
        self.stats = stats
        # Plain attributes: a test (or an operator's hook) may shorten them on a live instance.
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.drops = DropReporter(logger)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._replayer: threading.Thread | None = None
        self._replay_lock = threading.Lock()
        self._outage_logged = False
        if spool is not None:
            spool.recover_claims()
            waiting = len(spool.pending())
            if waiting:
                logger.info("replaying %d spooled batches from %s", waiting, spool.directory)
                self._ensure_replayer()

    def deliver(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> bool:
        """True when the rows are written or safely spooled; False when they were dropped."""
        batch = {table: list(table_rows) for table, table_rows in rows.items() if table_rows}
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

    def _keep(self, batch: dict[str, list[Any]], error: BaseException | None) -> bool:
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
        """Try a last replay (for at most ``timeout_s``), then stop; what is still spooled
        waits for the next start."""
        deadline = time.monotonic() + timeout_s
        self._stopping.set()
        self._wake.set()
        replayer = self._replayer
        if replayer is not None:
            replayer.join(timeout_s)
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
