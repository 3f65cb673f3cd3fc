"""The rows of one trace joined after each batch (exporter/trace_links.py), on the real PostgreSQL.

Spans come from the real OpenTelemetry SDK: a SERVER span for ``GET /orders/7`` answering 500,
with INTERNAL child spans that record the exception. Each test decides which spans go in which
batch, since a child span usually ends (and is exported) before its server span.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from exporter import conventions as c
from exporter.exporters import PostgresSpanExporter
from exporter.mapping import Row, log_record_to_rows, span_to_rows
from exporter.pipeline import create_delivery
from exporter.privacy import PASS_THROUGH
from exporter.stats import ExportStats
from exporter.trace_links import PENDING_JOINS
from exporter.writer import RowWriter
from tests.conftest import fetch_rows

SERVICE = "shop-api"
OTHER_SERVICE = "order-worker"
REQUEST_ATTRIBUTES: dict[str, Any] = {
    "http.request.method": "GET",
    "url.path": "/orders/7",
    "http.route": "/orders/{id}",
    "http.response.status_code": 500,
    "enduser.id": "u-1",
}


@dataclass
class Recorder:
    """A tracer of one service and the spans it finished."""

    tracer: trace.Tracer
    exporter: InMemorySpanExporter

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()


def _recorder(service: str) -> Iterator[Recorder]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Recorder(provider.get_tracer("tests.trace_links"), exporter)
    provider.shutdown()


@pytest.fixture
def shop() -> Iterator[Recorder]:
    yield from _recorder(SERVICE)


@pytest.fixture
def worker() -> Iterator[Recorder]:
    yield from _recorder(OTHER_SERVICE)


@pytest.fixture
def stats() -> ExportStats:
    return ExportStats()


@pytest.fixture
def writer(db_url: str, stats: ExportStats) -> Iterator[RowWriter]:
    writer = RowWriter(db_url, stats=stats)
    yield writer
    writer.close()


@dataclass
class Trace:
    server: ReadableSpan
    children: list[ReadableSpan]

    @property
    def child(self) -> ReadableSpan:
        (child,) = self.children
        return child


def failing_request(
    shop: Recorder,
    *errors: tuple[Recorder, BaseException],
    server_error: BaseException | None = None,
) -> Trace:
    """``GET /orders/7`` answering 500; each of ``errors`` is a child span (of that recorder's
    service) that records its exception; ``server_error`` is recorded on the server span too."""
    with shop.tracer.start_as_current_span(
        "GET /orders/{id}",
        kind=SpanKind.SERVER,
        attributes=REQUEST_ATTRIBUTES,
        record_exception=False,
        set_status_on_exception=False,
    ) as server:
        for recorder, error in errors:
            with recorder.tracer.start_as_current_span(
                "load order", kind=SpanKind.INTERNAL, record_exception=False
            ) as child:
                child.record_exception(error)
                child.set_status(Status(StatusCode.ERROR))
        if server_error is not None:
            server.record_exception(server_error)
        server.set_status(Status(StatusCode.ERROR))
    server_id = server.get_span_context().span_id
    recorders = {id(recorder): recorder for recorder in (shop, *(recorder for recorder, _ in errors))}
    spans = [span for recorder in recorders.values() for span in recorder.finished()]
    (finished_server,) = [s for s in spans if s.context.span_id == server_id]
    children = sorted((s for s in spans if s.context.span_id != server_id), key=lambda s: s.start_time or 0)
    assert len(children) == len(errors)
    return Trace(finished_server, children)


def rows_of(*records: ReadableSpan | ReadableLogRecord) -> dict[str, list[Row]]:
    batch: dict[str, list[Row]] = {}
    for record in records:
        mapped = span_to_rows(record) if isinstance(record, ReadableSpan) else log_record_to_rows(record)
        for table, row in mapped:
            batch.setdefault(table, []).append(row)
    return batch


def write_batches(writer: RowWriter, *batches: Sequence[ReadableSpan | ReadableLogRecord]) -> None:
    for batch in batches:
        writer.write(rows_of(*batch))


def hex_trace(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def hex_span(span: ReadableSpan) -> str:
    return format(span.context.span_id, "016x")


def only_request(db_url: str) -> dict[str, Any]:
    (request,) = fetch_rows(db_url, "api_request_logs")
    return request


def errors_of(db_url: str) -> list[dict[str, Any]]:
    return fetch_rows(db_url, "error_logs", order_by="timestamp")


def assert_joined_to_request(error: dict[str, Any], request: dict[str, Any], child: ReadableSpan) -> None:
    assert error["error_code"] == "ValueError"
    assert error["error_message"] == "boom"
    assert error["endpoint"] == "/orders/7"
    assert error["user_id"] == request["user_id"] == "u-1"
    assert error["trace_id"] == request["trace_id"] == hex_trace(child)
    assert error["span_id"] == hex_span(child)
    assert error["service_name"] == request["service_name"] == SERVICE
    assert error["context"]["span_kind"] == "internal"
    assert request["error_message"] == "ValueError: boom"


# --- 1 and 2: a child's exception, before or after its request -------------------------------


def test_mapped_alone_a_child_error_has_no_endpoint_and_the_request_only_its_reason(
    shop: Recorder,
) -> None:
    """What the join has to fix: the rows as the mapping makes them, span by span."""
    spans = failing_request(shop, (shop, ValueError("boom")))
    (error,) = rows_of(spans.child)["error_logs"]
    (request,) = rows_of(spans.server)["api_request_logs"]
    assert error["endpoint"] is None and error["user_id"] is None
    assert request["error_message"] == "Internal Server Error"
    assert "error_logs" not in rows_of(spans.server)


@pytest.mark.parametrize("order", ["child_first", "server_first"])
def test_a_child_error_and_its_request_are_joined_in_either_order(
    writer: RowWriter, db_url: str, stats: ExportStats, shop: Recorder, order: str
) -> None:
    spans = failing_request(shop, (shop, ValueError("boom")))
    batches = [[spans.child], [spans.server]]
    write_batches(writer, *(batches if order == "child_first" else reversed(batches)))
    request = only_request(db_url)
    (error,) = errors_of(db_url)
    assert_joined_to_request(error, request, spans.child)
    assert stats.get("merged", "error_logs") == 0


@pytest.mark.parametrize("order", ["child_first", "server_first"])
def test_the_span_exporter_joins_batches_it_was_given_one_after_the_other(
    db_url: str, shop: Recorder, order: str
) -> None:
    spans = failing_request(shop, (shop, ValueError("boom")))
    batches = [[spans.child], [spans.server]]
    delivery = create_delivery(db_url, None)
    exporter = PostgresSpanExporter(delivery, PASS_THROUGH)
    try:
        for batch in batches if order == "child_first" else reversed(batches):
            exporter.export(batch)
            assert exporter.force_flush()  # one written batch per export, in this order
    finally:
        delivery.shutdown()
    request = only_request(db_url)
    (error,) = errors_of(db_url)
    assert_joined_to_request(error, request, spans.child)


def test_a_child_error_in_the_batch_of_its_request_is_joined(
    writer: RowWriter, db_url: str, shop: Recorder
) -> None:
    spans = failing_request(shop, (shop, ValueError("boom")))
    write_batches(writer, [spans.child, spans.server])
    (error,) = errors_of(db_url)
    assert_joined_to_request(error, only_request(db_url), spans.child)


# --- 3: one exception recorded on the child and again on the server span ---------------------


@pytest.mark.parametrize("batching", ["one_batch", "child_first", "server_first"])
def test_one_exception_on_a_child_and_its_server_span_is_kept_once_as_the_childs(
    writer: RowWriter, db_url: str, stats: ExportStats, shop: Recorder, batching: str
) -> None:
    boom = ValueError("boom")
    spans = failing_request(shop, (shop, boom), server_error=boom)
    assert len(rows_of(spans.child, spans.server)["error_logs"]) == 2  # two copies mapped
    batches = {
        "one_batch": [[spans.child, spans.server]],
        "child_first": [[spans.child], [spans.server]],
        "server_first": [[spans.server], [spans.child]],
    }[batching]
    write_batches(writer, *batches)
    request = only_request(db_url)
    (error,) = errors_of(db_url)
    assert_joined_to_request(error, request, spans.child)
    assert stats.get("written", "error_logs") == 2
    assert stats.get("merged", "error_logs") == 1


def test_writing_a_merged_batch_again_keeps_one_copy(
    writer: RowWriter, db_url: str, stats: ExportStats, shop: Recorder
) -> None:
    """A replay (spool, collector retry) brings the deleted copy back once more: merged again."""
    boom = ValueError("boom")
    spans = failing_request(shop, (shop, boom), server_error=boom)
    write_batches(writer, [spans.child, spans.server], [spans.child, spans.server])
    (error,) = errors_of(db_url)
    assert error["span_id"] == hex_span(spans.child)
    assert stats.get("written", "error_logs") - stats.get("merged", "error_logs") == 1


# --- 4: two exceptions in one trace ------------------------------------------------------------


@pytest.mark.parametrize("batching", ["one_batch", "one_batch_each"])
def test_two_different_exceptions_in_one_trace_are_both_kept(
    writer: RowWriter, db_url: str, stats: ExportStats, shop: Recorder, batching: str
) -> None:
    spans = failing_request(shop, (shop, ValueError("boom")), (shop, ValueError("bang")))
    first, second = spans.children
    if batching == "one_batch":
        write_batches(writer, [first, second, spans.server])
    else:
        write_batches(writer, [first], [second], [spans.server])
    request = only_request(db_url)
    errors = errors_of(db_url)
    assert [e["error_message"] for e in errors] == ["boom", "bang"]
    assert [e["span_id"] for e in errors] == [hex_span(first), hex_span(second)]
    for error in errors:
        assert error["endpoint"] == "/orders/7" and error["user_id"] == request["user_id"]
    assert request["error_message"] == "ValueError: boom"  # the first error of the trace
    assert stats.get("merged", "error_logs") == 0


# --- 5: services do not lend to each other --------------------------------------------------------


@pytest.mark.parametrize("order", ["errors_first", "request_first"])
def test_a_request_lends_nothing_to_an_error_of_another_service(
    writer: RowWriter, db_url: str, shop: Recorder, worker: Recorder, order: str
) -> None:
    # The other service's error comes first: the request must not take it as "the first error".
    spans = failing_request(shop, (worker, KeyError("elsewhere")), (shop, ValueError("boom")))
    foreign, own = spans.children
    assert foreign.resource.attributes["service.name"] == OTHER_SERVICE
    assert hex_trace(foreign) == hex_trace(spans.server)
    batches = [[foreign, own], [spans.server]]
    write_batches(writer, *(batches if order == "errors_first" else reversed(batches)))
    request = only_request(db_url)
    by_service = {e["service_name"]: e for e in errors_of(db_url)}
    assert set(by_service) == {SERVICE, OTHER_SERVICE}
    assert by_service[OTHER_SERVICE]["endpoint"] is None
    assert by_service[OTHER_SERVICE]["user_id"] is None
    assert by_service[SERVICE]["endpoint"] == "/orders/7"
    assert request["error_message"] == "ValueError: boom"


def test_a_request_of_another_service_alone_leaves_the_error_as_it_was(
    writer: RowWriter, db_url: str, shop: Recorder, worker: Recorder
) -> None:
    spans = failing_request(shop, (worker, ValueError("boom")))
    write_batches(writer, [spans.child], [spans.server])
    (error,) = errors_of(db_url)
    assert error["service_name"] == OTHER_SERVICE
    assert error["endpoint"] is None and error["user_id"] is None
    assert only_request(db_url)["error_message"] == "Internal Server Error"


# --- 6: a plain log record at ERROR --------------------------------------------------------------


def error_log_in(span: ReadableSpan, body: str) -> ReadableLogRecord:
    record = LogRecord(
        timestamp=time.time_ns(),
        trace_id=span.context.trace_id,
        span_id=span.context.span_id,
        severity_number=SeverityNumber.ERROR,
        severity_text="ERROR",
        body=body,
    )
    return ReadableLogRecord(log_record=record, resource=Resource({"service.name": SERVICE}))


def test_a_plain_error_log_after_its_request_takes_the_endpoint_and_user(
    writer: RowWriter, db_url: str, shop: Recorder
) -> None:
    spans = failing_request(shop)
    log = error_log_in(spans.server, "disk almost full")
    (mapped,) = log_record_to_rows(log)
    assert mapped[0] == "error_logs" and mapped[1]["endpoint"] is None
    write_batches(writer, [spans.server], [log])
    request = only_request(db_url)
    (error,) = errors_of(db_url)
    assert error["error_message"] == "disk almost full"
    assert error["endpoint"] == "/orders/7"
    assert error["user_id"] == request["user_id"] == "u-1"
    assert error["trace_id"] == request["trace_id"]
    assert error["span_id"] == request["span_id"] == hex_span(spans.server)
    assert error["error_code"] is None
    # Without an error code the log line is not an exception to show on the request.
    assert request["error_message"] == "Internal Server Error"


# --- 7: a job's exception ----------------------------------------------------------------------


def test_a_job_spans_exception_is_its_outcome_not_an_error_row(
    writer: RowWriter, db_url: str, shop: Recorder
) -> None:
    with shop.tracer.start_as_current_span(
        "job restart",
        kind=SpanKind.INTERNAL,
        attributes={c.JOB_ID: "job-7", c.JOB_TYPE: "restart"},
        record_exception=False,
        set_status_on_exception=False,
    ) as job:
        job.record_exception(RuntimeError("device offline"))
        job.set_status(Status(StatusCode.ERROR))
    (span,) = shop.finished()
    assert c.JOB_ID == "homepot.job.id"
    write_batches(writer, [span])
    assert errors_of(db_url) == []
    (outcome,) = fetch_rows(db_url, "job_outcomes")
    assert outcome["job_id"] == "job-7"
    assert outcome["status"] == "failed"
    assert outcome["error_code"] == "RuntimeError"
    assert outcome["error_message"] == "device offline"


# --- several requests in one trace, one error raised twice ----------------------------------------


def _request_with_child_error(
    shop: Recorder, caller: Context, path: str, user: str, error: BaseException
) -> None:
    attributes = {**REQUEST_ATTRIBUTES, "url.path": path, "http.route": path, "enduser.id": user}
    with shop.tracer.start_as_current_span(
        "GET", context=caller, kind=SpanKind.SERVER, attributes=attributes
    ) as server:
        with shop.tracer.start_as_current_span(
            "handler", kind=SpanKind.INTERNAL, record_exception=False
        ) as child:
            child.record_exception(error)
        server.set_status(Status(StatusCode.ERROR))


def test_two_requests_of_one_service_in_one_trace_keep_their_own_errors(
    writer: RowWriter, db_url: str, shop: Recorder
) -> None:
    """A caller propagating one trace to two calls of the same service: each error is joined to
    the request whose span holds it, not to whichever request of the trace comes first."""
    remote = SpanContext(0x5CA1AB1E, 0xCA11E5, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    caller = trace.set_span_in_context(NonRecordingSpan(remote))
    _request_with_child_error(shop, caller, "/a", "user-a", ValueError("x/a"))
    _request_with_child_error(shop, caller, "/b", "user-b", ValueError("x/b"))
    spans = list(shop.finished())
    children = [span for span in spans if span.kind is SpanKind.INTERNAL]
    servers = [span for span in spans if span.kind is SpanKind.SERVER]
    write_batches(writer, children, servers)
    errors = {row["error_message"]: row for row in errors_of(db_url)}
    assert (errors["x/a"]["endpoint"], errors["x/a"]["user_id"]) == ("/a", "user-a")
    assert (errors["x/b"]["endpoint"], errors["x/b"]["user_id"]) == ("/b", "user-b")
    requests = {row["endpoint"]: row["error_message"] for row in fetch_rows(db_url, "api_request_logs")}
    assert requests == {"/a": "ValueError: x/a", "/b": "ValueError: x/b"}


def test_one_error_raised_by_two_child_spans_is_two_occurrences(
    writer: RowWriter, db_url: str, stats: ExportStats, shop: Recorder
) -> None:
    """A retry loop raising the same error in two attempts (two spans) is not a duplicate: only a
    copy of one exception on an outer span is merged."""
    spans = failing_request(
        shop, (shop, ValueError("boom")), (shop, ValueError("boom")), server_error=ValueError("boom")
    )
    write_batches(writer, [*spans.children, spans.server])
    errors = errors_of(db_url)
    assert sorted(e["span_id"] for e in errors) == sorted(hex_span(child) for child in spans.children)
    assert stats.get("merged", "error_logs") == 1  # the server span's copy


def test_a_merged_copy_hands_its_resolution_to_the_kept_one(
    writer: RowWriter, db_url: str, shop: Recorder
) -> None:
    """The server span's copy was stored and resolved before the child's arrived: the kept copy
    is resolved too (a resolution is never undone by a late copy)."""
    boom = ValueError("boom")
    spans = failing_request(shop, (shop, boom), server_error=boom)
    write_batches(writer, [spans.server])
    with psycopg.connect(db_url, autocommit=True) as connection:
        connection.execute("UPDATE error_logs SET resolved = true, resolved_at = now()")
    write_batches(writer, [spans.child])
    (error,) = errors_of(db_url)
    assert error["span_id"] == hex_span(spans.child)
    assert error["resolved"] is True and error["resolved_at"] is not None


# --- a join that fails -------------------------------------------------------------------------


def test_a_failing_join_leaves_the_batch_stored_and_the_connection_usable(
    writer: RowWriter, db_url: str, shop: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """The joins go out as one pipeline after the rows' own commit: one statement refused (here
    the pending-joins table is missing) aborts the joins of that batch only, said in a warning."""
    spans = failing_request(shop, (shop, ValueError("boom")))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {PENDING_JOINS} RENAME TO hidden_pending_joins")
    try:
        write_batches(writer, [spans.child])
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE hidden_pending_joins RENAME TO {PENDING_JOINS}")
    assert "could not join the rows of a batch's traces" in caplog.text
    (error,) = errors_of(db_url)
    assert error["endpoint"] is None  # stored as mapped, not joined

    write_batches(writer, [spans.server])  # the same connection, the joins working again
    assert only_request(db_url)["trace_id"] == hex_trace(spans.server)
    (error,) = errors_of(db_url)
    assert error["endpoint"] is None  # its join was never remembered: it stays as written
