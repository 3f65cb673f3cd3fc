"""The five analytics tables, defined once: the exporter writes them, the query API reads them.

Column names are the contract of the HOMEPOT spec. Every table also carries ``id``, the trace
context (``trace_id``, ``span_id``), ``service_name`` and ``event_id``: a deterministic key of the
span / log record a row came from, so that replays and collector retries never duplicate a row.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# Longest stored text per bounded column kind; the mapping truncates to these instead of
# letting one oversized attribute fail a whole COPY batch.
SHORT = 64
NAME = 255
URL = 2048
MESSAGE = 8192
STACK_TRACE = 65536


def _common_columns() -> list[Column]:
    return [
        Column("id", BigInteger, Identity(always=False), primary_key=True),
        Column("timestamp", DateTime(timezone=True), nullable=False),
    ]


def _context_columns() -> list[Column]:
    return [
        Column("trace_id", String(32)),
        Column("span_id", String(16)),
        Column("service_name", String(NAME)),
        Column("event_id", Uuid(as_uuid=True), nullable=False),
    ]


def _standard_indexes(name: str) -> list[Index]:
    return [
        Index(f"ix_{name}_timestamp_id", text('"timestamp" DESC'), text("id DESC")),
        Index(f"uq_{name}_event_id", "event_id", "timestamp", unique=True),
    ]


api_request_logs = Table(
    "api_request_logs",
    metadata,
    *_common_columns(),
    Column("endpoint", String(URL), nullable=False),
    Column("route", String(URL)),
    Column("method", String(16), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response_time_ms", Float, nullable=False),
    Column("user_id", String(NAME)),
    Column("ip_address", String(SHORT)),
    Column("user_agent", String(1024)),
    Column("error_message", Text),
    Column("request_size_bytes", BigInteger),
    Column("response_size_bytes", BigInteger),
    *_context_columns(),
    *_standard_indexes("api_request_logs"),
    Index("ix_api_request_logs_route_ts", "route", "timestamp"),
    Index("ix_api_request_logs_status_ts", "status_code", "timestamp"),
    Index("ix_api_request_logs_user_ts", "user_id", "timestamp"),
    Index("ix_api_request_logs_trace_id", "trace_id"),
)

device_state_history = Table(
    "device_state_history",
    metadata,
    *_common_columns(),
    Column("device_id", String(NAME), nullable=False),
    Column("previous_state", String(SHORT)),
    Column("new_state", String(SHORT), nullable=False),
    Column("changed_by", String(NAME)),
    Column("reason", Text),
    Column("extra_data", JSONB),
    *_context_columns(),
    *_standard_indexes("device_state_history"),
    Index("ix_device_state_history_device_ts", "device_id", "timestamp"),
)

job_outcomes = Table(
    "job_outcomes",
    metadata,
    *_common_columns(),
    Column("job_id", String(NAME), nullable=False),
    Column("job_type", String(128), nullable=False),
    Column("device_id", String(NAME)),
    Column("status", String(32), nullable=False),
    Column("duration_ms", Integer),
    Column("error_code", String(128)),
    Column("error_message", Text),
    Column("retry_count", Integer, nullable=False, server_default=text("0")),
    Column("initiated_by", String(NAME)),
    Column("extra_data", JSONB),
    *_context_columns(),
    *_standard_indexes("job_outcomes"),
    Index("ix_job_outcomes_type_ts", "job_type", "timestamp"),
    Index("ix_job_outcomes_device_ts", "device_id", "timestamp"),
    Index("ix_job_outcomes_job_id", "job_id"),
)

error_logs = Table(
    "error_logs",
    metadata,
    *_common_columns(),
    Column("category", String(SHORT), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("error_code", String(128)),
    Column("error_message", Text, nullable=False),
    Column("stack_trace", Text),
    Column("endpoint", String(URL)),
    Column("user_id", String(NAME)),
    Column("device_id", String(NAME)),
    Column("context", JSONB),
    Column("resolved", Boolean, nullable=False, server_default=false()),
    Column("resolved_at", DateTime(timezone=True)),
    # Groups occurrences of one error (type + normalised message), as Sentry and SigNoz do.
    Column("fingerprint", String(32)),
    *_context_columns(),
    *_standard_indexes("error_logs"),
    Index("ix_error_logs_category_ts", "category", "timestamp"),
    Index("ix_error_logs_fingerprint_ts", "fingerprint", "timestamp"),
    Index("ix_error_logs_trace_id", "trace_id"),
)

user_activities = Table(
    "user_activities",
    metadata,
    *_common_columns(),
    Column("user_id", String(NAME)),
    Column("session_id", String(128)),
    Column("activity_type", String(SHORT), nullable=False),
    Column("page_url", String(URL)),
    Column("element_id", String(NAME)),
    Column("search_query", String(512)),
    Column("extra_data", JSONB),
    Column("duration_ms", Integer),
    *_context_columns(),
    *_standard_indexes("user_activities"),
    Index("ix_user_activities_user_ts", "user_id", "timestamp"),
    Index("ix_user_activities_session_ts", "session_id", "timestamp"),
    Index("ix_user_activities_type_ts", "activity_type", "timestamp"),
)

TABLES: dict[str, Table] = {table.name: table for table in metadata.sorted_tables}

# The columns a writer fills, in table order: everything but the generated id and the
# columns that only the query API changes later.
_NOT_WRITTEN = {"id", "resolved", "resolved_at"}
WRITE_COLUMNS: dict[str, tuple[str, ...]] = {
    name: tuple(column.name for column in table.columns if column.name not in _NOT_WRITTEN)
    for name, table in TABLES.items()
}


def max_length(table: str, column: str) -> int | None:
    """The length a text column holds, or None when it is unbounded."""
    return getattr(TABLES[table].c[column].type, "length", None)
