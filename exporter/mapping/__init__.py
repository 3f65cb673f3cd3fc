"""Pure mapping from OpenTelemetry spans and log records to rows of the five tables.

No I/O here: ``span_to_rows`` and ``log_record_to_rows`` take SDK objects (the in-process
exporter's, or those the OTLP sink decodes) and return ``(table, row)`` pairs whose values are
ready for COPY: bounded strings without NUL bytes, tz-aware UTC datetimes, JSON as text.
"""

from __future__ import annotations

from exporter.mapping.actors import stored_actor
from exporter.mapping.fingerprints import error_category, error_fingerprint, normalise_message
from exporter.mapping.logs import log_record_to_rows
from exporter.mapping.spans import span_to_rows
from exporter.mapping.values import Row, TableRow

__all__ = [
    "Row",
    "TableRow",
    "error_category",
    "error_fingerprint",
    "log_record_to_rows",
    "normalise_message",
    "span_to_rows",
    "stored_actor",
]
