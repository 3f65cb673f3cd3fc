"""The query API's transactions: read-only unless asked, cancelled past the timeout, 503 on trouble."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import HTTPException
from sqlalchemy import Connection, Engine, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from exporter.schema import user_activities
from homepot_foundation.database import create_engine
from homepot_foundation.settings import Settings
from query_api.databases import Databases
from query_api.reading import transaction
from tests.query_api.rows import row


def test_reads_are_read_only(engine: Engine, settings: Settings) -> None:
    with pytest.raises(DBAPIError, match="read-only"), transaction(Databases(engine), settings) as conn:
        conn.execute(insert(user_activities).values(**row(user_activities)))


def test_writes_when_asked(engine: Engine, settings: Settings) -> None:
    with transaction(Databases(engine), settings, write=True) as conn:
        conn.execute(insert(user_activities).values(**row(user_activities)))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(user_activities)).scalar_one() == 1


def test_slow_query_is_cancelled_with_503(engine: Engine, settings: Settings) -> None:
    quick = settings.model_copy(update={"query_timeout_ms": 200})
    with pytest.raises(HTTPException) as raised, transaction(Databases(engine), quick) as conn:
        conn.execute(text("SELECT pg_sleep(5)"))
    assert raised.value.status_code == 503
    assert "HOMEPOT_ANALYTICS_QUERY_TIMEOUT_MS" in raised.value.detail
    # The timeout was local to that transaction: the pooled connection is back to normal.
    with engine.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "0"


def test_unreachable_database_is_503(settings: Settings, tmp_path: Path) -> None:
    # A port nothing listens on (loopback only).
    dead = create_engine("postgresql://postgres@127.0.0.1:9/none", connect_args={"connect_timeout": 2})
    try:
        with pytest.raises(HTTPException) as raised, transaction(Databases(dead), settings):
            pass
    finally:
        dead.dispose()
    assert raised.value.status_code == 503
    assert "unavailable" in raised.value.detail


def test_transaction_settings_are_local(engine: Engine, settings: Settings) -> None:
    def show(conn: Connection, name: str) -> str:
        return str(conn.execute(text(f"SHOW {name}")).scalar_one())

    with transaction(Databases(engine), settings, aggregate=True) as conn:
        assert show(conn, "work_mem") == "64MB"
        assert show(conn, "plan_cache_mode") == "force_custom_plan"
        assert show(conn, "TimeZone") == "UTC"
        assert show(conn, "statement_timeout") == "30s"  # the 30000 ms default
        assert show(conn, "transaction_read_only") == "on"
    with transaction(Databases(engine), settings) as conn:
        assert show(conn, "work_mem") != "64MB"
    with engine.connect() as conn:
        assert show(conn, "plan_cache_mode") == "auto"
        assert show(conn, "transaction_read_only") == "off"
