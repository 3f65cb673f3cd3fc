"""Whether the read replica may answer: reachable, and no further behind the primary than allowed.

A replica that is behind shows rows the primary already changed (an error resolved a minute ago
still open); past ``read_max_lag_ms`` the query API answers 503 with ``Retry-After`` instead.
The check is one cheap query, made at most once a second per process and shared by requests.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

logger = logging.getLogger(__name__)

# How long one check's answer stands: a burst of reads costs one round trip, not one each.
CHECK_INTERVAL_S = 1.0

# Lag in milliseconds. A standby that has replayed everything it received is not behind, however
# long ago the last commit was (an idle primary sends nothing); a server that is not in recovery
# (a primary given as the read URL, or a promoted standby) is never behind.
_LAG_MS = text(
    "SELECT CASE WHEN NOT pg_is_in_recovery()"
    " OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    " ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000, 0) END"
)


class ReplicaUnavailable(Exception):
    """The replica cannot answer reads now; the message says why."""


class ReplicaLagCheck:
    """Raises ReplicaUnavailable from ``ensure_fresh`` while the replica is down or too far behind."""

    def __init__(self, engine: Engine, max_lag_ms: int, interval_s: float = CHECK_INTERVAL_S) -> None:
        self._engine = engine
        self._max_lag_ms = max_lag_ms
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._checked_at = -float("inf")
        self._problem: str | None = None

    def ensure_fresh(self) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at >= self._interval_s:
                self._problem = self._find_problem()
                self._checked_at = time.monotonic()
            problem = self._problem
        if problem is not None:
            raise ReplicaUnavailable(problem)

    def _find_problem(self) -> str | None:
        try:
            with self._engine.connect() as conn:
                lag_ms = float(conn.execute(_LAG_MS).scalar_one())
        except SQLAlchemyError as error:
            logger.warning("read replica check failed: %s", error)
            return "The analytics read replica is unavailable."
        if lag_ms > self._max_lag_ms:
            return (
                f"The analytics read replica is {lag_ms / 1000:.1f} s behind the primary "
                f"(more than HOMEPOT_ANALYTICS_READ_MAX_LAG_MS={self._max_lag_ms})."
            )
        return None
