"""The one logger setup for the exporter's own messages (drops, outages, failures it contained).

They must not reach an OpenTelemetry logging handler, which would export them and feed the
exporter its own output; and under ``opentelemetry-instrument`` the root logger's only handler
is OpenTelemetry's, so a message left to propagate would never be seen. Hence: no propagation,
and a stderr handler of its own unless the application gave the logger handlers.
"""

from __future__ import annotations

import logging
import sys
from typing import Any


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (a test runner or a daemon
    may have swapped it since the logger was set up)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def exporter_logger(name: str) -> logging.Logger:
    """A logger for the exporter's own messages: they must not reach an OpenTelemetry logging
    handler (which would export them, feeding the exporter its own output), so it does not
    propagate and writes to stderr itself unless the application gave it handlers."""
    logger = logging.getLogger(name)
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(_StderrHandler())
        logger.setLevel(logging.INFO)
    return logger
