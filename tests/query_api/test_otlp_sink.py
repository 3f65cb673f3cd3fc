"""The OTLP/HTTP sink: what other services send through a collector lands in the five tables."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from google.protobuf.message import Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from exporter.delivery import Delivery
from exporter.mapping import error_fingerprint
from exporter.privacy import Privacy, privacy_from_settings
from exporter.spool import Spool
from exporter.writer import RowWriter
from homepot_foundation.settings import Settings
from query_api.app import create_app
from tests.conftest import JWT_SECRET
from tests.exporter import otlp_payloads as p

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ENCODINGS = [PROTOBUF, JSON]
AT_START = datetime(2025, 12, 5, 13, 45, 23, tzinfo=UTC)
TOKEN = "ingest-token-for-tests"
LIMIT = 64 * 1024


# Module-wide services, and a trace id of its own for every test: rows are looked up by trace id,
# so no test needs the tables emptied (and none can pass on another test's rows).
@pytest.fixture(scope="module")
def sink_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("otlp-sink"),
        jwt_secret=JWT_SECRET,
        ingest_max_body_bytes=LIMIT,
    )


@pytest.fixture(scope="module")
def client(sink_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(sink_settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def guarded_client(sink_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A sink that requires the ingest token (sent by default; tests take it away)."""
    settings = sink_settings.model_copy(
        update={"ingest_token": TOKEN, "data_dir": tmp_path_factory.mktemp("otlp-sink-guarded")}
    )
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {TOKEN}"}) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def privacy(sink_settings: Settings) -> Privacy:
    """The policy the service applies (user ids and IPs may be pseudonymised or truncated)."""
    return privacy_from_settings(sink_settings)


@pytest.fixture()
def trace_id() -> str:
    return uuid.uuid4().hex


