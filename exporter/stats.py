"""Counters of what the exporter did with the rows it was given, per table.

Nothing is dropped silently: every row ends up counted as written, spooled, rejected or
dropped, and ``/metrics`` and the exporter's log lines read these counters.
"""

from __future__ import annotations

import threading
from collections import Counter

OUTCOMES = ("written", "spooled", "replayed", "rejected", "dropped", "export_failures")


class ExportStats:
    """Thread-safe counters keyed by (outcome, table)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, outcome: str, table: str, count: int = 1) -> None:
        if count:
            with self._lock:
                self._counts[(outcome, table)] += count

    def get(self, outcome: str, table: str) -> int:
        with self._lock:
            return self._counts[(outcome, table)]

    def total(self, outcome: str) -> int:
        with self._lock:
            return sum(n for (kind, _), n in self._counts.items() if kind == outcome)

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)


# One set of counters per process: the exporters and the OTLP sink all report here.
STATS = ExportStats()
