"""Counting batch processors: queue drops counted per table, exactly, and never silently."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from exporter import conventions as c
from exporter.delivery import Delivery
from exporter.exporters import PostgresLogExporter, PostgresSpanExporter
from exporter.mapping import log_record_to_rows, span_to_rows
from exporter.processor import CountingBatchLogRecordProcessor, CountingBatchSpanProcessor, queue_usage
from exporter.routing import log_tables, span_tables
from exporter.stats import ExportStats
from exporter.writer import RowWriter
from tests.conftest import fetch_rows
from tests.support.telemetry import (
    device_state_log,
    event_log,
    failing_request_span,
    job_span,
    request_span,
)


def _variants() -> list[ReadableSpan | ReadableLogRecord]:
    internal = request_span()
    internal._kind = SpanKind.INTERNAL  # an internal span with HTTP attributes yields no row
    return [
        request_span(),
        failing_request_span(),
        job_span(),
        internal,
        request_span(**{"http.method": None, "http.request.method": "POST"}),
        device_state_log(),
        event_log(c.USER_ACTIVITY_EVENT, **{c.ACTIVITY_TYPE: "click"}),
        event_log(c.ERROR_EVENT, **{c.ERROR_CATEGORY: "api"}),
        event_log("something.else"),
        event_log("something.else", **{c.EXCEPTION_TYPE: "ValueError"}),
    ]


@pytest.mark.parametrize("record", _variants())
def test_cheap_classification_agrees_with_the_mapping(record: ReadableSpan | ReadableLogRecord) -> None:
    if isinstance(record, ReadableSpan):
        assert sorted(span_tables(record)) == sorted(table for table, _ in span_to_rows(record))
    else:
        assert log_tables(record) == [table for table, _ in log_record_to_rows(record)]


class BlockedExporter(SpanExporter):
    """An exporter stuck on a slow database until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exported: Counter[str] = Counter()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        for span in spans:
            self.exported.update(span_tables(span))
        return SpanExportResult.SUCCESS


def test_every_span_is_exported_or_counted_dropped() -> None:
    stats = ExportStats()
    exporter = BlockedExporter()
    processor = CountingBatchSpanProcessor(
        exporter, stats=stats, max_queue_size=100, max_export_batch_size=10, schedule_delay_millis=5
    )
    spans = [request_span() if n % 3 else failing_request_span() for n in range(3000)]
    for span in spans:
        processor.on_end(span)
        assert processor.drop_counter.queue_length() <= 100
    exporter.release.set()
    processor.shutdown()
    emitted = Counter(table for span in spans for table in span_tables(span))
    for table in ("api_request_logs", "error_logs"):
        dropped = stats.get("dropped", table, "queue_full")
        assert dropped > 0
        assert exporter.exported[table] + dropped == emitted[table]


def test_drops_on_the_way_to_a_collector_are_counted_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    from instrumentation.otlp import otlp_processors

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # never reached
    spans, logs = otlp_processors()
    assert isinstance(spans, CountingBatchSpanProcessor)
    assert isinstance(logs, CountingBatchLogRecordProcessor)
    assert queue_usage()["otlp span"][1] >= spans.drop_counter.capacity > 0
    spans.shutdown()
    logs.shutdown()

    stats = ExportStats()
    exporter = BlockedExporter()
    processor = CountingBatchSpanProcessor(
        exporter, stats=stats, via="otlp", max_queue_size=10, max_export_batch_size=5
    )
    for _ in range(50):
        processor.on_end(request_span())
    exporter.release.set()
    processor.shutdown()
    processor.on_end(request_span())
    assert stats.get("dropped", "api_request_logs", "otlp_queue_full") > 0
    assert stats.get("dropped", "api_request_logs", "queue_full") == 0  # not the tables' queue
    assert stats.get("dropped", "api_request_logs", "otlp_after_shutdown") == 1


def test_spans_ended_after_shutdown_are_counted() -> None:
    stats = ExportStats()
    exporter = BlockedExporter()
    exporter.release.set()
    processor = CountingBatchSpanProcessor(
        exporter, stats=stats, max_queue_size=100, max_export_batch_size=10
    )
    processor.shutdown()
    processor.on_end(job_span())
    processor.on_end(request_span())
    assert stats.get("dropped", "job_outcomes", "after_shutdown") == 1
    assert stats.get("dropped", "api_request_logs", "after_shutdown") == 1


def test_force_flush_waits_for_the_exporters_writer_thread(db_url: str) -> None:
    """The SDK's flush hands the queue to ``export`` and returns; ours write on their own
    thread, so the processors' flush waits for that too (telemetry.force_flush, tests, demo)."""
    stats = ExportStats()

    class SlowWriter(RowWriter):
        def write(self, rows: Any, **options: Any) -> int:
            time.sleep(0.2)
            return super().write(rows, **options)

    delivery = Delivery(SlowWriter(db_url, stats=stats), None, stats=stats)
    spans = CountingBatchSpanProcessor(
        PostgresSpanExporter(delivery), stats=stats, max_export_batch_size=10, schedule_delay_millis=60_000
    )
    logs = CountingBatchLogRecordProcessor(
        PostgresLogExporter(delivery), stats=stats, max_export_batch_size=10, schedule_delay_millis=60_000
    )
    for _ in range(25):
        spans.on_end(request_span())
    logs.on_emit(device_state_log())  # type: ignore[arg-type]
    assert spans.force_flush(10_000) and logs.force_flush(10_000)
    assert len(fetch_rows(db_url, "api_request_logs")) == 25
    assert len(fetch_rows(db_url, "device_state_history")) == 1
    spans.shutdown()
    logs.shutdown()
    delivery.shutdown()
