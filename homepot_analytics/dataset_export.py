"""Dataset export: one table over a time range to CSV, JSON Lines or Parquet, for training sets.

Rows stream from a server-side cursor in batches (memory stays bounded whatever the range),
inside one read-only snapshot (the row count shown by the progress bar is exact). Every user
id leaves as a pseudonym and every IP truncated, whatever the deployment stores: rows written
with pseudonymisation switched off, or before it existed, are hashed on the way out with the
deployment's key; free text, URLs and JSON values pass the secret masking once more.
The file appears under its name only when complete (written as ``<out>.partial`` first).
"""

from __future__ import annotations

import csv
import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import IsolationLevel, sql
from sqlalchemy import BigInteger, Boolean, DateTime, Float, Integer, String, Table
from sqlalchemy.dialects.postgresql import JSONB

from exporter.privacy import Privacy, export_privacy
from exporter.schema import TABLES
from homepot_foundation.database import libpq_url
from homepot_foundation.extras import MissingExtraError
from homepot_foundation.settings import Settings

BATCH_ROWS = 10_000

# How each column leaves: user ids pseudonymised, IPs truncated, text and URLs masked.
_USER_COLUMNS = frozenset({"user_id"})
_ACTOR_COLUMNS = frozenset({"changed_by", "initiated_by"})  # "system" or a user
_IP_COLUMNS = frozenset({"ip_address"})
_URL_COLUMNS = frozenset({"endpoint", "page_url"})
_TEXT_COLUMNS = frozenset({"error_message", "stack_trace", "reason", "search_query"})
_JSON_COLUMNS = frozenset({"extra_data", "context"})


class ExportFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


@dataclass(frozen=True)
class ExportResult:
    table: str
    rows: int
    path: Path


class Progress(Protocol):
    """What the export reports to: the total once known, then each batch written."""

    def start(self, total: int) -> None: ...

    def advance(self, rows: int) -> None: ...


class _Silent:
    def start(self, total: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass


class _RichProgress:
    def __init__(self, bar: Any, description: str) -> None:
        self._bar = bar
        self._description = description
        self._task: Any = None

    def start(self, total: int) -> None:
        self._task = self._bar.add_task(self._description, total=total)

    def advance(self, rows: int) -> None:
        self._bar.advance(self._task, rows)


@contextmanager
def rich_progress(description: str, *, enabled: bool = True) -> Iterator[Progress]:
    """A progress bar on stderr (rows done of the total, elapsed, remaining)."""
    if not enabled:
        yield _Silent()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with RichProgress(
        *columns, TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True)
    ) as bar:
        yield _RichProgress(bar, description)


def parse_moment(value: str) -> datetime:
    """``2026-01-31`` or an ISO 8601 date-time; without an offset it is UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a date or ISO 8601 date-time: {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# --- rows -------------------------------------------------------------------------------------------
def _column_cleaner(name: str, privacy: Privacy) -> Callable[[Any], Any] | None:
    if name in _USER_COLUMNS:
        return privacy.user
    if name in _ACTOR_COLUMNS:
        return lambda value: value if value in (None, "system") else privacy.user(value)
    if name in _IP_COLUMNS:
        return privacy.ip
    if name in _URL_COLUMNS:
        return privacy.url
    if name in _TEXT_COLUMNS:
        return privacy.text
    if name in _JSON_COLUMNS:
        return privacy.json
    return None


def _cleaners(columns: Sequence[str], privacy: Privacy) -> list[tuple[int, Callable[[Any], Any]]]:
    found = ((index, _column_cleaner(name, privacy)) for index, name in enumerate(columns))
    return [(index, cleaner) for index, cleaner in found if cleaner is not None]


def _clean(row: Sequence[Any], cleaners: list[tuple[int, Callable[[Any], Any]]]) -> list[Any]:
    values = list(row)
    for index, cleaner in cleaners:
        values[index] = cleaner(values[index])
    return values


def _plain(value: Any) -> Any:
    """A value as JSON holds it."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


# --- writers -----------------------------------------------------------------------------------------
class _Writer(Protocol):
    def write(self, rows: list[list[Any]]) -> None: ...

    def close(self) -> None: ...


class _CsvWriter:
    def __init__(self, path: Path, columns: Sequence[str], table: Table) -> None:
        self._file = path.open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow(columns)
        self._json = [name in _JSON_COLUMNS for name in columns]

    def write(self, rows: list[list[Any]]) -> None:
        self._csv.writerows(
            [
                json.dumps(value, ensure_ascii=False) if is_json and value is not None else _plain(value)
                for value, is_json in zip(row, self._json, strict=True)
            ]
            for row in rows
        )

    def close(self) -> None:
        self._file.close()


