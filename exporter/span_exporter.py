"""OpenTelemetry span exporter that stores spans as rows of the analytics tables."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from exporter.delivery import Delivery
from exporter.mapping import span_to_rows
from exporter.privacy import PASS_THROUGH, Privacy
from exporter.rows import RowBatch

logger = logging.getLogger(__name__)
logger.propagate = False


class PostgresSpanExporter(SpanExporter):
    """Maps each span (pure code) and hands the batch to a shared ``Delivery``."""

    def __init__(self, delivery: Delivery, privacy: Privacy = PASS_THROUGH) -> None:
        self._delivery = delivery
        self._privacy = privacy
        self._shut_down = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut_down:
            logger.warning("export called after shutdown; %d spans ignored", len(spans))
            return SpanExportResult.FAILURE
        batch = RowBatch(self._delivery.stats)
        for span in spans:
            batch.add_from(span_to_rows, span, self._privacy)
        # Handed to the delivery's writer thread: the next batch is mapped while this one is written.
        ok = self._delivery.submit(batch.rows)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

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
