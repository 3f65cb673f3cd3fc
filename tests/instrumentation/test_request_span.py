"""The request span that skips the SDK (``instrumentation.request_span``) stores exactly what the
SDK's span stores, and steps aside whenever anything else could read the span."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, DEFAULT_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from exporter.linked_processors import LinkedSpanProcessor
from exporter.sampling import RecordAll
from exporter.worker_link import WorkerLink, WorkerStart
from homepot_foundation.settings import Settings
from instrumentation import Telemetry, job_span, record_device_state, setup_telemetry
from instrumentation.request_span import RequestSpan, RequestSpans
from tests.conftest import fetch_rows

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# What differs between two runs of the same requests whatever the span: identities and times.
VOLATILE = {"id", "event_id", "timestamp", "trace_id", "span_id", "response_time_ms", "created_at"}
VOLATILE |= {"service_name", "duration_ms", "started_at", "completed_at", "context"}


def _app(seen: list[Any]) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        seen.append(trace.get_current_span())
        return {"item_id": item_id}

    @app.get("/missing")
    def missing() -> None:
        raise HTTPException(404, "no such thing")

    @app.get("/crash")
    def crash() -> None:
        raise ValueError("boom in the handler")

    @app.post("/devices/{device_id}/restart")
    def restart(device_id: str) -> dict[str, str]:
        with job_span(f"job-{device_id}", "restart", device_id=device_id, initiated_by="system"):
            record_device_state(device_id, "online", "restarting", reason="asked")
        return {"device": device_id}

    return app


def _traffic(app: FastAPI, telemetry: Telemetry) -> None:
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/items/7", headers={"user-agent": "pytest"}).status_code == 200
        assert client.get("/items/8", headers={"traceparent": TRACEPARENT}).status_code == 200
        assert client.get("/missing").status_code == 404
        assert client.get("/crash").status_code == 500
        assert client.post("/devices/dev-1/restart").status_code == 200
    assert telemetry.force_flush()


def _stable(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    kept = [{key: value for key, value in row.items() if key not in VOLATILE} for row in rows]
    return sorted(kept, key=repr)


def _rows(db_url: str, service: str) -> dict[str, list[dict[str, object]]]:
    tables = ("api_request_logs", "error_logs", "job_outcomes", "device_state_history")
    return {
        table: _stable([row for row in fetch_rows(db_url, table) if row.get("service_name") == service])
        for table in tables
    }


def _run(db_url: str, tmp_path: Path, worker: str, service: str) -> tuple[list[Any], Telemetry]:
    settings = Settings(
        database_url=db_url, data_dir=tmp_path / worker, export_delay_ms=50, export_worker=worker
    )
    seen: list[Any] = []
    app = _app(seen)
    telemetry = setup_telemetry(app, service_name=service, settings=settings)
    try:
        _traffic(app, telemetry)
    finally:
        telemetry.shutdown()
    return seen, telemetry


def test_the_rows_are_those_the_sdk_span_gives(db_url: str, tmp_path: Path) -> None:
    light, _ = _run(db_url, tmp_path, "process", "light")
    sdk, _ = _run(db_url, tmp_path, "thread", "sdk")
    assert all(type(span) is RequestSpan for span in light)
    assert not any(type(span) is RequestSpan for span in sdk)
    ours, theirs = _rows(db_url, "light"), _rows(db_url, "sdk")
    assert ours == theirs
    assert len(ours["api_request_logs"]) == 5 and len(ours["error_logs"]) == 1
    assert len(ours["job_outcomes"]) == 1 and len(ours["device_state_history"]) == 1


def test_the_trace_goes_on_from_the_callers_traceparent(db_url: str, tmp_path: Path) -> None:
    seen, _ = _run(db_url, tmp_path, "process", "traced")
    context = seen[1].get_span_context()
    assert format(context.trace_id, "032x") == TRACEPARENT.split("-")[1]
    assert context.trace_flags.sampled and seen[1].parent.is_remote
    rows = [row for row in fetch_rows(db_url, "api_request_logs") if row["endpoint"] == "/items/8"]
    assert [row["trace_id"] for row in rows] == [TRACEPARENT.split("-")[1]]
    # The job and the state change inside a request join its trace.
    (job,) = fetch_rows(db_url, "job_outcomes")
    (state,) = fetch_rows(db_url, "device_state_history")
    (request,) = [
        row for row in fetch_rows(db_url, "api_request_logs") if row["endpoint"] == "/devices/dev-1/restart"
    ]
    assert job["trace_id"] == state["trace_id"] == request["trace_id"]


def test_a_processor_added_later_gets_sdk_spans_again(db_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=db_url, data_dir=tmp_path, export_delay_ms=50)
    seen: list[Any] = []
    app = _app(seen)
    telemetry = setup_telemetry(app, service_name="watched", settings=settings)
    memory = InMemorySpanExporter()
    try:
        with TestClient(app) as client:
            assert client.get("/items/1").status_code == 200
            telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
            assert client.get("/items/2").status_code == 200
        assert telemetry.force_flush()
    finally:
        telemetry.shutdown()
    assert type(seen[0]) is RequestSpan and type(seen[1]) is not RequestSpan
    assert [span.name for span in memory.get_finished_spans() if span.kind is SpanKind.SERVER] == [
        "GET /items/{item_id}"
    ]
    assert len(fetch_rows(db_url, "api_request_logs")) == 2


def test_an_always_off_sampler_still_stores_the_row_and_says_not_sampled(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    seen, _ = _run(db_url, tmp_path, "process", "unsampled")
    assert type(seen[0]) is RequestSpan and not seen[0].get_span_context().trace_flags.sampled
    assert len(fetch_rows(db_url, "api_request_logs")) == 5


def test_attributes_set_by_the_application_are_checked_like_the_sdk_does() -> None:
    span = RequestSpan.__new__(RequestSpan)
    RequestSpan.__init__(span, None, "GET", trace.INVALID_SPAN_CONTEXT, None, {})  # type: ignore[arg-type]
    span.set_attributes({"ok": "yes", "list": ["a", "b"], "bad": object(), "mixed": [1, "a"], "": 1})
    span.set_attribute("n", 3)
    assert span.attributes == {"ok": "yes", "list": ("a", "b"), "n": 3}
    span.set_status(trace.StatusCode.OK)
    span.set_status(trace.StatusCode.ERROR, "later")
    assert span.status.status_code is trace.StatusCode.OK  # OK is final, as in the SDK


def _request_spans(sampler: Any, tmp_path: Path) -> RequestSpans:
    provider = TracerProvider(sampler=sampler)
    link = WorkerLink(WorkerStart(Settings(data_dir=tmp_path), "sampling", None, False))
    processor = LinkedSpanProcessor(link)
    provider.add_span_processor(processor)
    return RequestSpans(provider, processor)


@pytest.mark.parametrize(
    "parent",
    [
        None,
        SpanContext(
            0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("k", "v")])
        ),
        SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0)),
        SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(0)),
        SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(3)),
    ],
    ids=["root", "sampled_remote_with_state", "unsampled_remote", "unsampled_local", "sampled_random_local"],
)
def test_the_default_samplers_decision_is_the_sdks(parent: SpanContext | None, tmp_path: Path) -> None:
    """The default sampler (RecordAll over the SDK's parent-based always-on) is decided without the
    SDK's call: the same flags, trace state and attributes as asking an equal sampler."""
    fast = _request_spans(RecordAll(DEFAULT_ON), tmp_path / "fast")
    asked = _request_spans(RecordAll(ParentBased(ALWAYS_ON)), tmp_path / "asked")  # not the default instance
    context = None if parent is None else trace.set_span_in_context(NonRecordingSpan(parent), Context())
    spans = [
        factory.start("GET", context, {"http.request.method": "GET", "url.path": "/x"})
        for factory in (fast, asked)
    ]
    contexts = [span.get_span_context() for span in spans]
    assert all(type(span) is RequestSpan for span in spans)
    assert fast._default_sampler is not None and asked._default_sampler is None  # the two paths
    assert int(contexts[0].trace_flags) == int(contexts[1].trace_flags)
    assert contexts[0].trace_flags.sampled == (parent is None or parent.trace_flags.sampled)
    if parent is not None:
        assert contexts[0].trace_id == contexts[1].trace_id == parent.trace_id
    assert contexts[0].trace_state == contexts[1].trace_state
    assert (
        dict(spans[0].attributes)
        == dict(spans[1].attributes)
        == {"http.request.method": "GET", "url.path": "/x"}
    )
