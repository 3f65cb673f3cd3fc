"""PostgreSQL exporters for OpenTelemetry: spans and log records into the five analytics tables."""

from __future__ import annotations

from pathlib import Path

from exporter.delivery import Delivery
from exporter.log_exporter import PostgresLogExporter
from exporter.span_exporter import PostgresSpanExporter
from exporter.spool import Spool
from exporter.writer import RowWriter

__all__ = [
    "Delivery",
    "PostgresLogExporter",
    "PostgresSpanExporter",
    "RowWriter",
    "Spool",
    "create_delivery",
]


def _migrate(dsn: str) -> None:
    from sqlalchemy.pool import NullPool

    from exporter.migrations import migrate
    from homepot_foundation.database import create_engine

    engine = create_engine(dsn, poolclass=NullPool)
    try:
        migrate(engine)
    finally:
        engine.dispose()


def create_delivery(
    database_url: str,
    spool_dir: Path | None = None,
    *,
    spool_max_bytes: int = 512 * 1024 * 1024,
    auto_migrate: bool = True,
) -> Delivery:
    """A writer for ``database_url`` with an outage spool under ``spool_dir``."""
    from homepot_foundation.database import libpq_url

    writer = RowWriter(libpq_url(database_url), on_first_connect=_migrate if auto_migrate else None)
    spool = Spool(spool_dir, spool_max_bytes) if spool_dir is not None else None
    return Delivery(writer, spool)
