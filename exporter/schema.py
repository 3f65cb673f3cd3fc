"""The five analytics tables as SQLAlchemy tables: the exporter writes them, the query API reads them.

Their columns are defined once, as plain data, in ``exporter.columns``; this module adds the
SQLAlchemy types and the indexes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

from exporter.columns import COLUMNS, MESSAGE, NAME, SHORT, STACK_TRACE, URL, ColumnSpec

__all__ = [
    "MESSAGE",
    "NAME",
    "SHORT",
    "STACK_TRACE",
    "TABLES",
    "URL",
    "WRITE_COLUMNS",
    "api_request_logs",
    "device_state_history",
    "error_logs",
    "job_outcomes",
    "max_length",
    "metadata",
    "user_activities",
]

metadata = MetaData()

_TYPES: dict[str, Callable[[ColumnSpec], TypeEngine[Any]]] = {
    "timestamptz": lambda _: DateTime(timezone=True),
    "varchar": lambda spec: String(spec.length),
    "text": lambda _: Text(),
    "integer": lambda _: Integer(),
    "bigint": lambda _: BigInteger(),
    "float": lambda _: Float(),
    "boolean": lambda _: Boolean(),
    "uuid": lambda _: Uuid(as_uuid=True),
    "jsonb": lambda _: JSONB(),
}


def _column(spec: ColumnSpec) -> Column[Any]:
    if spec.kind == "identity":
        return Column(spec.name, BigInteger, Identity(always=False), primary_key=True)
    default = text(spec.server_default) if spec.server_default is not None else None
    return Column(spec.name, _TYPES[spec.kind](spec), nullable=spec.nullable, server_default=default)


def _table(name: str, *indexes: Index) -> Table:
    return Table(
        name,
        metadata,
        *(_column(spec) for spec in COLUMNS[name]),
        Index(f"ix_{name}_timestamp_id", text('"timestamp" DESC'), text("id DESC")),
        Index(f"uq_{name}_event_id", "event_id", "timestamp", unique=True),
        *indexes,
    )


api_request_logs = _table(
    "api_request_logs",
    Index("ix_api_request_logs_route_ts", "route", "timestamp"),
    Index("ix_api_request_logs_status_ts", "status_code", "timestamp"),
    Index("ix_api_request_logs_user_ts", "user_id", "timestamp"),
    Index("ix_api_request_logs_trace_id", "trace_id"),
)

device_state_history = _table(
    "device_state_history",
    Index("ix_device_state_history_device_ts", "device_id", "timestamp"),
)

job_outcomes = _table(
    "job_outcomes",
    Index("ix_job_outcomes_type_ts", "job_type", "timestamp"),
    Index("ix_job_outcomes_device_ts", "device_id", "timestamp"),
    Index("ix_job_outcomes_job_id", "job_id"),
)

error_logs = _table(
    "error_logs",
    Index("ix_error_logs_category_ts", "category", "timestamp"),
    Index("ix_error_logs_fingerprint_ts", "fingerprint", "timestamp"),
    Index("ix_error_logs_trace_id", "trace_id"),
)

user_activities = _table(
    "user_activities",
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
