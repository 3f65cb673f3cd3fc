"""The server span ``setup_telemetry`` makes for each request, observed in memory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.staticfiles import StaticFiles

from exporter.mapping import log_record_to_rows, span_to_rows
from homepot_foundation.settings import Settings
from instrumentation import Telemetry, record_device_state, setup_telemetry

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


class Captured:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.spans = InMemorySpanExporter()
        self.logs = InMemoryLogRecordExporter()
        telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        telemetry.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))

    def server_spans(self) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.kind is SpanKind.SERVER]

    def only_server_span(self) -> ReadableSpan:
        spans = self.server_spans()
        assert len(spans) == 1, [span.name for span in spans]
        return spans[0]


def instrument(app: FastAPI, tmp_path: Path, **options: Any) -> Captured:
    settings = Settings(data_dir=tmp_path, database_url="postgresql://unused/none")
    return Captured(setup_telemetry(app, service_name="span-test", settings=settings, export=[], **options))


@pytest.fixture()
def app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/crash")
    def crash() -> None:
        raise ZeroDivisionError("division by zero")

    return app


@pytest.fixture()
def captured(app: FastAPI, tmp_path: Path) -> Iterator[Captured]:
    captured = instrument(app, tmp_path)
    yield captured
    captured.telemetry.shutdown()


def test_the_span_carries_what_the_tables_need(app: FastAPI, captured: Captured) -> None:
    with TestClient(app) as client:
        client.get("/items/7", headers={"user-agent": "probe/1.0"})
    span = captured.only_server_span()
    assert span.name == "GET /items/{item_id}"
    attributes = dict(span.attributes or {})
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.path"] == "/items/7"
    assert attributes["http.route"] == "/items/{item_id}"
    assert attributes["http.response.status_code"] == 200
    assert attributes["http.response.body.size"] == len(b'{"item_id":7}')
    assert attributes["user_agent.original"] == "probe/1.0"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "homepot_analytics"


def test_an_incoming_traceparent_continues_the_callers_trace(app: FastAPI, captured: Captured) -> None:
    with TestClient(app) as client:
        client.get("/items/1", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"})
        client.get("/items/2")
    continued, fresh = captured.server_spans()
    assert continued.context is not None and continued.parent is not None
    assert format(continued.context.trace_id, "032x") == TRACE_ID
    assert format(continued.parent.span_id, "016x") == PARENT_SPAN_ID
    assert fresh.parent is None
    assert fresh.context is not None and format(fresh.context.trace_id, "032x") != TRACE_ID


def test_an_unhandled_exception_is_recorded_on_the_span_of_its_500(app: FastAPI, captured: Captured) -> None:
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/crash").status_code == 500
    span = captured.only_server_span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["http.response.status_code"] == 500
    [event] = [event for event in span.events if event.name == "exception"]
    assert (event.attributes or {})["exception.type"] == "ZeroDivisionError"
    tables = [table for table, _ in span_to_rows(span)]
    assert tables == ["api_request_logs", "error_logs"]


def test_not_found_has_no_route_and_keeps_the_path(app: FastAPI, captured: Captured) -> None:
    with TestClient(app) as client:
        client.get("/nowhere")
    span = captured.only_server_span()
    assert span.name == "GET"
    assert "http.route" not in (span.attributes or {})
    [(table, row)] = span_to_rows(span)
    assert table == "api_request_logs"
    assert (row["endpoint"], row["route"], row["status_code"]) == ("/nowhere", None, 404)


def test_routes_of_mounted_apps_keep_the_mount_prefix(tmp_path: Path) -> None:
    app = FastAPI()
    v2 = FastAPI()

    @v2.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    static = tmp_path / "static"
    static.mkdir()
    (static / "app.js").write_text("console.log(1)")
    app.mount("/v2", v2)
    app.mount("/static", StaticFiles(directory=static))
    captured = instrument(app, tmp_path / "data")
    with TestClient(app) as client:
        assert client.get("/v2/items/3").status_code == 200
        assert client.get("/static/app.js").status_code == 200
    routes = [(span.attributes or {}).get("http.route") for span in captured.server_spans()]
    assert routes == ["/v2/items/{item_id}", "/static"]
    captured.telemetry.shutdown()


def test_excluded_paths_make_no_span(tmp_path: Path) -> None:
    app = FastAPI()

    @app.get("/health")
    def health() -> str:
        return "ok"

    captured = instrument(app, tmp_path, excluded_paths=["/health"])
    with TestClient(app) as client:
        client.get("/health")
        client.get("/health/")
    assert captured.server_spans() == []
    captured.telemetry.shutdown()


def test_the_span_is_current_for_user_middleware_and_background_tasks(tmp_path: Path) -> None:
    app = FastAPI()

    @app.middleware("http")
    async def audit(request: Any, call_next: Any) -> Any:
        record_device_state("dev-1", "online", "busy", changed_by="middleware")
        return await call_next(request)

    def slow_then_fail() -> None:
        time.sleep(0.3)
        raise RuntimeError("mail server down")

    @app.post("/send")
    def send(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(slow_then_fail)
        return {"queued": "yes"}

    captured = instrument(app, tmp_path)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/send").status_code == 200
    span = captured.only_server_span()
    assert span.context is not None
    # Ended with the response: the background task's 0.3 s is not the client's wait.
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 < 0.25
    assert (span.attributes or {})["http.response.status_code"] == 200
    rows = [
        (table, row)
        for record in captured.logs.get_finished_logs()
        for table, row in log_record_to_rows(record)
    ]
    state = next(row for table, row in rows if table == "device_state_history")
    failure = next(row for table, row in rows if table == "error_logs")
    request_trace = format(span.context.trace_id, "032x")
    assert state["trace_id"] == request_trace
    # The task failed after the response: an error row in the request's trace, not a lost one.
    assert failure["trace_id"] == request_trace
    assert "mail server down" in failure["error_message"]
    assert failure["endpoint"] == "/send"
    captured.telemetry.shutdown()


def test_a_resolver_that_raises_leaves_the_rest_of_the_span(tmp_path: Path) -> None:
    app = FastAPI()

    @app.post("/upload")
    async def upload(payload: dict[str, str]) -> dict[str, str]:
        return payload

    def broken_resolver(scope: Any, status_code: int) -> str | None:
        raise KeyError("no user here")

    captured = instrument(app, tmp_path, user_resolver=broken_resolver)
    with TestClient(app) as client:
        assert client.post("/upload", json={"a": "b"}).status_code == 200
    attributes = captured.only_server_span().attributes or {}
    assert attributes["http.request.body.size"] == len(b'{"a":"b"}')
    assert attributes["http.response.status_code"] == 200
    assert "enduser.id" not in attributes
    captured.telemetry.shutdown()


def test_fastapis_own_request_tracing_does_not_double_the_span(
    app: FastAPI, captured: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FastAPI traces requests itself with the global provider: make ours the global one.
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: captured.telemetry.tracer_provider)
    with TestClient(app) as client:
        client.get("/items/5")
    span = captured.only_server_span()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "homepot_analytics"


def test_setting_up_twice_keeps_one_span_per_request(
    app: FastAPI, captured: Captured, tmp_path: Path
) -> None:
    again = setup_telemetry(app, service_name="span-test", export=[], settings=Settings(data_dir=tmp_path))
    assert again is captured.telemetry
    with TestClient(app) as client:
        client.get("/items/1")
    captured.only_server_span()


def test_spans_map_to_the_rows_the_tables_expect(tmp_path: Path) -> None:
    app = FastAPI()

    @app.get("/items/{item}")
    async def item(item: int) -> dict[str, int]:
        if item == 404:
            raise HTTPException(404, "no such item")
        if item == 500:
            raise RuntimeError("boom")
        return {"item": item}

    captured = instrument(app, tmp_path)
    with TestClient(app, raise_server_exceptions=False, headers={"user-agent": "probe"}) as client:
        for item in (7, 404, 500):
            client.get(f"/items/{item}")
    ok, missing, failed = (span_to_rows(span) for span in captured.server_spans())
    row = ok[0][1]
    assert (row["endpoint"], row["route"], row["method"], row["status_code"]) == (
        "/items/7",
        "/items/{item}",
        "GET",
        200,
    )
    assert row["user_agent"] == "probe" and row["ip_address"] == "testclient"
    assert row["response_size_bytes"] == len(b'{"item":7}')
    assert missing[0][1]["status_code"] == 404 and missing[0][1]["error_message"] == "no such item"
    assert [table for table, _ in failed] == ["api_request_logs", "error_logs"]
    assert failed[0][1]["status_code"] == 500 and failed[0][1]["error_message"] == "RuntimeError: boom"
    assert failed[1][1]["error_code"] == "RuntimeError"
    captured.telemetry.shutdown()


def test_excluded_paths_add_to_the_defaults_unless_told_otherwise(tmp_path: Path) -> None:
    def served(**options: Any) -> list[str]:
        app = FastAPI()
        for path in ("/health", "/internal/ping", "/items"):
            app.add_api_route(path, lambda: "ok")
        captured = instrument(app, tmp_path, **options)
        with TestClient(app) as client:
            for path in ("/health", "/internal/ping", "/items"):
                client.get(path)
        captured.telemetry.shutdown()
        return [(span.attributes or {}).get("url.path") for span in captured.server_spans()]

    assert served(excluded_paths=["/internal/*"]) == ["/items"]  # the defaults still hold
    assert served(excluded_paths=["/internal/*"], exclude_default_paths=False) == ["/health", "/items"]
