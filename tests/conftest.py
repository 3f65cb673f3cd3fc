"""Fixtures shared by every test: a throwaway database on the real PostgreSQL server.

Each pytest process creates its own database (so parallel runs never meet), migrates it once,
and drops it at the end. ``db_url`` hands a test that database with the five tables empty.
The server is the one on 127.0.0.1:5432, else a throwaway embedded PostgreSQL
(``tests/support/postgres_server.py``); HOMEPOT_ANALYTICS_TEST_ADMIN_URL names another.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from exporter.migrations import migrate
from exporter.rollups.schema import ROLLUP_TABLES, stale_buckets
from exporter.schema import TABLES
from homepot_foundation.database import create_engine
from homepot_foundation.settings import Settings
from tests.support.postgres_server import ServerForTests

# Decided when the tests start, before any test module reads ADMIN_URL.
TEST_SERVER = ServerForTests()
ADMIN_URL = TEST_SERVER.admin_url
JWT_SECRET = "test-secret-that-is-long-enough-for-hs256"


def _url_for(database: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"homepot_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _url_for(name)
    engine = create_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


# The rollups, and last the stale-bucket marks the raw rows' deletion leaves.
ROLLUP_TABLE_NAMES = [
    *(table.name for parts in ROLLUP_TABLES.values() for table in parts.values()),
    stale_buckets.name,
]


@pytest.fixture()
def db_url(database_url: str) -> str:
    """The test database with all five tables emptied, and the rollups kept from them.

    DELETE, not TRUNCATE: the tables are partitioned, and TRUNCATE replaces every partition's
    files (about a second per test); the few rows a test leaves behind delete in microseconds."""
    empty_tables(database_url)
    return database_url


def empty_tables(database_url: str) -> None:
    """Every row of the five tables and of the rollups kept beside them deleted."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in (*TABLES, *ROLLUP_TABLE_NAMES):
            conn.execute(f"DELETE FROM {table}")


@pytest.fixture()
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own data dir (spool), the test database, a JWT secret."""
    return Settings(
        database_url=db_url,
        data_dir=tmp_path / "data",
        jwt_secret=JWT_SECRET,
        export_delay_ms=50,
    )


def fetch_rows(url: str, table: str, order_by: str = "id") -> list[dict[str, object]]:
    """Every row of a table as dicts (tests compare fields by name)."""
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute(f"SELECT * FROM {table} ORDER BY {order_by}")
        return list(cursor.fetchall())


def pytest_unconfigure(config: pytest.Config) -> None:
    TEST_SERVER.stop()
