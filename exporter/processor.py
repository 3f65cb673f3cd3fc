"""Batch processors that count what they drop, per table, instead of dropping silently.

The SDK's ``BatchSpanProcessor`` and ``BatchLogRecordProcessor`` keep a bounded queue (memory
stays bounded under overload) and, when it is full, drop the oldest record with only a
rate-limited warning. These subclasses keep the SDK's worker, batching, flush and fork handling
and change one thing: when the queue is full they take out the oldest record themselves, count
the rows it would have become as ``dropped`` (reason ``queue_full``) per table, and say so in
the log. Records ended after shutdown are counted too (``after_shutdown``).

``force_flush`` also waits for the exporter: ours hand their batches to the ``Delivery``'s
writer thread and return before the rows are stored, and the SDK's flush only empties the
queue into ``export``, it never calls the exporter's own ``force_flush``.
"""

from __future__ import annotations

import collections
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from exporter.containment import never_raise
from exporter.forking import repair_after_fork
from exporter.own_logging import exporter_logger
from exporter.routing import log_tables, span_tables
from exporter.stats import STATS, DropReporter, ExportStats

logger = exporter_logger(__name__)


class QueueView(Protocol):
    """What the export queue gauge of /metrics reads of a processor."""

    signal: str
    capacity: int

    def queue_length(self) -> int: ...


# Every counting or linked processor of this process, for the export queue gauge of /metrics.
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()


def register_queue(view: QueueView) -> None:
    """Show ``view``'s queue in the gauge while it lives (held weakly)."""
    _LIVE.add(view)


def count_dropped(
    records: Iterable[Any],
    tables_of: Callable[[Any], list[str]],
    stats: ExportStats,
    drops: DropReporter,
    reason: str,
) -> None:
    """Count the rows ``records`` would have become as dropped for ``reason``, per table, and
    say so in the log (every processor of ours, whatever it queues)."""
    counts: dict[str, int] = {}
    for record in records:
        for table in tables_of(record):
            counts[table] = counts.get(table, 0) + 1
    for table, count in counts.items():
        stats.add("dropped", table, count, reason=reason)
    if counts:
        drops.report(reason, counts)


