"""Ingest: rows per second our exporters write for a mixed stream, beside the COPY ceiling.

Ours: the batches a ``BatchSpanProcessor`` / ``BatchLogRecordProcessor`` would hand over
(``export_batch_size`` records each) go through ``PostgresSpanExporter.export`` and
``PostgresLogExporter.export``: mapping, then the ``Delivery``'s writer thread writes the batch
(one COPY per table, commit) while the next one is mapped; the clock stops when
``force_flush`` says every row is stored. The exporters apply the privacy policy a deployment
runs with by default (``privacy_from_settings``: pseudonymous users, truncated IPs, secrets
masked, with its per-value caches), as the OTLP sink does.
Both run in a process whose pipeline is already connected (a live service's is): the writer
connects before the clock starts, as the ceiling's connection does. Before the rounds the stream
is loaded once and the tables analysed, so the planner has the statistics autovacuum keeps in
any running deployment (the trace-link statements after each batch depend on them).
Ceiling: the very same rows, already in PostgreSQL's COPY text format (read back with
``COPY ... TO STDOUT``), loaded with one COPY per table in one transaction: what the database
takes when Python does nothing per row. Both start from empty tables, alternated over rounds.
The two stages of our pipeline are timed apart too: mapping alone (with the default privacy
policy and with none), and ``RowWriter`` alone writing the very batches the pipeline writes.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace.export import SpanExportResult
from psycopg import sql
from pydantic import SecretStr
from sqlalchemy.pool import NullPool

from bench.apps.service import BENCH_PSEUDONYM_KEY
from bench.database import count_rows, truncate_tables
from bench.workload import Stream
from exporter.delivery import Delivery
from exporter.exporters import PostgresLogExporter, PostgresSpanExporter
from exporter.linked_processors import LinkedLogRecordProcessor, LinkedSpanProcessor
from exporter.mapping import Row, log_record_to_rows, span_to_rows
from exporter.pipeline import create_delivery
from exporter.privacy import PASS_THROUGH, Privacy, privacy_from_settings
from exporter.rollups.refresh import refresh
from exporter.rollups.stale import SOURCES
from exporter.rows import RowBatch
from exporter.schema import TABLES, WRITE_COLUMNS
from exporter.stats import ExportStats
from exporter.worker_link import WorkerLink, WorkerStart
from exporter.writer import RowWriter
from homepot_foundation.database import create_engine
from homepot_foundation.settings import Settings

logger = logging.getLogger(__name__)

COPY_CHUNK_BYTES = 1 << 20


@dataclass
class IngestResult:
    records: int
    rows: int
    rows_by_table: dict[str, int]
    ours_rows_per_s: list[float] = field(default_factory=list)
    ceiling_rows_per_s: list[float] = field(default_factory=list)
    map_rows_per_s: list[float] = field(default_factory=list)
    map_plain_rows_per_s: list[float] = field(default_factory=list)
    write_rows_per_s: list[float] = field(default_factory=list)
    write_no_rollups_rows_per_s: list[float] = field(default_factory=list)
    refresh_rows_per_s: list[float] = field(default_factory=list)  # rollups brought up to date
    # What an instrumented service runs by default: records encoded here, mapped and written by
    # the export worker process.
    worker_rows_per_s: list[float] = field(default_factory=list)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _map_all(stream: Stream, privacy: Privacy) -> dict[str, list[Row]]:
    rows: dict[str, list[Row]] = {}
    for span in stream.spans:
        for table, row in span_to_rows(span, privacy):
            rows.setdefault(table, []).append(row)
    for record in stream.logs:
        for table, row in log_record_to_rows(record, privacy):
            rows.setdefault(table, []).append(row)
    return rows


Batch = tuple[str, Sequence[Any]]


def _batches(stream: Stream, batch_size: int) -> list[Batch]:
    """Span and log batches interleaved in proportion, as the two processors' threads send them."""
    span_batches, log_batches = _chunks(stream.spans, batch_size), _chunks(stream.logs, batch_size)
    order = sorted(
        [(i / len(span_batches), "span", b) for i, b in enumerate(span_batches)]
        + [(i / max(len(log_batches), 1), "log", b) for i, b in enumerate(log_batches)],
        key=lambda item: (item[0], item[1]),
    )
    return [(kind, batch) for _, kind, batch in order]


