"""Writes mapped rows into PostgreSQL: one COPY per table per batch, in one transaction.

Few, large calls per batch keep the writer's thread from fighting the host's event loop for
the GIL (bench/README.md has the figures). The fast path is a plain COPY. When a batch holds rows
already stored (a replay, a collector retry) the unique ``(event_id, timestamp)`` index rejects
it, and the batch is written again through a staging table with ``ON CONFLICT DO NOTHING``,
so every row lands exactly once. A row the database refuses is isolated and counted, and the
rest of its batch is kept. On a database shared with HOMEPOT, device ids become HOMEPOT's device
keys where its table holds those (``exporter.device_keys``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import errors, sql

from exporter.containment import never_raise
from exporter.device_keys import KeyColumn, integer_device_columns, resolve_device_keys
from exporter.own_logging import exporter_logger
from exporter.planner_statistics import PartitionStatistics
from exporter.schema import TABLES, WRITE_COLUMNS
from exporter.stats import STATS, ExportStats
from exporter.trace_links import link_traces
from homepot_foundation.database import CONNECT_OPTIONS

logger = exporter_logger(__name__)
# The caller's work done while a COPY is parsed must never cost the batch being written.
_MEANWHILE_GUARD = never_raise("work done during a write failed", logger=logger)

Rows = Mapping[str, Sequence[Mapping[str, Any]]]

# Errors that mean "the database is not there right now": keep the rows and try later.
UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError)


class NotReady(psycopg.OperationalError):
    """The database answers but cannot take rows yet (tables missing, read-only after a
    failover, setup failed): an outage for the caller, not a reason to reject every row."""


# Refusals that say nothing about a row and would refuse every row: raised as NotReady.
_SYSTEMIC = (
    errors.UndefinedTable,
    errors.UndefinedColumn,
    errors.InvalidSchemaName,
    errors.InsufficientPrivilege,
    errors.ReadOnlySqlTransaction,
)

# Connections a forked child inherited: kept referenced, never closed or collected, because
# closing (or freeing) one would end the parent's session on the shared socket.
_INHERITED_CONNECTIONS: list[Any] = []

_GETTERS = {table: itemgetter(*columns) for table, columns in WRITE_COLUMNS.items()}


# The tables whose rows carry a device id: on a database shared with HOMEPOT the column may be its
# integer key (``exporter.device_keys``).
_DEVICE_TABLES = tuple(table for table, columns in WRITE_COLUMNS.items() if "device_id" in columns)

_NULLABLE = {
    table: frozenset(column.name for column in TABLES[table].columns if column.nullable)
    for table in WRITE_COLUMNS
}


def _values(table: str, row: Any) -> tuple[Any, ...]:
    """The row's values in column order. A row mapped before a nullable column existed (a batch
    spooled by an older version, replayed after the upgrade) stores NULL there; a row without a
    required value still fails (KeyError), as a batch that can never be written must."""
    try:
        values: tuple[Any, ...] = _GETTERS[table](row)
        return values
    except KeyError:
        missing = [name for name in WRITE_COLUMNS[table] if name not in row]
        if not _NULLABLE[table].issuperset(missing):
            raise
        return tuple(row.get(name) for name in WRITE_COLUMNS[table])


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
        # Per connection: the tables whose device_id is an integer key (usually none).
        self._device_keys: dict[str, KeyColumn] | None = None
        self._lock = threading.Lock()
        self._partition_statistics = PartitionStatistics()

    def write(self, rows: Rows, *, meanwhile: Callable[[], None] | None = None) -> int:
        """Store the rows; returns how many were written. Raises UNAVAILABLE errors.

        ``meanwhile()`` runs (at most once) while PostgreSQL parses the batch's largest COPY,
        whose rows are all sent: the caller's own work (mapping the next batch) then overlaps
        the database's instead of waiting for it. Its errors are logged, never the batch's."""
        batch = {table: list(table_rows) for table, table_rows in rows.items() if table_rows}
        if not batch:
            return 0
        with self._lock:
            connection = self._connect()
            try:
                batch, unknown_devices = self._resolve_device_keys(connection, batch)
                written = self._write_batch(connection, batch, meanwhile) if batch else 0
                connection.commit()  # ends the lookups' transaction when no row was left to write
                for table, count in unknown_devices.items():  # counted once the rest is stored
                    self._stats.add("rejected", table, count)
                self._partition_statistics.ensure(connection, batch)
                link_traces(connection, batch, self._stats)
                return written
            except _SYSTEMIC as error:
                self._discard_connection()
                raise NotReady(f"analytics tables not writable: {error}") from error
            except UNAVAILABLE:
                self._discard_connection()
                raise

    def connect(self) -> None:
        """Connect (first-connect setup and the device-key lookup included) now instead of at the
        first batch, e.g. before timing a stream of batches. Raises UNAVAILABLE errors."""
        with self._lock:
            connection = self._connect()
            try:
                if self._device_keys is None:
                    self._device_keys = integer_device_columns(connection, _DEVICE_TABLES)
                connection.commit()  # ends the lookup's transaction
            except UNAVAILABLE:
                self._discard_connection()
                raise

    def _resolve_device_keys(
        self, connection: psycopg.Connection[Any], batch: dict[str, list[Any]]
    ) -> tuple[dict[str, list[Any]], dict[str, int]]:
        if self._device_keys is None:
            self._device_keys = integer_device_columns(connection, _DEVICE_TABLES)
        columns = {table: column for table, column in self._device_keys.items() if table in batch}
        if not columns:
            return batch, {}
        return resolve_device_keys(connection, batch, columns)

    def _write_batch(
        self,
        connection: psycopg.Connection[Any],
        batch: dict[str, list[Any]],
        meanwhile: Callable[[], None] | None,
    ) -> int:
        try:
            return self._write_fast(connection, batch, meanwhile)
        except (*UNAVAILABLE, *_SYSTEMIC):
            raise
        except errors.UniqueViolation:
            connection.rollback()
            try:
                return self._write_idempotent(connection, batch)
            except (*UNAVAILABLE, *_SYSTEMIC):
                raise
            except psycopg.Error as error:
                logger.warning("replayed batch refused (%s); writing its rows one by one", error)
                connection.rollback()
                return self._write_row_by_row(connection, batch)
        except psycopg.Error as error:
            # A row the database refuses (a type it cannot parse, a constraint): find it.
            logger.warning("batch refused (%s); writing its rows one by one", error)
            connection.rollback()
            return self._write_row_by_row(connection, batch)

    def close(self) -> None:
        with self._lock:
            self._discard_connection()

    def forget_after_fork(self) -> None:
        """In a forked child (gunicorn --preload): the connection is the parent's; leave it
        alone and connect afresh at the next write. The lock may have been held by a parent
        thread at fork time: take a new one."""
        if self._connection is not None:
            _INHERITED_CONNECTIONS.append(self._connection)
        self._connection = None
        self._device_keys = None
        self._lock = threading.Lock()

    def _connect(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            connection = psycopg.connect(
                self._dsn,
                connect_timeout=self._connect_timeout,
                application_name="homepot-analytics-exporter",
                **CONNECT_OPTIONS,
            )
            if self._on_first_connect is not None:
                # e.g. create the tables: done from this thread, never from a request. Connected
                # first, so "database down" surfaces as psycopg's error; a failed setup is retried.
                try:
                    self._on_first_connect(self._dsn)
                except Exception as error:
                    connection.close()
                    raise NotReady(f"table setup failed: {error}") from error
                self._on_first_connect = None
            self._connection = connection
        return self._connection

    def _discard_connection(self) -> None:
        self._device_keys = None  # a new connection looks again (the schema may have changed)
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                self._connection.close()
            self._connection = None

    def _write_fast(
        self,
        connection: psycopg.Connection[Any],
        batch: dict[str, list[Any]],
        meanwhile: Callable[[], None] | None,
    ) -> int:
        # The largest table last: its COPY is the one PostgreSQL takes longest to parse after the
        # last row is sent, the time ``meanwhile`` has.
        tables = sorted(batch, key=lambda table: len(batch[table]))
        with connection.cursor() as cursor:
            for table in tables:
                with cursor.copy(_copy_statement(table)) as copy:
                    for row in batch[table]:
                        copy.write_row(_values(table, row))
                    if meanwhile is not None and table is tables[-1]:
                        with _MEANWHILE_GUARD:
                            meanwhile()
        connection.commit()
        return self._count_written(batch)

    def _write_idempotent(self, connection: psycopg.Connection[Any], batch: dict[str, list[Any]]) -> int:
        inserted_by_table: dict[str, int] = {}
        with connection.cursor() as cursor:
            for table, table_rows in batch.items():
                stage = f"_homepot_stage_{table}"
                columns = sql.SQL(", ").join(sql.Identifier(name) for name in WRITE_COLUMNS[table])
                # Only the written columns (LIKE would copy the NOT NULL of the generated id).
                create_stage = sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS"
                    " AS SELECT {} FROM {} WITH NO DATA"
                )
                cursor.execute(create_stage.format(sql.Identifier(stage), columns, sql.Identifier(table)))
                with cursor.copy(_copy_statement(table, stage)) as copy:
                    for row in table_rows:
                        copy.write_row(_values(table, row))
                cursor.execute(
                    sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                        sql.Identifier(table), columns, columns, sql.Identifier(stage)
                    )
                )
                inserted_by_table[table] = cursor.rowcount  # a replay's stored rows are not new
                logger.debug("%s: %d of %d rows were new", table, inserted_by_table[table], len(table_rows))
        connection.commit()
        for table, inserted in inserted_by_table.items():  # counted once they are really stored
            self._stats.add("written", table, inserted)
        return sum(inserted_by_table.values())

    def _write_row_by_row(self, connection: psycopg.Connection[Any], batch: dict[str, list[Any]]) -> int:
        written: dict[str, int] = {}
        rejected: dict[str, int] = {}
        with connection.cursor() as cursor:
            for table, table_rows in batch.items():
                columns = WRITE_COLUMNS[table]
                statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(sql.Identifier(name) for name in columns),
                    sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                )
                for row in table_rows:
                    try:
                        with connection.transaction():
                            cursor.execute(statement, _values(table, row))
                        # rowcount 0: stored before (a replay), not a new row.
                        if cursor.rowcount > 0:
                            written[table] = written.get(table, 0) + cursor.rowcount
                    except (*UNAVAILABLE, *_SYSTEMIC):
                        raise
                    except psycopg.Error as error:
                        rejected[table] = rejected.get(table, 0) + 1
                        logger.warning("%s: row rejected by the database: %s", table, error)
        connection.commit()
        # Counted after the commit: rows of a transaction lost mid-way are kept and counted later.
        for table, count in written.items():
            self._stats.add("written", table, count)
        for table, count in rejected.items():
            self._stats.add("rejected", table, count)
        return sum(written.values())

    def _count_written(self, batch: dict[str, list[Any]]) -> int:
        total = 0
        for table, table_rows in batch.items():
            self._stats.add("written", table, len(table_rows))
            total += len(table_rows)
        return total
