"""Counters of what the exporter did with the rows it was given, per table.

Nothing is dropped silently: every row ends up counted as written, spooled (then replayed),
rejected or dropped, and ``/metrics`` and the exporter's log lines read these counters. Drops
also say why (``queue_full``: telemetry came faster than the database took it; ``spool_full``:
an outage outlasted the spool; ``no_spool``; ``after_shutdown``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping

DROP_REASONS = (
    "queue_full",
    "spool_full",
    "no_spool",
    "after_shutdown",
    "delivery_error",
    # Records bound for a collector (HOMEPOT_ANALYTICS_EXPORT=otlp), dropped before they left.
    "otlp_queue_full",
    "otlp_after_shutdown",
)

# Not rows: export worker processes started again after one died (table "").
WORKER_RESTARTS = "worker_restarts"

Key = tuple[str, str, str]  # (outcome, table, reason); reason is "" except for drops


class ExportStats:
    """Thread-safe counters keyed by (outcome, table, reason)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[Key] = Counter()

    def add(self, outcome: str, table: str, count: int = 1, reason: str = "") -> None:
        if count:
            with self._lock:
                self._counts[(outcome, table, reason)] += count

    def get(self, outcome: str, table: str, reason: str | None = None) -> int:
        """One counter; every reason summed when ``reason`` is None."""
        with self._lock:
            return sum(
                n
                for (kind, name, why), n in self._counts.items()
                if kind == outcome and name == table and reason in (None, why)
            )

    def total(self, outcome: str) -> int:
        with self._lock:
            return sum(n for (kind, _, _), n in self._counts.items() if kind == outcome)

    def snapshot(self) -> dict[Key, int]:
        with self._lock:
            return dict(self._counts)


class DropReporter:
    """Says in the log what was dropped: at once for the first drop, then at most once per
    ``interval_s`` with the counts since the last line, so an overload never floods the log
    and never goes unreported."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._pending: Counter[tuple[str, str]] = Counter()
        self._last_line = float("-inf")

    def report(self, reason: str, counts: Mapping[str, int]) -> None:
        with self._lock:
            for table, count in counts.items():
                self._pending[(reason, table)] += count
            if time.monotonic() - self._last_line < self._interval_s:
                return
            lines = self._take()
        self._log(lines)

    def flush(self) -> None:
        """Log whatever is not reported yet (at shutdown)."""
        with self._lock:
            lines = self._take()
        self._log(lines)

    def _take(self) -> dict[str, dict[str, int]]:
        by_reason: dict[str, dict[str, int]] = {}
        for (reason, table), count in sorted(self._pending.items()):
            by_reason.setdefault(reason, {})[table] = count
        self._pending.clear()
        if by_reason:
            self._last_line = time.monotonic()
        return by_reason

    def _log(self, by_reason: dict[str, dict[str, int]]) -> None:
        for reason, tables in by_reason.items():
            self._logger.error(
                "dropped %d analytics rows (%s): %s; see homepot_analytics_rows_dropped_total",
                sum(tables.values()),
                reason,
                ", ".join(f"{table}={count}" for table, count in tables.items()),
            )


# One set of counters per process: the exporters and the OTLP sink all report here.
STATS = ExportStats()
