"""The processors of an instrumented service whose records go to the export worker.

``on_end`` / ``on_emit`` encode the finished record at once (``exporter.compact``) and hand the
bytes to the ``WorkerLink``: nothing is queued as an object, nothing is mapped or written here.
A record the link cannot take (full, or shut down) is counted dropped per table, with its
reason, and said in the log: the same counters and reasons as the in-process processors.
They take not-sampled spans too: sampling decides what a collector gets, never which requests
and jobs are stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from exporter.compact import Interned, Rebuilt, decode_span, encode_log_record, encode_span
from exporter.containment import never_raise
from exporter.own_logging import exporter_logger
from exporter.processor import count_dropped, register_queue
from exporter.routing import log_tables, span_tables
from exporter.stats import DropReporter
from exporter.worker_link import WorkerLink

logger = exporter_logger(__name__)
# One guard for every record (it keeps no state): a record that cannot be encoded never breaks
# the request that ended it.
_ENCODE_GUARD = never_raise("could not hand a record to the analytics export worker", logger=logger)


class _Linked:
    """What both processors share: encode, hand over, count what was not taken."""

    def __init__(
        self,
        link: WorkerLink,
        encode: Callable[[Any, Interned], bytes],
        put: Callable[[bytes], bool],
        tables_of: Callable[[Any], list[str]],
        signal: str,
    ) -> None:
        self.link = link
        # The gauge of /metrics: spans and log records share the link's one queue.
        self.signal = signal
        self.capacity = link.capacity
        register_queue(self)
        self._encode = encode
        self._put = put
        self._tables_of = tables_of
        self._drops = DropReporter(logger)
        self._shut_down = False

    def take(self, record: Any) -> None:
        with _ENCODE_GUARD:
            self._offer(lambda: self._encode(record, self.link.interned), lambda: record)

    def _offer(self, data: Callable[[], bytes], record: Callable[[], Any]) -> None:
        """Hand ``data()`` over unless shut down; what is not taken is counted (``record()``
        gives the record, to know its tables)."""
        if not (self._shut_down or self.link.closed) and self._put(data()):
            return
        self._not_taken(record)

    def _not_taken(self, record: Callable[[], Any]) -> None:
        reason = "after_shutdown" if self._shut_down or self.link.closed else "queue_full"
        count_dropped([record()], self._tables_of, self.link.stats, self._drops, reason)

    def queue_length(self) -> int:
        return self.link.queued

    def force_flush(self, timeout_millis: int | None = 30000) -> bool:
        with never_raise("export worker flush failed", logger=logger):
            return self.link.flush(None if timeout_millis is None else timeout_millis / 1000)
        return False

    def shutdown(self) -> None:
        """Take no more records, wait for what was taken (the link's owner stops the worker)."""
        if self._shut_down:
            return
        self._shut_down = True
        self.force_flush()
        self._drops.flush()


class LinkedSpanProcessor(_Linked, SpanProcessor):
    def __init__(self, link: WorkerLink) -> None:
        super().__init__(link, encode_span, link.put_span, span_tables, "span")

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        self.take(span)

    def enqueue(self, span: ReadableSpan) -> None:
        """A finished span another processor handed on (the zero-code exporter)."""
        self.take(span)

    def take_encoded(self, data: bytes) -> None:
        """A span encoded already (``instrumentation.request_span``); counted like the others
        when it is not taken (decoded then, to know its tables: the rare path)."""
        with _ENCODE_GUARD:
            # The link refuses it once closed (``_put`` is False), so only our own flag is checked.
            if self._shut_down or not self._put(data):
                self._not_taken(lambda: decode_span(data, Rebuilt(self.link.interned.descriptions())))


class LinkedLogRecordProcessor(_Linked, LogRecordProcessor):
    def __init__(self, link: WorkerLink) -> None:
        super().__init__(link, encode_log_record, link.put_log_record, log_tables, "log record")

    def on_emit(self, log_record: Any) -> None:
        self.take(log_record)

    # The SDK's name for it before 1.3x; kept so either calls us.
    emit = on_emit

    def enqueue(self, record: ReadableLogRecord) -> None:
        """A log record another processor handed on (the zero-code exporter)."""
        self.take(record)