def rows(database_url: str, table: str, *trace_ids: str) -> list[dict[str, Any]]:
    """The rows of ``table`` that belong to these traces, oldest first."""
    with psycopg.connect(database_url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE trace_id = ANY(%s) ORDER BY id", (list(trace_ids),))
        return list(cursor.fetchall())


def _body(payload: Message | dict[str, Any], encoding: str, message_type: type[Message]) -> bytes:
    """The payload in the wire encoding asked for, whichever form it was written in."""
    if encoding == PROTOBUF:
        message = payload if isinstance(payload, Message) else p.to_protobuf(payload, message_type)
        return message.SerializeToString()
    document = payload if isinstance(payload, dict) else p.to_json(payload)
    return json.dumps(document).encode()


def _post(
    client: TestClient, path: str, body: bytes, content_type: str, **headers: str
) -> Any:  # httpx.Response
    return client.post(path, content=body, headers={"Content-Type": content_type, **headers})


def _traces(client: TestClient, payload: Message | dict[str, Any], encoding: str, **headers: str) -> Any:
    return _post(
        client, "/v1/traces", _body(payload, encoding, ExportTraceServiceRequest), encoding, **headers
    )


def _logs(client: TestClient, payload: Message | dict[str, Any], encoding: str, **headers: str) -> Any:
    return _post(client, "/v1/logs", _body(payload, encoding, ExportLogsServiceRequest), encoding, **headers)


def _partial(response: Any, response_type: type[Message]) -> Any:
    """The response message, parsed from the encoding the response declares."""
    message = response_type()
    if response.headers["content-type"].startswith(PROTOBUF):
        message.ParseFromString(response.content)
    else:
        from google.protobuf import json_format

        json_format.Parse(response.text, message)
    return message


# --- a Node service (stable HTTP conventions) ----------------------------------------------------
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_node_spans_become_request_and_error_rows(
    client: TestClient, database_url: str, privacy: Privacy, trace_id: str, encoding: str
) -> None:
    response = _traces(client, p.node_traces(trace_id), encoding)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == encoding
    assert not _partial(response, ExportTraceServiceResponse).HasField("partial_success")

    # The 500 and the 200 (a trace of its own); the client and internal spans are no rows.
    failed, ok = rows(database_url, "api_request_logs", trace_id, trace_id[::-1])
    assert failed["timestamp"] == AT_START
    assert failed["endpoint"] == "/api/orders/42"
    assert failed["route"] == "/api/orders/:id"
    assert failed["method"] == "POST"
    assert failed["status_code"] == 500
    assert failed["response_time_ms"] == pytest.approx(45.0)
    assert failed["user_id"] == privacy.user("u-77")
    assert failed["ip_address"] == privacy.ip("203.0.113.9")
    assert failed["user_agent"] == "Mozilla/5.0 (X11; Linux x86_64)"
    assert failed["error_message"] == f"TypeError: {p.NODE_TYPE_ERROR}"
    assert failed["request_size_bytes"] == 512
    assert failed["response_size_bytes"] == 87
    assert (failed["trace_id"], failed["span_id"]) == (trace_id, p.NODE_ERROR_SPAN_ID)
    assert failed["service_name"] == "checkout-node"
    assert ok["timestamp"] == AT_START + timedelta(seconds=1)
    assert (ok["endpoint"], ok["route"], ok["method"], ok["status_code"]) == (
        "/api/orders",
        "/api/orders",
        "GET",
        200,
    )
    assert ok["error_message"] is None
    assert ok["ip_address"] == privacy.ip("203.0.113.10")
    assert ok["span_id"] == p.NODE_OK_SPAN_ID

    (error,) = rows(database_url, "error_logs", trace_id, trace_id[::-1])
    assert error["timestamp"] == AT_START + timedelta(milliseconds=44)
    assert error["category"] == "api"
    assert error["severity"] == "error"
    assert error["error_code"] == "TypeError"
    assert error["error_message"] == p.NODE_TYPE_ERROR
    assert error["stack_trace"] == p.NODE_STACK
    assert error["endpoint"] == "/api/orders/42"
    assert error["user_id"] == privacy.user("u-77")
    assert error["device_id"] is None
    assert error["context"] == {
        "exception_type": "TypeError",
        "span_kind": "server",
        "method": "POST",
        "route": "/api/orders/:id",
        "status_code": 500,
        "span_name": "POST /api/orders/:id",
    }
    assert error["fingerprint"] == error_fingerprint("TypeError", p.NODE_TYPE_ERROR)
    assert error["span_id"] == p.NODE_ERROR_SPAN_ID
    assert error["service_name"] == "checkout-node"
    assert error["resolved"] is False


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_node_device_state_log_record_joins_through_the_conventions(
    client: TestClient, database_url: str, trace_id: str, encoding: str
) -> None:
    response = _logs(client, p.node_logs(trace_id), encoding)
    assert response.status_code == 200, response.text
    assert not _partial(response, ExportLogsServiceResponse).HasField("partial_success")
    (state,) = rows(database_url, "device_state_history", trace_id)
    assert state["timestamp"] == AT_START + timedelta(seconds=2)
    assert state["device_id"] == "dev_007"
    assert (state["previous_state"], state["new_state"]) == ("online", "maintenance")
    assert state["changed_by"] == "system"
    assert state["reason"] == "Firmware window"
    assert state["extra_data"] == {"site_id": "site-002", "window_minutes": 30}  # sent as a map
    assert (state["trace_id"], state["span_id"]) == (trace_id, p.NODE_OK_SPAN_ID)
    assert state["service_name"] == "device-gateway-node"
    assert rows(database_url, "error_logs", trace_id) == []


# --- a Java service (old HTTP conventions, exception as a log record) ---------------------------
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_java_spans_in_old_conventions_and_a_job(
    client: TestClient, database_url: str, privacy: Privacy, trace_id: str, encoding: str
) -> None:
    response = _traces(client, p.java_traces(bytes.fromhex(trace_id)), encoding)
    assert response.status_code == 200, response.text

    not_found, failed = rows(database_url, "api_request_logs", trace_id)
    assert not_found["timestamp"] == AT_START
    assert not_found["endpoint"] == "/inventory/items/17"  # http.target without its query
    assert not_found["route"] == "/inventory/items/{id}"
    assert not_found["method"] == "GET"
    assert not_found["status_code"] == 404
    assert not_found["response_time_ms"] == pytest.approx(12.5)
    assert not_found["user_id"] == privacy.user("ops-bot")
    assert not_found["ip_address"] == privacy.ip("10.1.2.3")
    assert not_found["user_agent"] == "okhttp/4.12.0"
    assert not_found["error_message"] == "Not Found"
    assert not_found["request_size_bytes"] is None
    assert not_found["response_size_bytes"] is None
    assert not_found["span_id"] == p.JAVA_NOT_FOUND_SPAN_ID.hex()
    assert not_found["service_name"] == "inventory-java"
    assert (failed["endpoint"], failed["method"], failed["status_code"]) == (
        "/inventory/reserve",
        "POST",
        500,
    )
    assert failed["request_size_bytes"] == 240
    assert failed["error_message"] == "IllegalStateException: stock service unavailable"

    (error,) = rows(database_url, "error_logs", trace_id)
    assert error["error_code"] == "IllegalStateException"
    assert error["error_message"] == "stock service unavailable"
    assert error["stack_trace"] == p.JAVA_STACK
    assert error["endpoint"] == "/inventory/reserve"
    assert error["span_id"] == p.JAVA_ERROR_SPAN_ID.hex()

    (job,) = rows(database_url, "job_outcomes", trace_id)
    assert job["timestamp"] == AT_START + timedelta(milliseconds=170)
    assert job["job_id"] == "job-j-1"
    assert job["job_type"] == "firmware_update"
    assert job["device_id"] == "dev_042"
    assert job["status"] == "failed"
    assert job["duration_ms"] == 60
    assert job["error_code"] == "E_FW_CHECKSUM"
    assert job["error_message"] == "checksum mismatch"
    assert job["retry_count"] == 2
    assert job["initiated_by"] == "system"
    assert job["extra_data"] == {"site_id": "site-002", "attempts": [1, 2]}
    assert job["span_id"] == p.JAVA_JOB_SPAN_ID.hex()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_java_exception_log_record_becomes_an_error_row(
    client: TestClient, database_url: str, trace_id: str, encoding: str
) -> None:
    response = _logs(client, p.java_logs(bytes.fromhex(trace_id)), encoding)
    assert response.status_code == 200, response.text
    (error,) = rows(database_url, "error_logs", trace_id)  # the INFO line is no row
    assert error["timestamp"] == AT_START + timedelta(milliseconds=179)
    assert error["category"] == "api"
    assert error["severity"] == "error"
    assert error["error_code"] == "IllegalStateException"
    # The logged message is the row's (the developer's words); the exception's text and the
    # logger (the record's instrumentation scope) are kept in the context.
    assert error["error_message"] == "Failed to reserve stock for order 9001"
    assert error["stack_trace"] == p.JAVA_STACK
    assert error["endpoint"] is None
    assert error["context"] == {
        "logger": "com.homepot.inventory.ReserveController",
        "exception_message": "stock service unavailable",
    }
    assert error["fingerprint"] == error_fingerprint(
        "IllegalStateException", "Failed to reserve stock for order 9001"
    )
    assert error["span_id"] == p.JAVA_ERROR_SPAN_ID.hex()
    assert error["service_name"] == "inventory-java"


def test_a_collector_retry_stores_each_row_once(client: TestClient, database_url: str, trace_id: str) -> None:
    raw_id = bytes.fromhex(trace_id)
    for _ in range(2):
        assert _traces(client, p.java_traces(raw_id), PROTOBUF).status_code == 200
        assert _logs(client, p.java_logs(raw_id), PROTOBUF).status_code == 200
    assert len(rows(database_url, "api_request_logs", trace_id)) == 2
    # The exception is on the server span and in the log record: one error row (the span's).
    (error,) = rows(database_url, "error_logs", trace_id)
    assert error["context"]["span_kind"] == "server"
    assert len(rows(database_url, "job_outcomes", trace_id)) == 1


# --- encodings and compression -------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_gzip_bodies_are_accepted(
    client: TestClient, database_url: str, trace_id: str, encoding: str
) -> None:
    body = gzip.compress(_body(p.java_traces(bytes.fromhex(trace_id)), encoding, ExportTraceServiceRequest))
    response = _post(client, "/v1/traces", body, encoding, **{"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert len(rows(database_url, "api_request_logs", trace_id)) == 2


def test_content_type_parameters_are_ignored(client: TestClient, database_url: str, trace_id: str) -> None:
    body = _body(p.node_traces(trace_id), JSON, ExportTraceServiceRequest)
    response = _post(client, "/v1/traces", body, "Application/JSON; charset=utf-8")
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    assert len(rows(database_url, "api_request_logs", trace_id)) == 1


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_rejected_spans_are_reported_in_partial_success(
    client: TestClient, database_url: str, trace_id: str, encoding: str
) -> None:
    request = p.java_traces(bytes.fromhex(trace_id))
    request.resource_spans[0].scope_spans[0].spans[0].span_id = b"\x01\x02\x03"  # the 404 span
    response = _traces(client, request, encoding)
    assert response.status_code == 200
    assert response.headers["content-type"] == encoding
    partial = _partial(response, ExportTraceServiceResponse).partial_success
    assert partial.rejected_spans == 1
    assert partial.error_message == "1 spans rejected: invalid span_id (1)"
    # The rest of the batch is stored.
    assert [row["status_code"] for row in rows(database_url, "api_request_logs", trace_id)] == [500]
    assert len(rows(database_url, "job_outcomes", trace_id)) == 1


def test_rejected_log_records_are_reported_in_partial_success(
    client: TestClient, database_url: str, trace_id: str
) -> None:
    request = p.java_logs(bytes.fromhex(trace_id))
    request.resource_logs[0].scope_logs[0].log_records[1].span_id = b"\x09"
    response = _logs(client, request, PROTOBUF)
    partial = _partial(response, ExportLogsServiceResponse).partial_success
    assert (partial.rejected_log_records, partial.error_message) == (
        1,
        "1 log records rejected: invalid span_id (1)",
    )
    assert len(rows(database_url, "error_logs", trace_id)) == 1


# --- refusals --------------------------------------------------------------------------------------
def _status(response: Any) -> Any:
    """The google.rpc.Status an error response carries, in the request's encoding."""
    status = status_pb2.Status()
    if response.headers["content-type"].startswith(PROTOBUF):
        status.ParseFromString(response.content)
    else:
        status.message = response.json()["message"]
    return status


def _stored(database_url: str, trace_id: str) -> int:
    return len(rows(database_url, "api_request_logs", trace_id)) + len(
        rows(database_url, "error_logs", trace_id)
    )


def _padded_node_traces(trace_id: str, padding: int) -> dict[str, Any]:
    document = p.node_traces(trace_id)
    document["resourceSpans"][0]["resource"]["attributes"].append(
        {"key": "padding", "value": {"stringValue": "x" * padding}}
    )
    return document


@pytest.mark.parametrize(
    ("body", "encoding", "headers", "fragment"),
    [
        (b"\xff\xff\xff\xff", PROTOBUF, {}, "invalid protobuf"),
        (b"{not json", JSON, {}, "invalid JSON"),
        (b"[]", JSON, {}, "must be a JSON object"),
        (b'{"resourceSpans": 5}', JSON, {}, "invalid OTLP/JSON"),
        (b"not gzip at all", PROTOBUF, {"Content-Encoding": "gzip"}, "invalid gzip"),
        (gzip.compress(b"{}")[:-4], JSON, {"Content-Encoding": "gzip"}, "truncated gzip"),
    ],
)
def test_undecodable_bodies_are_400(
    client: TestClient, body: bytes, encoding: str, headers: dict[str, str], fragment: str
) -> None:
    response = _post(client, "/v1/traces", body, encoding, **headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == encoding  # the error in the request's encoding
    assert fragment in _status(response).message


@pytest.mark.parametrize(
    ("content_type", "headers"),
    [("text/plain", {}), ("application/grpc", {}), ("", {}), (PROTOBUF, {"Content-Encoding": "br"})],
)
def test_unsupported_media_types_and_encodings_are_415(
    client: TestClient, database_url: str, trace_id: str, content_type: str, headers: dict[str, str]
) -> None:
    body = _body(p.java_traces(bytes.fromhex(trace_id)), PROTOBUF, ExportTraceServiceRequest)
    response = _post(client, "/v1/traces", body, content_type, **headers)
    assert response.status_code == 415
    # In the request's encoding when it has one, else in JSON.
    assert response.headers["content-type"] == (PROTOBUF if content_type == PROTOBUF else JSON)
    assert _status(response).message
    assert _stored(database_url, trace_id) == 0


def test_a_declared_content_length_over_the_limit_is_413(
    client: TestClient, database_url: str, trace_id: str
) -> None:
    response = _traces(client, _padded_node_traces(trace_id, LIMIT), JSON)
    assert response.status_code == 413
    assert "Content-Length" in _status(response).message
    assert _stored(database_url, trace_id) == 0


def test_a_streamed_body_over_the_limit_is_413(client: TestClient, database_url: str, trace_id: str) -> None:
    body = json.dumps(_padded_node_traces(trace_id, LIMIT)).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = client.post("/v1/traces", content=chunks(), headers={"Content-Type": JSON})
    assert response.status_code == 413
    assert "request body exceeds" in _status(response).message
    assert _stored(database_url, trace_id) == 0


def test_a_gzip_bomb_is_413_without_inflating_it(
    client: TestClient, database_url: str, trace_id: str
) -> None:
    bomb = gzip.compress(json.dumps(_padded_node_traces(trace_id, 10_000_000)).encode())  # 10 MB in ~10 KB
    assert len(bomb) < LIMIT
    response = _post(client, "/v1/traces", bomb, JSON, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "decompressed body exceeds" in _status(response).message
    assert _stored(database_url, trace_id) == 0


def test_a_body_just_within_the_limit_passes(client: TestClient, database_url: str, trace_id: str) -> None:
    unpadded = len(json.dumps(_padded_node_traces(trace_id, 0)).encode())
    body = json.dumps(_padded_node_traces(trace_id, LIMIT - unpadded)).encode()
    assert len(body) == LIMIT
    response = _post(client, "/v1/traces", gzip.compress(body), JSON, **{"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert _stored(database_url, trace_id) == 2


# --- the ingest token ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer",
        f"Bearer{TOKEN}",
    ],
)
def test_the_ingest_token_guards_the_sink(
    guarded_client: TestClient, database_url: str, trace_id: str, authorization: str | None
) -> None:
    body = json.dumps(p.node_traces(trace_id)).encode()
    for path in ("/v1/traces", "/v1/logs"):
        request = guarded_client.build_request("POST", path, content=body, headers={"Content-Type": JSON})
        if authorization is None:
            del request.headers["Authorization"]
        else:
            request.headers["Authorization"] = authorization
        response = guarded_client.send(request)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    assert _stored(database_url, trace_id) == 0


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_the_right_token_is_let_in(
    guarded_client: TestClient, database_url: str, trace_id: str, scheme: str
) -> None:
    response = _traces(guarded_client, p.node_traces(trace_id), JSON, Authorization=f"{scheme} {TOKEN}")
    assert response.status_code == 200
    assert _stored(database_url, trace_id) == 2  # the 500 and its error (the 200 has its own trace)


# --- the database away -----------------------------------------------------------------------------
@contextmanager
def _database_away(client: TestClient, tmp_path: Path, spool_bytes: int) -> Iterator[Delivery]:
    """The service's delivery swapped for one whose database cannot be reached."""
    writer = RowWriter("postgresql://postgres@127.0.0.1:1/nowhere", connect_timeout=1)
    delivery = Delivery(writer, Spool(tmp_path / "spool", spool_bytes), min_backoff_s=60)
    state = client.app.state  # type: ignore[attr-defined]
    original, state.delivery = state.delivery, delivery
    try:
        yield delivery
    finally:
        state.delivery = original
        delivery.shutdown(timeout_s=0.1)


def test_rows_are_spooled_while_the_database_is_away(client: TestClient, tmp_path: Path) -> None:
    with _database_away(client, tmp_path, 10 * 1024 * 1024) as delivery:
        spooled_before = delivery.stats.get("spooled", "api_request_logs")
        # By reason: other tests' telemetry, shut down, may count "after_shutdown" drops meanwhile.
        dropped_before = delivery.stats.get("dropped", "api_request_logs", "spool_full")
        response = _traces(client, p.java_traces(), PROTOBUF)
        assert response.status_code == 200  # kept on disk: the collector need not retry
        assert delivery.stats.get("spooled", "api_request_logs") == spooled_before + 2
        assert delivery.stats.get("dropped", "api_request_logs", "spool_full") == dropped_before
        assert any((tmp_path / "spool").iterdir())


def test_503_with_retry_after_when_the_rows_cannot_be_kept(client: TestClient, tmp_path: Path) -> None:
    with _database_away(client, tmp_path, 16) as delivery:  # a spool too small for any batch
        dropped_before = delivery.stats.get("dropped", "api_request_logs", "spool_full")
        response = _traces(client, p.java_traces(), JSON)
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) > 0
        assert response.headers["content-type"] == JSON
        assert "cannot keep" in _status(response).message
        assert delivery.stats.get("dropped", "api_request_logs", "spool_full") == dropped_before + 2
        # A request without rows to keep still succeeds.
        assert _logs(client, {"resourceLogs": []}, JSON).status_code == 200
