"""A database of its own for tests that change the schema or drop partitions (migration,
retention): the shared test database stays as the other tests expect it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from tests.conftest import ADMIN_URL, _url_for


@contextmanager
def throwaway_database(prefix: str = "homepot_p6") -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _url_for(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def empty_tables(url: str) -> None:
    """Empty the five tables and restart their ids: DELETE, because TRUNCATE replaces the files
    of every partition and index (about a second for a few dozen partitions; this: milliseconds)."""
    from exporter.schema import TABLES

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("; ".join(f"DELETE FROM {t}; ALTER TABLE {t} ALTER COLUMN id RESTART" for t in TABLES))
