"""``GET /metrics``: the exporter's own counters in the Prometheus text format.

What one process did with its rows, per table: written, spooled, replayed, rejected, dropped
(with the reason) and failed export attempts, plus how full the outage spool and the export
queues are. The analytics service serves it; an instrumented service mounts the same router
(``app.include_router(query_api.metrics.router)``) to expose its own exporter's counters.
Unauthenticated, as Prometheus scrapes are: it holds counts, never row contents.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from exporter.processor import queue_usage
from exporter.schema import TABLES
from exporter.spool import spool_usage
from exporter.stats import DROP_REASONS, STATS, WORKER_RESTARTS, ExportStats

PREFIX = "homepot_analytics"

_COUNTERS = {
    "written": ("rows_written", "Rows stored in the analytics tables (replays included)."),
    "spooled": ("rows_spooled", "Rows kept in the on-disk spool because the database was unavailable."),
    "replayed": ("rows_replayed", "Spooled rows written once the database returned."),
    "rejected": ("rows_rejected", "Rows the database or the mapping refused (bad records)."),
    "merged": (
        "rows_merged",
        "Error rows deleted as a second copy of one exception in one trace (child and server span).",
    ),
    "export_failures": ("export_failures", "Failed attempts to write a batch, per table in it."),
}


class ExporterCollector(Collector):
    """Reads the live counters at scrape time; every table appears, zero or not."""

    def __init__(self, stats: ExportStats = STATS) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        snapshot = self._stats.snapshot()
        tables = sorted({*TABLES, *(table for (outcome, table, _) in snapshot if outcome != WORKER_RESTARTS)})
        for outcome, (name, documentation) in _COUNTERS.items():
            family = CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=["table"])
            for table in tables:
                family.add_metric([table], self._stats.get(outcome, table))
            yield family
        dropped = CounterMetricFamily(
            f"{PREFIX}_rows_dropped",
            "Rows lost: export queue full, spool full, no spool, or recorded after shutdown.",
            labels=["table", "reason"],
        )
        reasons = sorted({why for (outcome, _, why) in snapshot if outcome == "dropped"} | set(DROP_REASONS))
        for table in tables:
            for reason in reasons:
                dropped.add_metric([table, reason], self._stats.get("dropped", table, reason))
        yield dropped

        yield CounterMetricFamily(
            f"{PREFIX}_worker_restarts",
            "Export worker processes started again after one died (its unstored frames re-sent).",
            value=self._stats.get(WORKER_RESTARTS, ""),
        )

        usage = spool_usage().values()
        yield GaugeMetricFamily(
            f"{PREFIX}_spool_bytes",
            "Bytes of batches waiting in the outage spool.",
            value=sum(used for used, _, _ in usage),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_spool_batches",
            "Batches waiting in the outage spool.",
            value=sum(batches for _, batches, _ in usage),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_spool_limit_bytes",
            "Bytes the outage spool may use before rows are dropped.",
            value=sum(limit for _, _, limit in usage),
        )
        queued = GaugeMetricFamily(
            f"{PREFIX}_export_queue_records", "Records waiting in the export queue.", labels=["signal"]
        )
        capacity = GaugeMetricFamily(
            f"{PREFIX}_export_queue_capacity",
            "Records the export queue holds before it drops the oldest.",
            labels=["signal"],
        )
        for signal, (length, limit) in sorted(queue_usage().items()):
            queued.add_metric([signal], length)
            capacity.add_metric([signal], limit)
        yield queued
        yield capacity


registry = CollectorRegistry(auto_describe=False)
registry.register(ExporterCollector())

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """The exporter's counters per table and the spool size (Prometheus text format)."""
    # Prometheus text 0.0.4 by default; OpenMetrics when the scraper asks for it.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry), headers={"Content-Type": content_type})
