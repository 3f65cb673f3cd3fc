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
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import OperationalError

from homepot_foundation.settings import Settings
from query_api.databases import Databases
from query_api.replica_lag import ReplicaUnavailable

logger = logging.getLogger(__name__)

# Sort memory of a summary query: a day of 333k request rows sorts in memory at 64 MB and spills
# to disk at PostgreSQL's default 4 MB (3x slower, measured with bench/query_bench.py).
SUMMARY_WORK_MEM = "64MB"

# Seconds a client should wait before asking again when the database (or the replica) cannot answer.
RETRY_AFTER_S = 5


@contextmanager
def transaction(
    databases: Databases, settings: Settings, *, write: bool = False, aggregate: bool = False
) -> Iterator[Connection]:
    """A connection inside one transaction; database trouble becomes a 503 with a reason.

    Writes go to the primary, reads to the read replica when one is configured (a replica that
    is down or too far behind is a 503 too, with ``Retry-After``, never a read of stale rows).

    ``aggregate``: the transaction sorts and groups a whole window (a summary), so its sorts get
    SUMMARY_WORK_MEM instead of spilling to disk.
    """
    options = {
        "statement_timeout": str(settings.query_timeout_ms),
        # Timestamps PostgreSQL renders as JSON carry +00:00 whatever the server's zone.
        "TimeZone": "UTC",
        # A plan per request: a cached generic plan cannot see how selective this request's
        # window and filters are, and picked plans 80 times slower on skewed columns (bench/).
        "plan_cache_mode": "force_custom_plan",
    }
    if aggregate:
        options["work_mem"] = SUMMARY_WORK_MEM
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    try:
        engine = databases.for_writes() if write else databases.for_reads()
    except ReplicaUnavailable as problem:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(problem), headers=retry) from None
    try:
        with engine.connect() as conn:
            if not write:
                conn = conn.execution_options(postgresql_readonly=True)
            with conn.begin():
                # set_config rather than SET: it takes bound parameters; true = this transaction only.
                conn.execute(select(*(func.set_config(name, value, True) for name, value in options.items())))
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
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="The analytics database is unavailable.",
            headers=retry,
        ) from None
