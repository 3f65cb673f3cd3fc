"""OpenTelemetry log record exporter: device states, recorded errors and user activity."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from exporter.delivery import Delivery
from exporter.mapping import log_record_to_rows
from exporter.privacy import PASS_THROUGH, Privacy
from exporter.rows import RowBatch

# propagate=False: a failure logged here must not reach an OTel logging handler and be exported.
logger = logging.getLogger(__name__)
logger.propagate = False


class PostgresLogExporter(LogRecordExporter):
    """Maps each log record (pure code) and hands the batch to a shared ``Delivery``."""

    def __init__(self, delivery: Delivery, privacy: Privacy = PASS_THROUGH) -> None:
        self._delivery = delivery
        self._privacy = privacy
        self._shut_down = False

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if self._shut_down:
            logger.warning("export called after shutdown; %d log records ignored", len(batch))
            return LogRecordExportResult.FAILURE
        rows = RowBatch(self._delivery.stats)
        for record in batch:
            rows.add_from(log_record_to_rows, record, self._privacy)
        # Handed to the delivery's writer thread: the next batch is mapped while this one is written.
        ok = self._delivery.submit(rows.rows)
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Wait (at most ``timeout_millis``) for what this exporter submitted; the shared
        ``Delivery`` keeps running (its owner shuts it down)."""
        if self._shut_down:
            logger.warning("shutdown called twice")
            return
        self._shut_down = True
        self._delivery.flush(timeout_millis / 1000)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """True once every batch exported so far is stored, spooled or counted dropped."""
        return self._delivery.flush(timeout_millis / 1000)
