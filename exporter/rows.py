"""A batch of mapped rows grouped by table, built record by record.

A record the mapping cannot handle is counted as rejected and skipped: one bad record never
costs the rest of its batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

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
    ) -> bool:
        """Map one record into the batch; False (counted as rejected) when it cannot be mapped."""
        try:
            mapped = mapper(record, privacy)
        except Exception:
            self._stats.add("rejected", "unmapped")
            logger.exception("could not map %s; skipped", type(record).__name__)
            return False
        for table, row in mapped:
            self.rows.setdefault(table, []).append(row)
        return True
