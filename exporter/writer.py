"""Writes mapped rows into PostgreSQL: one COPY per table per batch, in one transaction.

Few, large calls per batch keep the writer's thread from fighting the host's event loop for
the GIL (see NOTES.md, "Measured here"). The fast path is a plain COPY. When a batch holds rows
already stored (a replay, a collector retry) the unique ``(event_id, timestamp)`` index rejects
it, and the batch is written again through a staging table with ``ON CONFLICT DO NOTHING``,
so every row lands exactly once. A row the database refuses is isolated and counted, and the
rest of its batch is kept.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import errors, sql

from exporter.schema import WRITE_COLUMNS
from exporter.stats import STATS, ExportStats

logger = logging.getLogger(__name__)

Rows = Mapping[str, Sequence[Mapping[str, Any]]]

# Errors that mean "the database is not there right now": keep the rows and try later.
UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError)

_GETTERS = {table: itemgetter(*columns) for table, columns in WRITE_COLUMNS.items()}


def _copy_statement(table: str, target: str | None = None) -> sql.Composed:
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in WRITE_COLUMNS[table])
    return sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(target or table), columns)


class RowWriter:
    """One connection, used by one thread at a time; reconnects after the database returns."""

    def __init__(
        self,
        dsn: str,
        *,
        stats: ExportStats = STATS,
        connect_timeout: int = 5,
        on_first_connect: Callable[[str], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._on_first_connect = on_first_connect
        self._stats = stats
        self._connect_timeout = connect_timeout
        self._connection: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def write(self, rows: Rows) -> int:
        """Store the rows; returns how many were written. Raises UNAVAILABLE errors."""
        batch = {table: list(table_rows) for table, table_rows in rows.items() if table_rows}
        if not batch:
            return 0
        with self._lock:
            connection = self._connect()
            try:
                return self._write_fast(connection, batch)
            except errors.UniqueViolation:
                connection.rollback()
                return self._write_idempotent(connection, batch)
            except UNAVAILABLE:
                self._discard_connection()
                raise
            except psycopg.Error as error:
                # A row the database refuses (a type it cannot parse, a constraint): find it.
                logger.warning("batch refused (%s); writing its rows one by one", error)
                connection.rollback()
                return self._write_row_by_row(connection, batch)

    def close(self) -> None:
        with self._lock:
            self._discard_connection()

    def _connect(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            if self._on_first_connect is not None:
                # e.g. create the tables: done from this thread, never from a request.
                self._on_first_connect(self._dsn)
                self._on_first_connect = None
            self._connection = psycopg.connect(
                self._dsn,
                connect_timeout=self._connect_timeout,
                application_name="homepot-analytics-exporter",
            )
        return self._connection

    def _discard_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                self._connection.close()
            self._connection = None

    def _write_fast(self, connection: psycopg.Connection[Any], batch: dict[str, list[Any]]) -> int:
        with connection.cursor() as cursor:
            for table, table_rows in batch.items():
                getter = _GETTERS[table]
                with cursor.copy(_copy_statement(table)) as copy:
                    for row in table_rows:
                        copy.write_row(getter(row))
        connection.commit()
        return self._count_written(batch)

    def _write_idempotent(self, connection: psycopg.Connection[Any], batch: dict[str, list[Any]]) -> int:
        written = 0
        with connection.cursor() as cursor:
            for table, table_rows in batch.items():
                stage = f"_homepot_stage_{table}"
                cursor.execute(
                    sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS").format(
                        sql.Identifier(stage), sql.Identifier(table)
                    )
                )
                getter = _GETTERS[table]
                with cursor.copy(_copy_statement(table, stage)) as copy:
                    for row in table_rows:
                        copy.write_row(getter(row))
                columns = sql.SQL(", ").join(sql.Identifier(name) for name in WRITE_COLUMNS[table])
                cursor.execute(
                    sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                        sql.Identifier(table), columns, columns, sql.Identifier(stage)
                    )
                )
                inserted = max(cursor.rowcount, 0)
                written += inserted
                self._stats.add("written", table, inserted)
                logger.debug("%s: %d of %d rows were new", table, inserted, len(table_rows))
        connection.commit()
        return written

    def _write_row_by_row(self, connection: psycopg.Connection[Any], batch: dict[str, list[Any]]) -> int:
        written = 0
        with connection.cursor() as cursor:
            for table, table_rows in batch.items():
                columns = WRITE_COLUMNS[table]
                statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(sql.Identifier(name) for name in columns),
                    sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                )
                getter = _GETTERS[table]
                for row in table_rows:
                    try:
                        with connection.transaction():
                            cursor.execute(statement, getter(row))
                        written += 1
                        self._stats.add("written", table)
                    except UNAVAILABLE:
                        raise
                    except psycopg.Error as error:
                        self._stats.add("rejected", table)
                        logger.warning("%s: row rejected by the database: %s", table, error)
        connection.commit()
        return written

    def _count_written(self, batch: dict[str, list[Any]]) -> int:
        total = 0
        for table, table_rows in batch.items():
            self._stats.add("written", table, len(table_rows))
            total += len(table_rows)
        return total