class _JsonLinesWriter:
    def __init__(self, path: Path, columns: Sequence[str], table: Table) -> None:
        self._file = path.open("w", encoding="utf-8")
        self._columns = list(columns)

    def write(self, rows: list[list[Any]]) -> None:
        self._file.writelines(
            json.dumps(dict(zip(self._columns, map(_plain, row), strict=True)), ensure_ascii=False) + "\n"
            for row in rows
        )

    def close(self) -> None:
        self._file.close()


class _ParquetWriter:
    """One row group per batch; JSON columns as JSON text, ids and UUIDs as strings."""

    def __init__(self, path: Path, columns: Sequence[str], table: Table) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - depends on the installation
            raise MissingExtraError("Parquet export", "parquet") from None
        self._pa = pa
        self._columns = list(columns)
        self._schema = pa.schema([pa.field(name, _arrow_type(pa, table.c[name].type)) for name in columns])
        self._json = [name in _JSON_COLUMNS for name in columns]
        self._uuid = [self._schema.field(name).type == pa.string() for name in columns]
        self._writer = pq.ParquetWriter(str(path), self._schema, compression="zstd")

    def write(self, rows: list[list[Any]]) -> None:
        arrays = []
        for index in range(len(self._columns)):
            values = [row[index] for row in rows]
            if self._json[index]:
                values = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
            elif self._uuid[index]:
                values = [None if v is None else str(v) for v in values]
            arrays.append(self._pa.array(values, type=self._schema.field(index).type))
        self._writer.write_batch(self._pa.record_batch(arrays, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


def _arrow_type(pa: Any, column_type: Any) -> Any:
    if isinstance(column_type, BigInteger):
        return pa.int64()
    if isinstance(column_type, Integer):
        return pa.int32()
    if isinstance(column_type, Float):
        return pa.float64()
    if isinstance(column_type, Boolean):
        return pa.bool_()
    if isinstance(column_type, DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(column_type, JSONB):
        return pa.string()
    return pa.string()  # text, varchar, uuid


_WRITERS: dict[ExportFormat, Callable[[Path, Sequence[str], Table], _Writer]] = {
    ExportFormat.csv: _CsvWriter,
    ExportFormat.jsonl: _JsonLinesWriter,
    ExportFormat.parquet: _ParquetWriter,
}


# --- the export ----------------------------------------------------------------------------------------
def _batches(cursor: psycopg.Cursor[Any], size: int) -> Iterator[list[Any]]:
    while True:
        rows = cursor.fetchmany(size)
        if not rows:
            return
        yield rows


def export_table(
    database_url: str,
    settings: Settings,
    table: str,
    start: datetime,
    end: datetime,
    export_format: ExportFormat | str,
    out: Path,
    *,
    progress: Progress | None = None,
    batch_rows: int = BATCH_ROWS,
) -> ExportResult:
    """Write the rows of ``table`` with ``start <= timestamp < end`` to ``out``."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}: one of {', '.join(TABLES)}")
    if start >= end:
        raise ValueError("start must be before end")
    export_format = ExportFormat(export_format)
    progress = progress or _Silent()
    privacy = export_privacy(settings)
    schema_table = TABLES[table]
    columns = [column.name for column in schema_table.columns]
    cleaners = _cleaners(columns, privacy)
    # A text column of ours is read as text even where a table shared with HOMEPOT keeps HOMEPOT's
    # type (device_state_history.device_id, its integer device key).
    selected = sql.SQL(", ").join(
        sql.SQL("{}::text AS {}").format(sql.Identifier(name), sql.Identifier(name))
        if isinstance(schema_table.c[name].type, String)
        else sql.Identifier(name)
        for name in columns
    )
    where = sql.SQL('WHERE "timestamp" >= %s AND "timestamp" < %s')
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    written = 0
    with psycopg.connect(libpq_url(database_url), application_name="homepot-analytics-export") as conn:
        # One snapshot for the count and the rows; nothing here writes.
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        count_query = sql.SQL("SELECT count(*) FROM {} ").format(sql.Identifier(table)) + where
        total = conn.execute(count_query, (start, end)).fetchone()
        progress.start(int(total[0]) if total else 0)
        writer = _WRITERS[export_format](partial, columns, schema_table)
        try:
            with conn.cursor(name="homepot_dataset_export") as cursor:
                cursor.itersize = batch_rows
                cursor.execute(
                    sql.SQL("SELECT {} FROM {} ").format(selected, sql.Identifier(table))
                    + where
                    + sql.SQL(' ORDER BY "timestamp", id'),
                    (start, end),
                )
                for rows in _batches(cursor, batch_rows):
                    writer.write([_clean(row, cleaners) for row in rows])
                    written += len(rows)
                    progress.advance(len(rows))
            writer.close()
        except BaseException:
            writer.close()
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, out)
    return ExportResult(table, written, out)
