"""The service's two ways into PostgreSQL: the primary for every write, the read URL for reads.

With ``HOMEPOT_ANALYTICS_READ_DATABASE_URL`` unset both are the primary's one engine. Set (a
streaming replica), query and dashboard reads go there, checked for lag first
(``replica_lag.py``), while the sink, intake, resolve/reopen, purge and rollup upkeep write to
the primary: ``query_api.reading.transaction`` picks the engine from ``write``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from homepot_foundation.database import create_engine
from homepot_foundation.settings import Settings
from query_api.replica_lag import ReplicaLagCheck


@dataclass(frozen=True)
class Databases:
    primary: Engine
    replica: Engine | None = None
    replica_check: ReplicaLagCheck | None = None

    @classmethod
    def connect(cls, settings: Settings, primary_url: str) -> Databases:
        primary = create_engine(primary_url)
        if not settings.read_database_url:
            return cls(primary)
        # Every transaction read-only from the start: a standby refuses the READ WRITE that a
        # connection reset after a read-only transaction would otherwise ask for next time.
        replica = create_engine(settings.read_database_url).execution_options(postgresql_readonly=True)
        return cls(primary, replica, ReplicaLagCheck(replica, settings.read_max_lag_ms))

    def for_writes(self) -> Engine:
        return self.primary

    def for_reads(self) -> Engine:
        """The engine reads use; raises ReplicaUnavailable while the replica may not answer."""
        if self.replica is None:
            return self.primary
        if self.replica_check is not None:
            self.replica_check.ensure_fresh()
        return self.replica

    def dispose(self) -> None:
        self.primary.dispose()
        if self.replica is not None:
            self.replica.dispose()
