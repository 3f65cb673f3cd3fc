"""A batch of mapped rows grouped by table, built record by record.

A record the mapping cannot handle is counted as rejected and skipped: one bad record never
costs the rest of its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from exporter.containment import never_raise
from exporter.mapping import Row, TableRow
from exporter.own_logging import exporter_logger
from exporter.privacy import Privacy
from exporter.stats import ExportStats

logger = exporter_logger(__name__)
# One guard for every record: it keeps no state, and building one per record cost ~4 % of the
# mapping (the traceback it logs names the record's type).
_MAPPING_GUARD = never_raise("could not map a record; skipped", logger=logger)

Record = TypeVar("Record")


class RowBatch:
    def __init__(self, stats: ExportStats) -> None:
        self.rows: dict[str, list[Row]] = {}
        self._stats = stats

    def add_from(
        self, mapper: Callable[[Record, Privacy], list[TableRow]], record: Record, privacy: Privacy
    ) -> bool:
        """Map one record into the batch; False (counted as rejected) when it cannot be mapped."""
        mapped = None
        with _MAPPING_GUARD:
            mapped = mapper(record, privacy)
        if mapped is None:
            self._stats.add("rejected", "unmapped")
            return False
        for table, row in mapped:
            self.rows.setdefault(table, []).append(row)
        return True
