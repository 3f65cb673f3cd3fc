"""Where the database is: the configured URL, or an embedded PostgreSQL started on demand.

URLs may name a SQLAlchemy driver (``postgresql+psycopg2://``); the exporter talks libpq
directly and the query API uses psycopg 3 through SQLAlchemy, so both forms are normalised here.
"""

from __future__ import annotations

import logging
import re

from sqlalchemy import Engine
from sqlalchemy import create_engine as sa_create_engine

from homepot_foundation.embedded_db import ensure_embedded_postgres
from homepot_foundation.settings import Settings, get_settings

logger = logging.getLogger(__name__)

_DRIVER = re.compile(r"^(postgres(?:ql)?)(\+\w+)?://")


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
    options: dict[str, object] = {"pool_pre_ping": True}
    if "poolclass" not in kwargs:
        options.update(pool_size=5, max_overflow=10)
    options.update(kwargs)
    return sa_create_engine(sqlalchemy_url(url), **options)
