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
   raised is kept (a child span's, then a server span's, then a log record's) and takes what
   the others knew (endpoint, user, a resolution); they are deleted and counted as ``merged``.

Each is bounded by the trace ids and the time span of the batch (partition pruning), and runs in
its own transaction after the batch is stored, sent as one pipeline whose commit does not wait
for the WAL flush: a failure here (or a crash of PostgreSQL right after) leaves rows unjoined (or a
duplicate unmerged), never lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
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

# The request an error belongs to: the one whose server span holds it (a log line or exception
# on the server span itself, or a child span of it); else the only request of its trace and
# service (an error deeper down). A trace that spans several requests of one service (a caller
# propagating one trace to two calls) never lends one request's endpoint to another's error.
_OWN_REQUEST = """
r.trace_id = e.trace_id AND r.service_name = e.service_name
AND r.timestamp BETWEEN %(since)s AND %(until)s
AND (
    r.span_id = e.span_id OR r.span_id = e.context->>'parent_span_id'
    OR NOT EXISTS (
        SELECT 1 FROM api_request_logs o
        WHERE o.trace_id = r.trace_id AND o.service_name = r.service_name
          AND o.timestamp BETWEEN %(since)s AND %(until)s
          AND (o.span_id, o.event_id) <> (r.span_id, r.event_id)
    )
)
"""

_FILL_ERRORS = f"""
UPDATE error_logs e
SET endpoint = COALESCE(e.endpoint, r.endpoint), user_id = COALESCE(e.user_id, r.user_id)
FROM api_request_logs r
WHERE e.trace_id = ANY(%(traces)s) AND e.timestamp BETWEEN %(since)s AND %(until)s
  AND (e.endpoint IS NULL OR (e.user_id IS NULL AND r.user_id IS NOT NULL))
  AND {_OWN_REQUEST}
"""

# The exception's own text: a log line's is in its context, beside the developer's message.
_EXCEPTION_TEXT = "COALESCE(e.context->>'exception_message', e.error_message)"

_FILL_REQUESTS = f"""
UPDATE api_request_logs r
SET error_message = left(concat_ws(': ', first.error_code, first.exception_text), %(chars)s)
FROM (
    SELECT DISTINCT ON (r.event_id) r.event_id, r.timestamp, e.error_code,
           {_EXCEPTION_TEXT} AS exception_text
    FROM api_request_logs r JOIN error_logs e ON {_OWN_REQUEST}
    WHERE r.trace_id = ANY(%(traces)s) AND r.timestamp BETWEEN %(since)s AND %(until)s
      AND e.timestamp BETWEEN %(since)s AND %(until)s
      AND r.status_code >= 500 AND (r.error_message IS NULL OR r.error_message = ANY(%(generic)s))
      AND e.error_code IS NOT NULL
    ORDER BY r.event_id, e.timestamp
) first
WHERE r.event_id = first.event_id AND r.timestamp = first.timestamp
"""

# Rank of a copy: 0 a child span's exception event, 1 a server span's, 2 a log record's. Only
# copies ranked below the best of their exception are merged: two child spans raising the same
# error (a retry loop) are two occurrences, both kept.
_RANK = """CASE e.context->>'span_kind' WHEN 'internal' THEN 0
    WHEN 'server' THEN 1 WHEN 'consumer' THEN 1 ELSE 2 END"""
_COPIES = f"""
WITH ranked AS (
    SELECT e.event_id, e.timestamp, e.endpoint, e.user_id, e.resolved, e.resolved_at, {_RANK} AS rank,
           e.trace_id, e.service_name, e.error_code, {_EXCEPTION_TEXT} AS exception_text
    FROM error_logs e
    WHERE e.trace_id = ANY(%(traces)s) AND e.timestamp BETWEEN %(since)s AND %(until)s
      AND e.error_code IS NOT NULL
), copies AS (
    SELECT ranked.*, min(rank) OVER (
        PARTITION BY trace_id, service_name, error_code, exception_text
    ) AS best
    FROM ranked
)
"""
# The kept copy takes what only a merged one knew (the endpoint and user of a consumer span
# with no request row; a resolution someone already made), then the merged ones go.
_KEEP_WHAT_COPIES_KNEW = (
    _COPIES
    + """
UPDATE error_logs k
SET endpoint = COALESCE(k.endpoint, merged.endpoint), user_id = COALESCE(k.user_id, merged.user_id),
    resolved = k.resolved OR merged.resolved, resolved_at = COALESCE(k.resolved_at, merged.resolved_at)
FROM copies kept, copies merged
WHERE kept.rank = kept.best AND merged.rank > merged.best
  AND (merged.trace_id, merged.service_name, merged.error_code, merged.exception_text)
      = (kept.trace_id, kept.service_name, kept.error_code, kept.exception_text)
  AND k.event_id = kept.event_id AND k.timestamp = kept.timestamp
  AND k.timestamp BETWEEN %(since)s AND %(until)s
"""
)
_MERGE_DUPLICATES = (
    _COPIES
    + """
DELETE FROM error_logs d USING copies
WHERE copies.rank > copies.best AND d.event_id = copies.event_id AND d.timestamp = copies.timestamp
  AND d.timestamp BETWEEN %(since)s AND %(until)s
RETURNING d.timestamp, d.service_name, d.fingerprint, d.category, d.user_id
"""
)


# Error rows whose request row is not stored yet (the server span ends after its children and
# log lines, and may come through another sink process): the batch that brings the request joins
# them. A request-only batch, by far the most common, then reads this (mostly empty) table
# instead of searching error_logs for each of its traces. Unlogged: after a crash of the
# database the joins still waiting are given up, the rows themselves are kept.
PENDING_JOINS = "homepot_analytics_pending_joins"
PENDING_JOINS_DDL = (
    f"CREATE UNLOGGED TABLE IF NOT EXISTS {PENDING_JOINS}"
    " (trace_id varchar(32) NOT NULL, timestamp timestamptz NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS ix_{PENDING_JOINS}_trace_id ON {PENDING_JOINS} (trace_id)",
)

_REMEMBER_PENDING = f"""
INSERT INTO {PENDING_JOINS} (trace_id, timestamp)
SELECT DISTINCT e.trace_id, e.timestamp FROM error_logs e
WHERE e.trace_id = ANY(%(traces)s) AND e.timestamp BETWEEN %(since)s AND %(until)s
  AND NOT EXISTS (
      SELECT 1 FROM api_request_logs r
      WHERE r.trace_id = e.trace_id AND r.service_name = e.service_name
        AND r.timestamp BETWEEN %(since)s AND %(until)s
  )
"""
_PENDING = f"SELECT DISTINCT trace_id FROM {PENDING_JOINS}"
_FORGET_PENDING = f"DELETE FROM {PENDING_JOINS} WHERE trace_id = ANY(%(traces)s) OR timestamp < %(expired)s"


# The columns the statements above find their rows by, per table: the statistics their plans
# need kept fresh as a partition fills (``exporter.planner_statistics``).
LOOKUP_COLUMNS: dict[str, tuple[str, ...]] = {
    "api_request_logs": ("trace_id", "service_name", "timestamp", "span_id", "status_code"),
    "error_logs": ("trace_id", "service_name", "timestamp", "span_id", "error_code"),
}


# The joins only derive columns from rows already stored (and durable: their own commit waited
# for the WAL flush), so their commit does not wait for it: a crash of PostgreSQL within
# wal_writer_delay (200 ms) can undo the last joins, as it empties the unlogged pending table.
_NO_COMMIT_FLUSH = "SET LOCAL synchronous_commit TO off"


def _trace_ids(rows: Sequence[Mapping[str, Any]]) -> set[str]:
    return {row["trace_id"] for row in rows if row.get("trace_id") and row["trace_id"] != _NO_TRACE}


def _window(batch: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[datetime, datetime]:
    times = [row["timestamp"] for rows in batch.values() for row in rows]
    return min(times) - _WINDOW, max(times) + _WINDOW


def link_traces(
    connection: psycopg.Connection[Any],
    batch: Mapping[str, Sequence[Mapping[str, Any]]],
    stats: ExportStats,
) -> int:
    """Join the rows of the batch's traces (above); returns how many duplicates were merged."""
    errors = _trace_ids(batch.get("error_logs", ()))
    requests = _trace_ids(batch.get("api_request_logs", ()))
    if not errors and not requests:
        return 0
    since, until = _window(batch)
    parameters: dict[str, Any] = {
        "since": since,
        "until": until,
        "generic": GENERIC_MESSAGES,
        "chars": _REQUEST_MESSAGE_CHARS,
    }
    merged = 0
    try:
        # One pipeline: the statements go out together and the writer waits for the database
        # twice per batch (the pending lookup, then the rest with the commit) instead of once per
        # statement. Where another thread of the process has work (the export worker's decoding),
        # each wait is also a hand-off of the GIL for up to the switch interval (5 ms):
        # bench/README.md has the figures.
        with connection.pipeline(), connection.cursor() as cursor, connection.cursor() as merges:
            cursor.execute(_NO_COMMIT_FLUSH)
            if errors:
                # The batch's errors: merged and joined now when their request is stored (the
                # same batch, or an earlier one); else remembered for the batch that brings it.
                parameters["traces"] = sorted(errors)
                cursor.execute(_KEEP_WHAT_COPIES_KNEW, parameters)
                merges.execute(_MERGE_DUPLICATES, parameters)
                cursor.execute(_FILL_ERRORS, parameters)
                cursor.execute(_FILL_REQUESTS, parameters)
                cursor.execute(_REMEMBER_PENDING, parameters)
            waiting = requests - errors
            if waiting:
                waiting &= {trace_id for (trace_id,) in cursor.execute(_PENDING)}
            if errors:
                merged = len(merges.fetchall())  # the rollups' triggers see the deletes and recount
            if waiting:
                # Requests whose errors came first: join those (a few traces, not the batch's all).
                parameters["traces"] = sorted(waiting)
                cursor.execute(_FILL_ERRORS, parameters)
                cursor.execute(_FILL_REQUESTS, parameters)
                parameters["expired"] = datetime.now(UTC) - 2 * _WINDOW
                cursor.execute(_FORGET_PENDING, parameters)
            connection.commit()
    except psycopg.Error as error:
        logger.warning("could not join the rows of a batch's traces (they stay as written): %s", error)
        connection.rollback()
        return 0
    stats.add("merged", "error_logs", merged)
    return merged
