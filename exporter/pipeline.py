"""The one pipeline factory: from the process settings to the path every record takes.

``build_pipeline(settings, name)`` wires the writer (``RowWriter``), the outage spool, the
delivery, the privacy policy and the batch processors' queue and batch sizes, once. The three
ways records come in use it: ``setup_telemetry`` (spans and log records of an instrumented
service), the OTLP sink and the frontend intake (both in the analytics service). So a setting
such as ``HOMEPOT_ANALYTICS_EXPORT_QUEUE_SIZE`` or a privacy rule means the same everywhere.

An instrumented service (``HOMEPOT_ANALYTICS_EXPORT_WORKER=process``, the default) gets a
``WorkerPipeline``: its processors encode each finished record and send it to an export worker
process, which builds the in-process ``Pipeline`` (``build_in_process_pipeline``) and delivers
there. The analytics service builds that one itself: its sink answers only once rows are stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.pool import NullPool

from exporter.delivery import MAX_BACKOFF_S, MIN_BACKOFF_S, Delivery
from exporter.exporters import PostgresLogExporter, PostgresSpanExporter
from exporter.linked_processors import LinkedLogRecordProcessor, LinkedSpanProcessor
from exporter.migrations import migrate
from exporter.privacy import Privacy, privacy_from_settings
from exporter.processor import CountingBatchLogRecordProcessor, CountingBatchSpanProcessor
from exporter.spool import Spool
from exporter.worker_link import WorkerLink, WorkerStart
from exporter.writer import RowWriter
from homepot_foundation.database import create_engine, libpq_url, resolve_database_url
from homepot_foundation.settings import Settings


def _migrate(dsn: str) -> None:
    """Create or upgrade the tables (the writer's first connection)."""
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
    max_backoff_s: float = MAX_BACKOFF_S,
) -> Delivery:
    """A writer for ``database_url`` with an outage spool under ``spool_dir`` (None: no spool)."""
    writer = RowWriter(libpq_url(database_url), on_first_connect=_migrate if auto_migrate else None)
    spool = Spool(spool_dir, spool_max_bytes) if spool_dir is not None else None
    return Delivery(
        writer, spool, min_backoff_s=min(MIN_BACKOFF_S, max_backoff_s), max_backoff_s=max_backoff_s
    )


def spool_dir(settings: Settings, name: str) -> Path:
    """The spool of one producer (a service name), a directory name whatever the name holds."""
    return settings.data_dir / "spool" / re.sub(r"[^A-Za-z0-9_.-]", "_", name)


@dataclass
class Pipeline:
    """A delivery and privacy policy shared by the processors made from it."""

    settings: Settings
    delivery: Delivery
    privacy: Privacy

    def _batching(self) -> dict[str, Any]:
        queue_size = self.settings.export_queue_size
        return {
            "max_queue_size": queue_size,
            "max_export_batch_size": min(self.settings.export_batch_size, queue_size),
            "schedule_delay_millis": self.settings.export_delay_ms,
        }

    def span_processor(self) -> CountingBatchSpanProcessor:
        """A batch span processor into the tables; a full queue's drops are counted per table.
        It takes not-sampled spans too: sampling decides what a collector gets, never which
        requests and jobs are stored."""
        exporter = PostgresSpanExporter(self.delivery, self.privacy)
        return CountingBatchSpanProcessor(exporter, unsampled=True, **self._batching())

    def log_processor(self) -> CountingBatchLogRecordProcessor:
        """A batch log record processor into the tables, counted like the span processor."""
        exporter = PostgresLogExporter(self.delivery, self.privacy)
        return CountingBatchLogRecordProcessor(exporter, **self._batching())

    def shutdown(self) -> None:
        """Write what is pending (what the database cannot take stays in the spool), then stop."""
        self.delivery.shutdown()


@dataclass
class WorkerPipeline:
    """The processors of an instrumented service, feeding one export worker process."""

    settings: Settings
    link: WorkerLink
    # The worker's spool directory, watched (never written) so /metrics here reports it.
    watched_spool: Spool | None = None
    # The delivery lives in the worker; nothing in this process writes.
    delivery: None = None

    def span_processor(self) -> LinkedSpanProcessor:
        return LinkedSpanProcessor(self.link)

    def log_processor(self) -> LinkedLogRecordProcessor:
        return LinkedLogRecordProcessor(self.link)

    def shutdown(self) -> None:
        """Send what is pending, let the worker store (or spool) it, and stop the worker."""
        self.link.shutdown()


# What build_pipeline gives, and the processors either kind makes.
ServicePipeline = Pipeline | WorkerPipeline
OurSpanProcessor = CountingBatchSpanProcessor | LinkedSpanProcessor
OurLogProcessor = CountingBatchLogRecordProcessor | LinkedLogRecordProcessor


def build_pipeline(
    settings: Settings,
    name: str,
    *,
    database_url: str | None = None,
    auto_migrate: bool | None = None,
) -> ServicePipeline:
    """The pipeline of producer ``name`` (its spool directory) under ``settings``.

    ``database_url`` overrides the settings' (unset: the embedded PostgreSQL); ``auto_migrate``
    overrides ``settings.auto_migrate`` (the service migrates itself at start). With
    ``settings.export_worker == "thread"`` the records are delivered in this process's threads."""
    if settings.export_worker == "process":
        # Resolved here, not in the worker: a missing extra or an embedded PostgreSQL that cannot
        # start is the service's error at setup, and every worker it starts shares the one URL.
        url = database_url or resolve_database_url(settings)
        link = WorkerLink(WorkerStart(settings, name, url, auto_migrate))
        watched = Spool(spool_dir(settings, name), settings.spool_max_mb * 1024 * 1024)
        if watched.has_pending():
            link.start_worker()  # the last run's spool is replayed now, not with the first record
        return WorkerPipeline(settings, link, watched)
    return build_in_process_pipeline(settings, name, database_url=database_url, auto_migrate=auto_migrate)


def build_in_process_pipeline(
    settings: Settings,
    name: str,
    *,
    database_url: str | None = None,
    auto_migrate: bool | None = None,
) -> Pipeline:
    """The pipeline that maps and writes in this process (the worker's, the analytics service's)."""
    url = database_url or resolve_database_url(settings)
    delivery = create_delivery(
        url,
        spool_dir(settings, name),
        spool_max_bytes=settings.spool_max_mb * 1024 * 1024,
        max_backoff_s=settings.spool_retry_max_s,
        auto_migrate=settings.auto_migrate if auto_migrate is None else auto_migrate,
    )
    return Pipeline(settings, delivery, privacy_from_settings(settings))
