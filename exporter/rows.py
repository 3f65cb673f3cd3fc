"""A batch of mapped rows grouped by table, built record by record.

A record the mapping cannot handle is counted as rejected and skipped: one bad record never
costs the rest of its batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from exporter.mapping import Row, TableRow
from exporter.privacy import Privacy
from exporter.stats import ExportStats

logger = logging.getLogger(__name__)
logger.propagate = False

Record = TypeVar("Record")


class RowBatch:
    def __init__(self, stats: ExportStats) -> None:
        self.rows: dict[str, list[Row]] = {}
        self._stats = stats

    def add_from(
        self, mapper: Callable[[Record, Privacy], list[TableRow]], record: Record, privacy: Privacy
    ) -> None:
        try:
            mapped = mapper(record, privacy)
        except Exception:
            self._stats.add("rejected", "unmapped")
            logger.exception("could not map %s; skipped", type(record).__name__)
            return
        for table, row in mapped:
            self.rows.setdefault(table, []).append(row)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.rows.values())

    def extend(self, other: dict[str, list[Any]]) -> None:
        for table, rows in other.items():
            self.rows.setdefault(table, []).extend(rows)
