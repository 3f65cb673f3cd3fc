"""Joins the rows of one trace after they are written: what a span or log record could not know
when it was mapped alone.

An error can be recorded far from its request: on a child span (Express's handler span, a manual
span inside a handler), in a log line, or by a background worker; and the request's own span
usually ends *after* them, so it arrives in a later batch, or through another sink process.
Each batch written is therefore followed by three statements over the traces it touched:

1. an error row without an endpoint or user takes them from the request row of its trace
   (same service);
2. a 5xx request row that says only its reason phrase ("Internal Server Error") takes the
   exception of the first error in its trace;
3. one exception recorded twice in a trace (on a child span and again on its server span, or
   on a span and again by the server's log line) is kept once: the copy nearest to where it was
   raised is kept (a child span's, then a server span's, then a log record's), the others are
   deleted and counted as ``merged``.

Each is bounded by the trace ids and the time span of the batch (partition pruning), and runs in
its own transaction after the batch is stored: a failure here leaves rows unjoined, never lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

import psycopg

from exporter.columns import text_limits
from exporter.own_logging import exporter_logger
from exporter.stats import ExportStats

logger = exporter_logger(__name__)

# The rows of one trace are written within this much of each other (a late child, a retry).
_WINDOW = timedelta(hours=1)
_NO_TRACE = "0" * 32
# What a request row says when its span knew nothing more than the status.
GENERIC_MESSAGES = sorted({status.phrase for status in HTTPStatus if status >= 500})
_REQUEST_MESSAGE_CHARS = text_limits("api_request_logs")["error_message"]

_FILL_ERRORS = """
UPDATE error_logs e
SET endpoint = COALESCE(e.endpoint, r.endpoint), user_id = COALESCE(e.user_id, r.user_id)
FROM api_request_logs r
WHERE e.trace_id = ANY(%(traces)s) AND e.timestamp BETWEEN %(since)s AND %(until)s
  AND r.trace_id = e.trace_id AND r.timestamp BETWEEN %(since)s AND %(until)s
  AND r.service_name = e.service_name
  AND (e.endpoint IS NULL OR (e.user_id IS NULL AND r.user_id IS NOT NULL))
"""

_FILL_REQUESTS = """
UPDATE api_request_logs r
SET error_message = left(concat_ws(': ', e.error_code, e.error_message), %(chars)s)
FROM (
    SELECT DISTINCT ON (trace_id, service_name) trace_id, service_name, error_code, error_message
    FROM error_logs
    WHERE trace_id = ANY(%(traces)s) AND timestamp BETWEEN %(since)s AND %(until)s
      AND error_code IS NOT NULL
    ORDER BY trace_id, service_name, timestamp
) e
WHERE r.trace_id = e.trace_id AND r.service_name = e.service_name
  AND r.timestamp BETWEEN %(since)s AND %(until)s
  AND r.status_code >= 500 AND (r.error_message IS NULL OR r.error_message = ANY(%(generic)s))
"""

# Rank of a copy: 0 a child span's exception event, 1 a server span's, 2 a log record's.
_RANK = """CASE e.context->>'span_kind' WHEN 'internal' THEN 0
    WHEN 'server' THEN 1 WHEN 'consumer' THEN 1 ELSE 2 END"""
_MERGE_DUPLICATES = f"""
WITH copies AS (
    SELECT e.event_id, e.timestamp,
           row_number() OVER (
               PARTITION BY e.trace_id, e.service_name, e.error_code,
                            COALESCE(e.context->>'exception_message', e.error_message)
               ORDER BY {_RANK}, e.timestamp, e.event_id
           ) AS copy
    FROM error_logs e
    WHERE e.trace_id = ANY(%(traces)s) AND e.timestamp BETWEEN %(since)s AND %(until)s
      AND e.error_code IS NOT NULL
)
DELETE FROM error_logs d USING copies
WHERE copies.copy > 1 AND d.event_id = copies.event_id AND d.timestamp = copies.timestamp
  AND d.timestamp BETWEEN %(since)s AND %(until)s
"""


def _traces_and_window(
    batch: Mapping[str, Sequence[Mapping[str, Any]]],
) -> tuple[list[str], datetime, datetime] | None:
    """The trace ids of the batch's requests and errors, and the time span around their rows."""
    traces: set[str] = set()
    times: list[datetime] = []
    for table in ("api_request_logs", "error_logs"):
        for row in batch.get(table, ()):
            trace_id = row.get("trace_id")
            if trace_id and trace_id != _NO_TRACE:
                traces.add(trace_id)
                times.append(row["timestamp"])
    if not traces:
        return None
    return sorted(traces), min(times) - _WINDOW, max(times) + _WINDOW


def link_traces(
    connection: psycopg.Connection[Any],
    batch: Mapping[str, Sequence[Mapping[str, Any]]],
    stats: ExportStats,
) -> int:
    """Join the rows of the batch's traces (above); returns how many duplicates were merged."""
    scope = _traces_and_window(batch)
    if scope is None:
        return 0
    traces, since, until = scope
    parameters = {
        "traces": traces,
        "since": since,
        "until": until,
        "generic": GENERIC_MESSAGES,
        "chars": _REQUEST_MESSAGE_CHARS,
    }
    has_errors = bool(batch.get("error_logs"))
    # A batch of requests alone still joins the errors that came before it (the server span
    # ends after its children and its log lines): only the merge needs new errors.
    has_failures = has_errors or any(row["status_code"] >= 500 for row in batch.get("api_request_logs", ()))
    merged = 0
    try:
        with connection.cursor() as cursor:
            if has_errors:
                cursor.execute(_MERGE_DUPLICATES, parameters)
                merged = max(cursor.rowcount, 0)
            cursor.execute(_FILL_ERRORS, parameters)
            if has_failures:
                cursor.execute(_FILL_REQUESTS, parameters)
        connection.commit()
    except psycopg.Error as error:
        logger.warning("could not join the rows of %d traces (they stay as written): %s", len(traces), error)
        connection.rollback()
        return 0
    stats.add("merged", "error_logs", merged)
    return merged
