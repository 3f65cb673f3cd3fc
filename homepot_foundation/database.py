"""Where the database is: the configured URL, or an embedded PostgreSQL started on demand.

URLs may name a SQLAlchemy driver (``postgresql+psycopg2://``); the exporter talks libpq
directly and the query API uses psycopg 3 through SQLAlchemy, so both forms are normalised here.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import create_engine as sa_create_engine

from homepot_foundation.embedded_db import ensure_embedded_postgres
from homepot_foundation.settings import Settings, get_settings

logger = logging.getLogger(__name__)

_DRIVER = re.compile(r"^(postgres(?:ql)?)(\+\w+)?://")

# psycopg options of every connection the project opens. No server-side prepared statements:
# behind a pooler in transaction mode (pgbouncer before 1.21) the next transaction may run on a
# server connection that never saw the PREPARE ("prepared statement _pg3_0 does not exist").
# Little is lost: the writer COPYs, and the query API plans every request afresh anyway
# (plan_cache_mode=force_custom_plan).
CONNECT_OPTIONS: dict[str, Any] = {"prepare_threshold": None}


def resolve_database_url(settings: Settings | None = None) -> str:
    """The configured database URL, starting the embedded PostgreSQL when none is set."""
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    url = ensure_embedded_postgres(settings.data_dir / "postgres")
    logger.info("HOMEPOT_ANALYTICS_DATABASE_URL is unset: using embedded PostgreSQL at %s", url)
    return url


def libpq_url(url: str) -> str:
    """The URL as libpq (psycopg.connect) accepts it: no SQLAlchemy driver suffix."""
    return _DRIVER.sub("postgresql://", url, count=1)


def sqlalchemy_url(url: str) -> str:
    """The URL with the psycopg 3 driver SQLAlchemy should use."""
    return _DRIVER.sub("postgresql+psycopg://", url, count=1)


def create_engine(url: str, **kwargs: object) -> Engine:
    """An engine for the query API and the CLI (psycopg 3 driver, pre-ping on checkout)."""
    given: Any = kwargs.pop("connect_args", None) or {}
    connect_args = {**CONNECT_OPTIONS, **given}
    options: dict[str, object] = {"pool_pre_ping": True, "connect_args": connect_args}
    if "poolclass" not in kwargs:
        options.update(pool_size=5, max_overflow=10)
    options.update(kwargs)
    return sa_create_engine(sqlalchemy_url(url), **options)
