"""Gets mapped rows into the tables, whatever the database is doing.

The OpenTelemetry SDK drops a batch whose export fails and never retries, so the exporters
hand every batch to a ``Delivery``: it writes the batch now, or, when the database is away,
keeps it in the on-disk spool and replays it with backoff once the database returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from exporter.spool import Spool
from exporter.stats import STATS, ExportStats
from exporter.writer import UNAVAILABLE, RowWriter

# Our own messages must not feed an OTel logging handler that would export them again.
logger = logging.getLogger(__name__)
logger.propagate = False
if not logger.handlers:
    logger.addHandler(logging.StreamHandler())
    logger.setLevel(logging.INFO)

MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


class Delivery:
    """Write now, else spool and replay; counts every row's fate in ``stats``."""

    def __init__(self, writer: RowWriter, spool: Spool | None = None, *, stats: ExportStats = STATS) -> None:
        self.writer = writer
        self.spool = spool
        self.stats = stats
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._replayer: threading.Thread | None = None
        self._replay_lock = threading.Lock()
        if spool is not None:
            spool.recover_claims()
            if spool.pending():
                logger.info("replaying %d spooled batches from %s", len(spool.pending()), spool.directory)
                self._ensure_replayer()

    def deliver(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> bool:
        """True when the rows are written or safely spooled; False when they were dropped."""
        batch = {table: list(table_rows) for table, table_rows in rows.items() if table_rows}
        if not batch:
            return True
        if self.spool is not None and self.spool.pending():
            # An outage is under way: keep the order of arrival and leave probing to the replayer.
            return self._keep(batch, None)
        try:
            self.writer.write(batch)
            return True
        except UNAVAILABLE as error:
            return self._keep(batch, error)
        except Exception as error:  # never raise into the SDK's worker thread
            logger.exception("unexpected error writing analytics rows")
            return self._keep(batch, error)

    def _keep(self, batch: dict[str, list[Any]], error: BaseException | None) -> bool:
        if error is not None:
            for table in batch:
                self.stats.add("export_failures", table)
        if self.spool is not None and self.spool.put(batch):
            for table, table_rows in batch.items():
                self.stats.add("spooled", table, len(table_rows))
            if error is not None:
                logger.warning("analytics database unavailable (%s); batch spooled for replay", error)
            self._ensure_replayer()
            return True
        for table, table_rows in batch.items():
            self.stats.add("dropped", table, len(table_rows))
        logger.error(
            "dropped %d analytics rows (%s): %s",
            sum(len(r) for r in batch.values()),
            ", ".join(f"{t}={len(r)}" for t, r in batch.items()),
            "spool full" if self.spool is not None else f"no spool configured ({error})",
        )
        return False

    def _ensure_replayer(self) -> None:
        with self._replay_lock:
            if self._replayer is None or not self._replayer.is_alive():
                self._replayer = threading.Thread(
                    target=self._replay_loop, name="homepot-analytics-replay", daemon=True
                )
                self._replayer.start()
        self._wake.set()

    def replay_once(self) -> bool:
        """Write every spooled batch; False when the database is still away."""
        assert self.spool is not None
        for claimed, batch in self.spool.claim():
            try:
                self.writer.write(batch)
            except Exception as error:
                self.spool.release(claimed)
                logger.info("replay deferred: %s", error)
                return False
            self.spool.done(claimed)
            for table, table_rows in batch.items():
                self.stats.add("replayed", table, len(table_rows))
        return True

    def _replay_loop(self) -> None:
        backoff = MIN_BACKOFF_S
        while not self._stopping.is_set():
            self._wake.wait(backoff)
            self._wake.clear()
            if self._stopping.is_set():
                return
            if self.replay_once():
                if self.spool is None or not self.spool.pending():
                    logger.info("spool drained: every kept batch is in the database")
                    return
                backoff = MIN_BACKOFF_S
            else:
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Try a last replay, then stop; what is still spooled waits for the next start."""
        if self.spool is not None and self.spool.pending():
            try:
                self.replay_once()
            except Exception:  # pragma: no cover - best effort at exit
                logger.exception("final replay failed")
        self._stopping.set()
        self._wake.set()
        if self._replayer is not None:
            self._replayer.join(timeout_s)
        self.writer.close()
