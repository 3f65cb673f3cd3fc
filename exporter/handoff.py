"""The hand-off between the exporters and one writer thread, so mapping and writing overlap.

``submit(item)`` hands a batch over and returns. An item is a mapped batch, or ``Unmapped``: the
records and how to map them, mapped on the writer thread. That thread maps the next waiting
item while PostgreSQL parses the last COPY of the batch being written (``deliver`` is given a
``meanwhile`` callback for that moment), so one thread keeps both busy. Mapping on the
exporter's thread beside the writer's was slower than either alone: the two threads share the
GIL, and each of the writer's waits on the database handed the GIL to the mapping thread for
up to the 5 ms switch interval (bench/README.md has the figures).

At most ``capacity`` items are in hand (the one being written included); a full hand-off makes
``submit`` wait, so memory stays bounded and the SDK's queue in front of the exporter gives the
back-pressure, counted as it always was. Batches are delivered in the order submitted.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, set_value

from exporter.own_logging import exporter_logger

logger = exporter_logger(__name__)

# One batch being written and one waiting: the exporter maps the next while both are in hand.
CAPACITY = 2
# A waiting submit or flush looks this often whether the writer thread is still there.
_WRITER_CHECK_S = 1.0

Batch = dict[str, list[Any]]


class Unmapped:
    """A batch still to be mapped: ``rows()`` maps it once (on whichever thread asks first) and
    keeps the result. ``map_rows`` must not raise: it counts what it cannot map."""

    __slots__ = ("_lock", "_map_rows", "_rows")

    def __init__(self, map_rows: Callable[[], Batch]) -> None:
        self._map_rows: Callable[[], Batch] | None = map_rows
        self._rows: Batch | None = None
        self._lock = threading.Lock()

    def rows(self) -> Batch:
        with self._lock:
            if self._rows is None:
                assert self._map_rows is not None
                self._rows, self._map_rows = self._map_rows(), None  # the records can go
            return self._rows


Item = Batch | Unmapped


def suppress_instrumentation() -> None:
    """For the rest of this thread: a host that instruments psycopg must not trace our own
    writes (each write would become a span, exported and written, and so on). The SDK does
    the same around ``export``; on our threads it is up to us."""
    attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))


class Handoff:
    """Delivers submitted batches on one writer thread, started at the first submit.

    ``deliver(batch, meanwhile)`` does the work (it keeps what it cannot write) and calls
    ``meanwhile()`` while the database is busy with the batch (mapping the next item); should it
    raise, the batch goes to ``lost(batch)`` to be counted, and the thread goes on."""

    def __init__(
        self,
        deliver: Callable[[Batch, Callable[[], None]], object],
        lost: Callable[[Batch], None],
        capacity: int = CAPACITY,
    ) -> None:
        self._deliver = deliver
        self._lost = lost
        self.capacity = max(1, capacity)
        self.reset()

    def reset(self) -> None:
        """Empty and without a thread: at creation, and in a forked child (only the forking thread
        exists there, and a lock may have been held by a thread of the parent; what the parent
        had in hand is the parent's to write)."""
        self._batches: collections.deque[Item] = collections.deque()
        # Guards the batches and counters; notified whenever a batch arrives or is done.
        self._changed = threading.Condition()
        self._submitted = 0  # batches handed to the writer thread
        self._finished = 0  # of those, delivered (written, spooled or counted dropped)
        self._thread: threading.Thread | None = None
        self._closed = False

    def __len__(self) -> int:
        """Batches waiting for the writer (the one being written not included)."""
        return len(self._batches)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    @property
    def unfinished(self) -> int:
        return self._submitted - self._finished

    def submit(self, batch: Item) -> bool:
        """Hand ``batch`` over; False when closed (the caller delivers it itself). When no thread
        can be started (the interpreter is exiting), the caller's thread writes what is in hand."""
        with self._changed:
            if self._closed:
                return False
            while self.unfinished >= self.capacity and self._writer_running():
                self._changed.wait(_WRITER_CHECK_S)
            self._batches.append(batch)
            self._submitted += 1
            self._changed.notify_all()
            if self._writer_running():
                return True
        self._write_here()
        return True

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every batch submitted so far is delivered; False when ``timeout_s`` passed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._changed:
            if threading.current_thread() is self._thread:
                return False  # it would wait for itself
            target = self._submitted
            while self._finished < target:
                if not self._writer_running():
                    break
                wait_s = _WRITER_CHECK_S
                if deadline is not None:
                    wait_s = min(wait_s, deadline - time.monotonic())
                    if wait_s <= 0:
                        return False
                self._changed.wait(wait_s)
            else:
                return True
        self._write_here()
        return True

    def close(self, timeout_s: float) -> bool:
        """Take no more batches, let the thread deliver what it holds; False when it is still
        busy after ``timeout_s`` (it goes on while the process lives)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is None:
            return True
        thread.join(max(timeout_s, 0))
        return not thread.is_alive()

    def _write_here(self) -> None:
        while self._deliver_next(wait=False):
            pass

    def _writer_running(self) -> bool:
        """Whether a writer thread takes the batches; starts one when there is none (or it is
        gone: the parent's thread does not exist in a forked child). Called with ``_changed``
        held. False only when no thread can be started."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return True
        # A daemon: a process that exits without shutting us down is not held up by it.
        thread = threading.Thread(target=self._run, name="homepot-analytics-writer", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown"
            self._thread = None
            return False
        self._thread = thread
        return True

    def _run(self) -> None:
        suppress_instrumentation()
        while self._deliver_next(wait=True):
            pass

    def _deliver_next(self, wait: bool) -> bool:
        """Deliver the oldest batch; False when there is none (and, with ``wait``, none will
        come: closed). Never raises: the writer thread must not die of an error."""
        with self._changed:
            while not self._batches:
                if not wait or self._closed:
                    return False
                self._changed.wait()
            item = self._batches.popleft()
        batch: Batch = {}
        try:
            batch = item.rows() if isinstance(item, Unmapped) else item
            self._deliver(batch, self._map_next)
        except Exception:  # deliver keeps what the writer refuses: this is the spool failing
            logger.exception("unexpected error delivering analytics rows; batch dropped")
            self._lost(batch)
        finally:
            with self._changed:
                self._finished += 1
                self._changed.notify_all()
        return True

    def _map_next(self) -> None:
        """Map the item after the one being written, if it is waiting unmapped."""
        with self._changed:
            upcoming = self._batches[0] if self._batches else None
        if isinstance(upcoming, Unmapped):
            upcoming.rows()
