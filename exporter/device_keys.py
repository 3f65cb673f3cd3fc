"""Device ids written into a table whose ``device_id`` is another system's integer key.

On a database shared with HOMEPOT, ``device_state_history.device_id`` is HOMEPOT's integer
foreign key to ``devices.id``: HOMEPOT joins, filters and deletes by it, so the adoption keeps it
(``exporter.partition_conversion``). The rows the exporter maps carry a device's own id, the
text HOMEPOT keeps in ``devices.device_id`` ("pos-terminal-001"). Before such rows are written,
each id is looked up there and the device's key written instead; an id that is a number is
taken as the key itself when no device has it as its text id. A row whose device is not found
cannot be stored in that table (the key is required and must exist): it is rejected and counted,
as a row the database refuses would be. Tables whose ``device_id`` is text are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from exporter.own_logging import exporter_logger

logger = exporter_logger(__name__)

COLUMN = "device_id"
_MAX_KEY = 2**63 - 1


@dataclass(frozen=True)
class KeyColumn:
    """A table's integer ``device_id``, and where its keys come from."""

    table: str
    referenced: str | None  # the table its foreign key points to (catalog-quoted), if any
    key: str | None  # the referenced column
    has_text_ids: bool  # whether the referenced table has a device_id column to look ids up in


def integer_device_columns(
    connection: psycopg.Connection[Any], tables: Sequence[str]
) -> dict[str, KeyColumn]:
    """The tables among ``tables`` whose ``device_id`` column is a number, not text."""
    rows = connection.execute(
        """
        SELECT c.relname, f.confrelid::regclass::text,
               (SELECT k.attname FROM pg_attribute k
                 WHERE k.attrelid = f.confrelid AND k.attnum = f.confkey[1]),
               EXISTS (SELECT 1 FROM pg_attribute d
                 WHERE d.attrelid = f.confrelid AND d.attname = %(column)s AND NOT d.attisdropped)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_constraint f
          ON f.conrelid = a.attrelid AND f.contype = 'f' AND f.conkey = ARRAY[a.attnum]
        WHERE a.attrelid IN (SELECT to_regclass(name) FROM unnest(%(tables)s::text[]) AS name)
          AND a.attname = %(column)s AND NOT a.attisdropped AND t.typcategory = 'N'
        """,
        {"tables": list(tables), "column": COLUMN},
    ).fetchall()
    return {
        table: KeyColumn(table, referenced, key, bool(has_text_ids))
        for table, referenced, key, has_text_ids in rows
    }


def _as_key(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() and int(value) <= _MAX_KEY else None


def _keys(connection: psycopg.Connection[Any], column: KeyColumn, ids: set[str]) -> dict[str, int]:
    """Each id's key, for the ids that have one."""
    if column.referenced is None or column.key is None:
        # No foreign key: a number is the key (the database checks nothing more).
        return {value: number for value in ids if (number := _as_key(value)) is not None}
    referenced, key = sql.SQL(column.referenced), sql.Identifier(column.key)
    found: dict[str, int] = {}
    if column.has_text_ids:
        statement = sql.SQL("SELECT {}::text, {} FROM {} WHERE {}::text = ANY(%s)").format(
            sql.Identifier(COLUMN), key, referenced, sql.Identifier(COLUMN)
        )
        found.update(connection.execute(statement, (sorted(ids),)).fetchall())
    numbers = {value: number for value in ids - found.keys() if (number := _as_key(value)) is not None}
    if numbers:
        statement = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s::bigint[])").format(key, referenced, key)
        existing = {number for (number,) in connection.execute(statement, (sorted(set(numbers.values())),))}
        found.update({value: number for value, number in numbers.items() if number in existing})
    return found


def resolve_device_keys(
    connection: psycopg.Connection[Any],
    batch: dict[str, list[Any]],
    columns: Mapping[str, KeyColumn],
) -> tuple[dict[str, list[Any]], dict[str, int]]:
    """The batch with each device id of ``columns``' tables replaced by its key, without the
    rows whose device has none; and how many rows of each table were left out."""
    resolved = dict(batch)
    rejected: dict[str, int] = {}
    for table, column in columns.items():
        rows = batch.get(table)
        if not rows:
            continue
        ids = {str(row[COLUMN]) for row in rows if row.get(COLUMN) is not None}
        keys = _keys(connection, column, ids) if ids else {}
        kept: list[Any] = []
        missing: set[str] = set()
        for row in rows:
            value = row.get(COLUMN)
            if value is None:
                kept.append(row)  # the database says whether the table takes it
            elif (key := keys.get(str(value))) is not None:
                kept.append({**row, COLUMN: key})
            else:
                missing.add(str(value))
        if missing:
            rejected[table] = len(rows) - len(kept)
            logger.warning(
                "%s: %d rows rejected: device id not found in %s (%s)",
                table,
                rejected[table],
                column.referenced or "any key",
                ", ".join(sorted(missing)[:5]),
            )
        resolved[table] = kept
    return {table: rows for table, rows in resolved.items() if rows}, rejected