def _finish(delivery: Delivery) -> None:
    delivery.shutdown()
    if delivery.spool is not None and delivery.spool.pending():
        raise RuntimeError("rows were spooled during the ingest benchmark: the database was unavailable")


def _run_ours(url: str, batches: list[Batch], spool_dir: Path, privacy: Privacy) -> float:
    """Seconds for the exporters to take the whole stream, batch by batch, until it is stored."""
    delivery = create_delivery(url, spool_dir, auto_migrate=False)
    delivery.writer.connect()
    spans, logs = PostgresSpanExporter(delivery, privacy), PostgresLogExporter(delivery, privacy)
    started = time.perf_counter()
    for kind, batch in batches:
        ok = spans.export(batch) if kind == "span" else logs.export(batch)
        if ok not in (SpanExportResult.SUCCESS, LogRecordExportResult.SUCCESS):
            raise RuntimeError("the exporter failed during the ingest benchmark")
    if not (spans.force_flush() and logs.force_flush()):
        raise RuntimeError("the exporters did not finish writing during the ingest benchmark")
    elapsed = time.perf_counter() - started
    _finish(delivery)
    return elapsed


def _dump_copy_text(url: str) -> dict[str, bytes]:
    """Each table's written columns in COPY text format, as PostgreSQL itself renders them."""
    dumps: dict[str, bytes] = {}
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        for table in TABLES:
            # A query, not the table: a partitioned table cannot be copied from directly.
            statement = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
                sql.SQL(", ").join(map(sql.Identifier, WRITE_COLUMNS[table])), sql.Identifier(table)
            )
            with cursor.copy(statement) as copy:
                dumps[table] = b"".join(bytes(chunk) for chunk in copy)
    return dumps


def _run_ceiling(url: str, dumps: dict[str, bytes]) -> float:
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        started = time.perf_counter()
        for table, data in dumps.items():
            statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, WRITE_COLUMNS[table]))
            )
            with cursor.copy(statement) as copy:
                for start in range(0, len(data), COPY_CHUNK_BYTES):
                    copy.write(data[start : start + COPY_CHUNK_BYTES])
        conn.commit()
        return time.perf_counter() - started


def _analyze(url: str) -> None:
    """Statistics of the loaded tables; kept by the TRUNCATE before each round (the planner then
    sees what autovacuum shows it in a running deployment, not a never-analysed table)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))


def _rollup_triggers(url: str, enabled: bool) -> None:
    """The raw tables' stale-bucket triggers on or off (off: the writer as if no rollups)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for table in SOURCES:
            conn.execute(f"ALTER TABLE {table} {'ENABLE' if enabled else 'DISABLE'} TRIGGER USER")


def _run_refresh(url: str) -> float:
    """Seconds to bring the rollups up to date with the rows just written (what ``serve`` does
    every few seconds in the background)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        started = time.perf_counter()
        with engine.connect() as conn:
            refresh(conn)
        return time.perf_counter() - started
    finally:
        engine.dispose()


def _map_batches(batches: list[Batch], privacy: Privacy) -> list[dict[str, list[Row]]]:
    """Each export batch mapped as the exporters map it: what the pipeline's writer is handed."""
    mapped = []
    for kind, records in batches:
        rows = RowBatch(ExportStats())
        to_rows = span_to_rows if kind == "span" else log_record_to_rows
        for record in records:
            rows.add_from(to_rows, record, privacy)
        mapped.append(rows.rows)
    return mapped


def _run_writer_only(url: str, batches: list[dict[str, list[Row]]], *, rollups: bool = True) -> float:
    """``RowWriter`` alone on the pipeline's batches; ``rollups=False`` with the rollups'
    triggers off, to price them."""
    if not rollups:
        _rollup_triggers(url, enabled=False)
        try:
            return _run_writer_only(url, batches)
        finally:
            _rollup_triggers(url, enabled=True)
    writer = RowWriter(url)
    writer.connect()
    started = time.perf_counter()
    for batch in batches:
        writer.write(batch)
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed


def _run_via_worker(url: str, stream: Stream, data_dir: Path) -> float:
    """Seconds for the whole stream through the export worker: each record encoded as it
    would be when it ends, until the worker has stored every row. The worker is started (and
    has built its pipeline) before the clock starts; its connection opens inside it."""
    settings = Settings(
        database_url=url,
        data_dir=data_dir,
        auto_migrate=False,
        pseudonym_key=SecretStr(BENCH_PSEUDONYM_KEY),
    )
    link = WorkerLink(WorkerStart(settings, "bench-worker", url, False))
    spans, logs = LinkedSpanProcessor(link), LinkedLogRecordProcessor(link)
    link.start_worker()
    spans.on_end(stream.spans[0])  # the worker is up before the clock: this row is stored again below
    if not spans.force_flush(60_000):
        raise RuntimeError("the export worker did not start during the ingest benchmark")
    started = time.perf_counter()
    for span in stream.spans:
        spans.on_end(span)
    for record in stream.logs:
        logs.on_emit(record)
    if not spans.force_flush(120_000):
        raise RuntimeError("the export worker did not finish writing during the ingest benchmark")
    elapsed = time.perf_counter() - started
    link.shutdown(30)
    return elapsed


def run_ingest(url: str, stream: Stream, rounds: int, batch_size: int | None = None) -> IngestResult:
    """Alternate ours, the ceiling and the diagnostics over ``rounds`` on empty tables."""
    batch_size = batch_size or Settings().export_batch_size
    # The default policy of a deployment; a fixed key, so no key file is written.
    privacy = privacy_from_settings(Settings(pseudonym_key=SecretStr(BENCH_PSEUDONYM_KEY)))
    mapped = _map_all(stream, privacy)
    expected = {table: len(rows) for table, rows in mapped.items()}
    total = sum(expected.values())
    result = IngestResult(len(stream.spans) + len(stream.logs), total, expected)
    batches = _batches(stream, batch_size)
    write_batches = _map_batches(batches, privacy)

    def check_stored(what: str) -> None:
        stored = {table: n for table, n in count_rows(url).items() if n}
        if stored != expected:
            raise RuntimeError(f"{what} stored {stored}, expected {expected}")

    with tempfile.TemporaryDirectory(prefix="homepot-bench-spool-") as spool:
        # Once, untimed: the ceiling's COPY text, and the statistics a running deployment has.
        truncate_tables(url)
        _run_ours(url, batches, Path(spool), privacy)
        check_stored("ingest")
        dumps = _dump_copy_text(url)
        _analyze(url)
        for round_index in range(rounds):
            truncate_tables(url)
            result.ours_rows_per_s.append(total / _run_ours(url, batches, Path(spool), privacy))
            check_stored("ingest")
            truncate_tables(url)
            result.worker_rows_per_s.append(total / _run_via_worker(url, stream, Path(spool)))
            check_stored("ingest through the export worker")
            truncate_tables(url)
            result.ceiling_rows_per_s.append(total / _run_ceiling(url, dumps))
            truncate_tables(url)
            result.write_rows_per_s.append(total / _run_writer_only(url, write_batches))
            result.refresh_rows_per_s.append(total / _run_refresh(url))
            truncate_tables(url)
            result.write_no_rollups_rows_per_s.append(
                total / _run_writer_only(url, write_batches, rollups=False)
            )
            for policy, samples in (
                (privacy, result.map_rows_per_s),
                (PASS_THROUGH, result.map_plain_rows_per_s),
            ):
                started = time.perf_counter()
                _map_all(stream, policy)
                samples.append(total / (time.perf_counter() - started))
            logger.info(
                "ingest round %d: ours %.0f rows/s, ceiling %.0f rows/s",
                round_index + 1,
                result.ours_rows_per_s[-1],
                result.ceiling_rows_per_s[-1],
            )
    truncate_tables(url)
    return result


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0
