"""A throwaway benchmark database on the real PostgreSQL server: created, migrated, dropped.

Mirrors ``tests/conftest.py``: the server at 127.0.0.1:5432 (trust auth) unless
HOMEPOT_ANALYTICS_BENCH_ADMIN_URL names another one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy.pool import NullPool

from exporter.migrations import migrate
from exporter.rollups.schema import ROLLUP_TABLES, stale_buckets
from exporter.schema import TABLES
from homepot_foundation.database import create_engine

ADMIN_URL = os.environ.get(
    "HOMEPOT_ANALYTICS_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

# The small table the realistic endpoint reads one row of per request.
DEVICES_TABLE = "bench_devices"
DEVICE_COUNT = 1000
# Where the commit-per-request variant writes: a copy of api_request_logs with all its indexes.
COMMIT_LOG_TABLE = "bench_commit_log"


@contextmanager
def throwaway_database() -> Iterator[str]:
    """The URL of a new database with the five tables and the endpoint's table; dropped after."""
    name = f"homepot_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rpartition("/")[0] + "/" + name
    try:
        engine = create_engine(url, poolclass=NullPool)
        migrate(engine)
        engine.dispose()
        with psycopg.connect(url) as conn:
            conn.execute(f"CREATE TABLE {COMMIT_LOG_TABLE} (LIKE api_request_logs INCLUDING ALL)")
            conn.execute(
                f"CREATE TABLE {DEVICES_TABLE} "
                "(id integer PRIMARY KEY, name text NOT NULL, state text NOT NULL)"
            )
            conn.execute(
                f"INSERT INTO {DEVICES_TABLE} SELECT i, 'device-' || i, "
                "(ARRAY['online','offline','maintenance','error'])[1 + i % 4] "
                f"FROM generate_series(1, {DEVICE_COUNT}) AS i"
            )
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def truncate_tables(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        rollups = [table.name for parts in ROLLUP_TABLES.values() for table in parts.values()]
        rollups.append(stale_buckets.name)
        conn.execute(f"TRUNCATE {', '.join([*TABLES, *rollups])} RESTART IDENTITY")


def count_service_rows(url: str, service_name: str, table: str = "api_request_logs") -> int:
    """Rows one service stored in ``table``."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {table} WHERE service_name = %s", (service_name,)
        ).fetchone()
        return int(row[0]) if row else 0


def count_rows(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            for table in TABLES
        }


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