class _DropCounter:
    """What both processors add to the SDK's: it wraps the ``emit`` of their shared engine (an SDK
    ``BatchProcessor``) to count drops per table, and makes a flush wait for the exporter.

    ``via`` names another destination than the tables (``"otlp"``): its drops are counted with
    reasons ``otlp_queue_full`` / ``otlp_after_shutdown`` and its queue as signal ``otlp span``."""

    def __init__(
        self,
        inner: Any,
        exporter: SpanExporter | LogRecordExporter,
        tables_of: Callable[[Any], list[str]],
        stats: ExportStats,
        signal: str,
        via: str,
    ) -> None:
        self.signal = f"{via} {signal}" if via else signal
        self._reason_prefix = f"{via}_" if via else ""
        self._exporter = exporter
        self._inner = inner
        self._tables_of = tables_of
        self._stats = stats
        self._drops = DropReporter(logger)
        self._lock = threading.Lock()
        queue = getattr(inner, "_queue", None)
        capacity = getattr(inner, "_max_queue_size", None)
        if not isinstance(queue, collections.deque) or not isinstance(capacity, int):
            # A future SDK changed its internals: keep its behaviour rather than break the host.
            logger.warning("unknown BatchProcessor internals: queue drops are not counted per table")
            self._queue: collections.deque[Any] = collections.deque()
            self.capacity = 0
            return
        self._queue, self.capacity = queue, capacity
        self._emit = inner.emit
        inner.emit = self.emit
        repair_after_fork(self, _DropCounter._new_lock)
        register_queue(self)

    def _new_lock(self) -> None:  # a lock held in the parent at fork time stays held
        self._lock = threading.Lock()

    def emit(self, item: Any) -> None:
        if getattr(self._inner, "_shutdown", False):
            self._count([item], self._reason_prefix + "after_shutdown")
            return
        dropped = None
        with self._lock:  # only emitters add to the queue: with them serialised, it never overflows
            if len(self._queue) >= self.capacity:
                try:
                    dropped = self._queue.pop()  # the oldest, as the SDK would drop it
                except IndexError:  # the worker emptied it meanwhile
                    dropped = None
            self._emit(item)
        if dropped is not None:
            self._count([dropped], self._reason_prefix + "queue_full")

    def _count(self, items: list[Any], reason: str) -> None:
        # Counting must never break the request that ended the span.
        with never_raise("could not count a dropped %s", self.signal, logger=logger):
            count_dropped(items, self._tables_of, self._stats, self._drops, reason)

    def queue_length(self) -> int:
        return len(self._queue)

    def force_flush(self, flush_queue: Callable[[], bool], timeout_millis: int | None) -> bool:
        """``flush_queue()`` (the SDK's flush), then the exporter's own with the time left."""
        deadline = time.monotonic() + (30000 if timeout_millis is None else timeout_millis) / 1000
        flushed = flush_queue()
        exported = False
        # A flush must never raise into the caller (a request, a shutdown hook).
        with never_raise("exporter flush failed", logger=logger):
            exported = bool(self._exporter.force_flush(max(int((deadline - time.monotonic()) * 1000), 0)))
        return exported and flushed

    def shutdown(self, shutdown_queue: Callable[[], None]) -> None:
        """``shutdown_queue()`` (the SDK's), then say what was dropped and not yet reported."""
        shutdown_queue()
        self._drops.flush()


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """``BatchSpanProcessor`` whose queue drops are counted per table in ``stats``.

    ``unsampled=True`` takes spans that were recorded but not sampled too (the SDK's takes only
    sampled ones): the tables' processor does, so sampling never costs a row."""

    def __init__(
        self,
        span_exporter: SpanExporter,
        *,
        stats: ExportStats = STATS,
        via: str = "",
        unsampled: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(span_exporter, **options)
        self.unsampled = unsampled
        self.drop_counter = _DropCounter(
            self._batch_processor, span_exporter, span_tables, stats, "span", via
        )

    def on_end(self, span: ReadableSpan) -> None:
        if self.unsampled:
            self._batch_processor.emit(span)
        else:
            super().on_end(span)

    def enqueue(self, span: ReadableSpan) -> None:
        """Queue a finished span another processor handed on (the zero-code exporter)."""
        self._batch_processor.emit(span)

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        return self.drop_counter.force_flush(partial(super().force_flush, timeout_millis), timeout_millis)

    def shutdown(self) -> None:
        self.drop_counter.shutdown(super().shutdown)


class CountingBatchLogRecordProcessor(BatchLogRecordProcessor):
    """``BatchLogRecordProcessor`` whose queue drops are counted per table in ``stats``."""

    def __init__(
        self, exporter: LogRecordExporter, *, stats: ExportStats = STATS, via: str = "", **options: Any
    ) -> None:
        super().__init__(exporter, **options)
        self.drop_counter = _DropCounter(
            self._batch_processor, exporter, log_tables, stats, "log record", via
        )

    def enqueue(self, record: ReadableLogRecord) -> None:
        """Queue a log record another processor handed on (the zero-code exporter)."""
        self._batch_processor.emit(record)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.drop_counter.force_flush(partial(super().force_flush, timeout_millis), timeout_millis)

    def shutdown(self) -> None:
        self.drop_counter.shutdown(super().shutdown)


def queue_usage() -> dict[str, tuple[int, int]]:
    """(records queued, capacity) per signal, summed over this process's counting processors."""
    usage: dict[str, tuple[int, int]] = {}
    for counter in list(_LIVE):
        queued, capacity = usage.get(counter.signal, (0, 0))
        usage[counter.signal] = (queued + counter.queue_length(), capacity + counter.capacity)
    return usage
