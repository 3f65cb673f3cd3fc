"""The one guard between our code and the host application: ``never_raise``.

Instrumentation that meets something unexpected logs and steps aside; it never breaks the
request, job or shutdown it runs in. Every hook, helper and exporter path that runs on the
host's behalf wraps its work in this guard, so the rule is kept (and logged) the same way.
"""

from __future__ import annotations

import logging
from types import TracebackType

from exporter.own_logging import exporter_logger

_logger = exporter_logger("homepot_analytics.contained")


class never_raise:
    """Run the block; an ``Exception`` is logged (``what % args``: say what was lost) with its
    traceback, and goes no further. ``BaseException`` (cancellation, ``SystemExit``) passes.

    A class rather than ``@contextmanager``: it guards the request path, where a generator per
    request would cost more than the guard is worth. An instance keeps no state between blocks,
    so a hot path builds its guard once and enters it as often as it likes."""

    __slots__ = ("_args", "_logger", "_what")

    def __init__(self, what: str, *args: object, logger: logging.Logger | None = None) -> None:
        self._what = what
        self._args = args
        self._logger = logger

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if not isinstance(exception, Exception):
            return False
        (self._logger or _logger).error(self._what, *self._args, exc_info=exception)
        return True
