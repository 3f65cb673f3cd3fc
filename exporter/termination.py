"""Write what is pending before SIGTERM ends the process.

SIGTERM's default action kills the process before ``atexit`` runs, so batches still queued
would be lost; uvicorn handles SIGTERM itself, then restores the handler it found and raises
the signal again. So a handler installed here (only where none is: another one is the
application's to keep) runs the registered shutdowns, then lets the signal do what it would
have done. Bound methods are held weakly: registering never keeps an object alive.
"""

from __future__ import annotations

import inspect
import signal
import threading
import weakref
from collections.abc import Callable
from typing import Any

from exporter.containment import never_raise
from exporter.own_logging import exporter_logger

logger = exporter_logger(__name__)

_SHUTDOWNS: list[Callable[[], Callable[[], Any] | None]] = []
_LOCK = threading.Lock()


def shut_down_on_sigterm(shutdown: Callable[[], Any]) -> None:
    """Call ``shutdown`` when SIGTERM arrives; a bound method is held weakly (its object may go)."""
    # A function lives as long as its module: it needs no weak reference.
    reference: Callable[[], Callable[[], Any] | None] = (
        weakref.WeakMethod(shutdown) if inspect.ismethod(shutdown) else lambda: shutdown
    )
    with _LOCK:
        _SHUTDOWNS.append(reference)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be installed from the main thread
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    with _LOCK:
        shutdowns = [reference() for reference in _SHUTDOWNS]
        _SHUTDOWNS.clear()
    for shutdown in shutdowns:
        if shutdown is not None:
            with never_raise("could not write pending analytics at SIGTERM", logger=logger):
                shutdown()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
