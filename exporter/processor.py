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
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from exporter.forking import repair_after_fork
from exporter.own_logging import exporter_logger
from exporter.routing import log_tables, span_tables
from exporter.stats import STATS, DropReporter, ExportStats

logger = exporter_logger(__name__)

# Every counting processor of this process, for the export queue gauge of /metrics.
_LIVE: weakref.WeakSet[_DropCounter] = weakref.WeakSet()


class _DropCounter:
    """Wraps the ``emit`` of an SDK ``BatchProcessor`` (the shared engine of both processors)."""

    def __init__(
        self,
        inner: Any,
        tables_of: Callable[[Any], list[str]],
        stats: ExportStats,
        signal: str,
        reason_prefix: str = "",
    ) -> None:
        self.signal = signal
        self._reason_prefix = reason_prefix
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
        _LIVE.add(self)

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
        try:
            counts: dict[str, int] = {}
            for item in items:
                for table in self._tables_of(item):
                    counts[table] = counts.get(table, 0) + 1
            for table, count in counts.items():
                self._stats.add("dropped", table, count, reason=reason)
            if counts:
                self._drops.report(reason, counts)
        except Exception:  # counting must never break the request that ended the span
            logger.exception("could not count a dropped %s", self.signal)

    def queue_length(self) -> int:
        return len(self._queue)

    def flush_report(self) -> None:
        self._drops.flush()


def _signal(signal: str, via: str) -> str:
    return f"{via} {signal}" if via else signal


def _reason_prefix(via: str) -> str:
    return f"{via}_" if via else ""


def _flush_exporter(exporter: SpanExporter | LogRecordExporter, deadline: float) -> bool:
    """The exporter's own ``force_flush`` with what is left of the caller's time."""
    remaining_ms = max(int((deadline - time.monotonic()) * 1000), 0)
    try:
        return bool(exporter.force_flush(remaining_ms))
    except Exception:  # a flush must never raise into the caller (a request, a shutdown hook)
        logger.exception("exporter flush failed")
        return False


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """``BatchSpanProcessor`` whose queue drops are counted per table in ``stats``.

    ``via`` names another destination than the tables (``"otlp"``): its drops are counted with
    reasons ``otlp_queue_full`` / ``otlp_after_shutdown`` and its queue as signal ``otlp span``.
    """

    def __init__(
        self, span_exporter: SpanExporter, *, stats: ExportStats = STATS, via: str = "", **options: Any
    ) -> None:
        super().__init__(span_exporter, **options)
        self._flushed_exporter = span_exporter
        self.drop_counter = _DropCounter(
            self._batch_processor, span_tables, stats, _signal("span", via), _reason_prefix(via)
        )

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        deadline = time.monotonic() + (30000 if timeout_millis is None else timeout_millis) / 1000
        flushed = super().force_flush(timeout_millis)
        return _flush_exporter(self._flushed_exporter, deadline) and flushed

    def shutdown(self) -> None:
        super().shutdown()
        self.drop_counter.flush_report()


class CountingBatchLogRecordProcessor(BatchLogRecordProcessor):
    """``BatchLogRecordProcessor`` whose queue drops are counted per table in ``stats``
    (``via`` as for ``CountingBatchSpanProcessor``)."""

    def __init__(
        self, exporter: LogRecordExporter, *, stats: ExportStats = STATS, via: str = "", **options: Any
    ) -> None:
        super().__init__(exporter, **options)
        self._flushed_exporter = exporter
        self.drop_counter = _DropCounter(
            self._batch_processor, log_tables, stats, _signal("log record", via), _reason_prefix(via)
        )

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        flushed = super().force_flush(timeout_millis)
        return _flush_exporter(self._flushed_exporter, deadline) and flushed

    def shutdown(self) -> None:
        super().shutdown()
        self.drop_counter.flush_report()


def queue_usage() -> dict[str, tuple[int, int]]:
    """(records queued, capacity) per signal, summed over this process's counting processors."""
    usage: dict[str, tuple[int, int]] = {}
    for counter in list(_LIVE):
        queued, capacity = usage.get(counter.signal, (0, 0))
        usage[counter.signal] = (queued + counter.queue_length(), capacity + counter.capacity)
    return usage
