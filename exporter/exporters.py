"""The OpenTelemetry exporters that store spans and log records as rows of the analytics tables.

Both are thin: hand each batch of records, with how to map them (``exporter.mapping``, pure
code, into a ``RowBatch``), to a shared ``Delivery``, whose writer thread maps it. What differs
between them is only the SDK base class and the mapping function; everything else lives once, in
``_RowExporter``. ``export()`` returns FAILURE and logs, it never raises; a second
``shutdown()`` warns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from exporter.containment import never_raise
from exporter.delivery import Delivery
from exporter.mapping import Row, TableRow, log_record_to_rows, span_to_rows
from exporter.own_logging import exporter_logger
from exporter.privacy import Privacy, privacy_from_settings
from exporter.rows import RowBatch
from homepot_foundation.settings import get_settings

logger = exporter_logger(__name__)

Record = TypeVar("Record")


class _RowExporter(Generic[Record]):
    """Maps records and submits them to ``delivery`` under ``privacy`` (default: the policy of the
    process settings, so an exporter wired by hand never stores raw user ids or full IPs)."""

    _noun = "records"

    def __init__(
        self,
        delivery: Delivery,
        privacy: Privacy | None = None,
        *,
        to_rows: Callable[[Record, Privacy], list[TableRow]],
    ) -> None:
        self._delivery = delivery
        self._privacy = privacy if privacy is not None else privacy_from_settings(get_settings())
        self._to_rows = to_rows
        self._shut_down = False

    def _export(self, records: Sequence[Record]) -> bool:
        if self._shut_down:
            logger.warning("export called after shutdown; %d %s ignored", len(records), self._noun)
            return False
        submitted = False
        with never_raise("could not export %d %s", len(records), self._noun, logger=logger):
            held = list(records)  # the SDK's list, kept until the writer thread maps it

            def map_rows() -> dict[str, list[Row]]:
                batch = RowBatch(self._delivery.stats)
                for record in held:
                    batch.add_from(self._to_rows, record, self._privacy)  # counts what it cannot map
                return batch.rows

            # Mapped on the delivery's writer thread while PostgreSQL takes the batch before it
            # (exporter.handoff says why not here).
            submitted = self._delivery.submit_unmapped(map_rows, len(held))
        return submitted

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


class PostgresSpanExporter(_RowExporter[ReadableSpan], SpanExporter):
    """Spans: requests, job runs and the exceptions recorded on them."""

    _noun = "spans"

    def __init__(self, delivery: Delivery, privacy: Privacy | None = None) -> None:
        super().__init__(delivery, privacy, to_rows=span_to_rows)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS if self._export(spans) else SpanExportResult.FAILURE


class PostgresLogExporter(_RowExporter[ReadableLogRecord], LogRecordExporter):
    """Log records: device state changes, recorded errors, user activity."""

    _noun = "log records"

    def __init__(self, delivery: Delivery, privacy: Privacy | None = None) -> None:
        super().__init__(delivery, privacy, to_rows=log_record_to_rows)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return LogRecordExportResult.SUCCESS if self._export(batch) else LogRecordExportResult.FAILURE
