"""One page of a table's rows, newest first, by keyset on (timestamp, id)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, select

from homepot_analytics.settings import Settings
from query_api.cursor import Cursor, encode_cursor
from query_api.filters import Paging, TimeWindow, before_cursor
from query_api.reading import transaction


def row_to_json(row: Mapping[str, Any], jaeger_url: str | None) -> dict[str, Any]:
    """A row as the API returns it: timestamps in UTC, a Jaeger link when the row has a trace."""
    out = {
        name: value.astimezone(UTC) if isinstance(value, datetime) else value for name, value in row.items()
    }
    if jaeger_url and out.get("trace_id"):
        out["trace_url"] = f"{jaeger_url.rstrip('/')}/trace/{out['trace_id']}"
    return out


def list_page(
    engine: Engine,
    settings: Settings,
    table: Table,
    filters: list[ColumnElement[bool]],
    window: TimeWindow,
    paging: Paging,
) -> dict[str, Any]:
    """``{"data": rows, "next_cursor": ...}``: at most ``paging.limit`` rows after the cursor."""
    timestamp, row_id = table.c.timestamp, table.c.id
    where = [*filters, *window.conditions(timestamp)]
    if paging.cursor is not None:
        where.append(before_cursor(timestamp, row_id, paging.cursor))
    # One row more than asked says whether another page exists without a COUNT.
    statement = select(table).where(*where).order_by(timestamp.desc(), row_id.desc()).limit(paging.limit + 1)
    with transaction(engine, settings) as conn:
        rows = [dict(row) for row in conn.execute(statement).mappings()]
    next_cursor = None
    if len(rows) > paging.limit:
        rows = rows[: paging.limit]
        last = rows[-1]
        next_cursor = encode_cursor(Cursor(last["timestamp"], last["id"]))
    return {"data": [row_to_json(row, settings.jaeger_url) for row in rows], "next_cursor": next_cursor}
