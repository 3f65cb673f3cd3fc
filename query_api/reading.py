"""Transactions for the query API: read-only by default, bounded by a statement timeout.

A query that runs longer than ``query_timeout_ms`` (a summary over years of rows, say) is
cancelled by PostgreSQL and answered with 503, so one request cannot hold the database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException, status
from psycopg.errors import QueryCanceled
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import OperationalError

from homepot_analytics.settings import Settings

logger = logging.getLogger(__name__)


@contextmanager
def transaction(engine: Engine, settings: Settings, *, write: bool = False) -> Iterator[Connection]:
    """A connection inside one transaction; database trouble becomes a 503 with a reason."""
    try:
        with engine.connect() as conn:
            if not write:
                conn = conn.execution_options(postgresql_readonly=True)
            with conn.begin():
                # set_config rather than SET: it takes bound parameters; true = this transaction only.
                # UTC: timestamps PostgreSQL renders as JSON carry +00:00 whatever the server's zone.
                conn.execute(
                    select(
                        func.set_config("statement_timeout", str(settings.query_timeout_ms), True),
                        func.set_config("TimeZone", "UTC", True),
                    )
                )
                yield conn
    except OperationalError as error:
        if isinstance(error.orig, QueryCanceled):
            raise HTTPException(
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                detail=f"The query ran longer than {settings.query_timeout_ms} ms "
                "(HOMEPOT_ANALYTICS_QUERY_TIMEOUT_MS): narrow the time window or add filters.",
            ) from None
        logger.warning("analytics query failed: %s", error)
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE, detail="The analytics database is unavailable."
        ) from None
