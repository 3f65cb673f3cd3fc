"""The one guard between our code and the host application: ``never_raise``.

Instrumentation that meets something unexpected logs and steps aside; it never breaks the
request, job or shutdown it runs in. Every hook, helper and exporter path that runs on the
host's behalf wraps its work in this guard, so the rule is kept (and logged) the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from exporter.own_logging import exporter_logger

_logger = exporter_logger("homepot_analytics.contained")


@contextmanager
def never_raise(what: str, logger: logging.Logger | None = None) -> Iterator[None]:
    """Run the block; an exception is logged as ``what`` (say what was lost) with its traceback,
    and goes no further. ``BaseException`` (cancellation, ``SystemExit``) passes as it should."""
    try:
        yield
    except Exception:
        (logger or _logger).exception(what)
