"""One page of a table's rows, newest first, by keyset on (timestamp, id).

PostgreSQL renders each row as JSON text (timestamps ISO 8601 with offset, uuids as strings,
jsonb as objects) and the page is joined from those texts: decoding every value into Python and
encoding it again cost more than the query itself on a 1000-row page.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from fastapi import Response
from sqlalchemy import ColumnElement, String, Table, Text, case, cast, func, literal, null, select

from homepot_foundation.settings import Settings
from query_api.cursor import Cursor, encode_cursor
from query_api.databases import Databases
from query_api.filters import Paging, TimeWindow, before_cursor
from query_api.reading import transaction


def _key(name: str) -> ColumnElement[str]:
    # Rendered into the SQL: a bound key would leave json_build_object's argument types unknown.
    return literal(name, String, literal_execute=True)


@lru_cache(maxsize=32)
def row_json(table: Table, jaeger_url: str | None) -> ColumnElement[str]:
    """Every column of ``table`` in table order, plus ``trace_url``, as one JSON text."""
    pairs: list[Any] = []
    for column in table.columns:
        # A text column of ours renders as text even where a table shared with HOMEPOT keeps
        # HOMEPOT's type (device_state_history.device_id, its integer device key).
        value = cast(column, Text) if isinstance(column.type, String) else column
        pairs += [_key(column.name), value]
    trace_url: ColumnElement[Any] = null()
    if jaeger_url and "trace_id" in table.c:
        base = literal(f"{jaeger_url.rstrip('/')}/trace/")
        trace_url = case((table.c.trace_id.is_not(None), base + table.c.trace_id))
    pairs += [_key("trace_url"), trace_url]
    return cast(func.json_build_object(*pairs), Text)


def json_response(payload: dict[str, Any], raw: dict[str, str]) -> Response:
    """``payload`` as JSON with the values of ``raw`` inserted verbatim (already JSON text)."""
    parts = [f"{json.dumps(key)}:{value}" for key, value in raw.items()]
    parts += [f"{json.dumps(key)}:{json.dumps(value)}" for key, value in payload.items()]
    return Response("{" + ",".join(parts) + "}", media_type="application/json")


def list_page(
    databases: Databases,
    settings: Settings,
    table: Table,
    filters: list[ColumnElement[bool]],
    window: TimeWindow,
    paging: Paging,
) -> Response:
    """``{"data": rows, "next_cursor": ...}``: at most ``paging.limit`` rows after the cursor."""
    timestamp, row_id = table.c.timestamp, table.c.id
    where = [*filters, *window.conditions(timestamp)]
    if paging.cursor is not None:
        where.append(before_cursor(timestamp, row_id, paging.cursor))
    # One row more than asked says whether another page exists without a COUNT.
    statement = (
        select(row_json(table, settings.jaeger_url), timestamp, row_id)
        .where(*where)
        .order_by(timestamp.desc(), row_id.desc())
        .limit(paging.limit + 1)
    )
    with transaction(databases, settings) as conn:
        rows = conn.execute(statement).all()
    next_cursor = None
    if len(rows) > paging.limit:
        rows = rows[: paging.limit]
        next_cursor = encode_cursor(Cursor(rows[-1][1], rows[-1][2]))
    return json_response({"next_cursor": next_cursor}, {"data": "[" + ",".join(row[0] for row in rows) + "]"})
