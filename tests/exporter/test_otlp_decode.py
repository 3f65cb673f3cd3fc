"""The OTLP decoder: wire bytes (protobuf or OTLP/JSON) into the SDK objects the mapping takes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from exporter import conventions as c
from exporter.mapping import log_record_to_rows, span_to_rows
from exporter.otlp_decode import OtlpDecodeError, decode_logs, decode_traces, serialize
from tests.exporter import otlp_payloads as p


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


def _attrs(item: Any) -> dict[str, Any]:
    return dict(item.attributes or {})


# --- the SDK's own encoding decodes back to the same rows ---------------------------------------
@pytest.fixture()
def sdk_spans() -> list[Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "python-svc"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    attributes: dict[str, Any] = {
        "http.method": "GET",
        "http.target": "/a?b=1",
        "http.route": "/a",
        "http.status_code": 500,
    }
    with tracer.start_as_current_span("GET /a", kind=SpanKind.SERVER, attributes=attributes) as span:
        span.record_exception(ValueError("bad value 42"))
        span.set_status(StatusCode.ERROR, "bad value")
        with tracer.start_as_current_span("job", attributes={c.JOB_ID: "j1", c.JOB_TYPE: "restart"}):
            pass
    return list(exporter.get_finished_spans())


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_spans_encoded_by_the_python_sdk_map_to_the_same_rows(sdk_spans: list[Any], encoding: str) -> None:
    request = encode_spans(sdk_spans)
    body = request.SerializeToString() if encoding == "protobuf" else _json(p.to_json(request))
    decoded = decode_traces(body, encoding)  # type: ignore[arg-type]
    assert decoded.rejected == 0
    expected = sorted((row for span in sdk_spans for row in span_to_rows(span)), key=repr)
    actual = sorted((row for span in decoded.records for row in span_to_rows(span)), key=repr)
    assert {table for table, _ in expected} == {"api_request_logs", "error_logs", "job_outcomes"}
    assert actual == expected


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_log_records_encoded_by_the_python_sdk_map_to_the_same_rows(encoding: str) -> None:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "python-svc"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    event_logger = provider.get_logger("test")
    event_logger.emit(
        event_name=c.DEVICE_STATE_EVENT,
        severity_number=SeverityNumber.INFO,
        body="dev_1: online -> offline",
        attributes={
            c.DEVICE_ID: "dev_1",
            c.DEVICE_NEW_STATE: "offline",
            c.EVENT_ID: "0" * 8 + "-0000-0000-0000-" + "1" * 12,
        },
    )
    event_logger.emit(
        severity_number=SeverityNumber.ERROR,
        attributes={c.EXCEPTION_TYPE: "KeyError", c.EXCEPTION_MESSAGE: "'x'", c.ERROR_CATEGORY: "database"},
    )
    records = list(exporter.get_finished_logs())
    request = encode_logs(records)
    body = request.SerializeToString() if encoding == "protobuf" else _json(p.to_json(request))
    decoded = decode_logs(body, encoding)  # type: ignore[arg-type]
    assert decoded.rejected == 0
    expected = [row for record in records for row in log_record_to_rows(record)]
    actual = [row for record in decoded.records for row in log_record_to_rows(record)]
    assert [table for table, _ in actual] == ["device_state_history", "error_logs"]
    assert actual == expected


# --- payloads from other SDKs --------------------------------------------------------------------
def test_node_json_decodes_ids_enums_and_int64_strings() -> None:
    decoded = decode_traces(_json(p.node_traces()), "json")
    assert decoded.rejected == 0
    error_span, ok_span, client_span, _internal = decoded.records
    assert format(error_span.context.trace_id, "032x") == p.NODE_TRACE_ID
    assert format(error_span.context.span_id, "016x") == p.NODE_ERROR_SPAN_ID
    assert error_span.parent is None
    assert format(client_span.parent and client_span.parent.span_id, "016x") == p.NODE_ERROR_SPAN_ID
    assert [s.kind for s in decoded.records] == [
        SpanKind.SERVER,
        SpanKind.SERVER,
        SpanKind.CLIENT,
        SpanKind.INTERNAL,
    ]
    assert error_span.start_time == p.START and error_span.end_time == p.START + 45 * p.MS
    assert _attrs(error_span)["http.response.status_code"] == 500  # "500" in the JSON
    assert _attrs(error_span)["http.request.body.size"] == 512
    assert error_span.status.status_code is StatusCode.ERROR
    assert error_span.status.description == p.NODE_TYPE_ERROR
    assert ok_span.status.status_code is StatusCode.UNSET and ok_span.status.description is None
    assert error_span.events[0].name == "exception"
    assert error_span.events[0].timestamp == p.START + 44 * p.MS
    assert _attrs(error_span.events[0])["exception.stacktrace"] == p.NODE_STACK
    assert error_span.resource.attributes["service.name"] == "checkout-node"
    assert (
        error_span.instrumentation_scope
        and error_span.instrumentation_scope.name == "@opentelemetry/instrumentation-http"
    )
    assert error_span.context.trace_flags == 1  # the low byte of flags=257


def test_node_json_and_its_protobuf_twin_decode_alike() -> None:
    document = p.node_traces()
    from_json = decode_traces(_json(document), "json").records
    twin = p.to_protobuf(document, ExportTraceServiceRequest).SerializeToString()
    from_protobuf = decode_traces(twin, "protobuf").records
    assert [span_to_rows(s) for s in from_json] == [span_to_rows(s) for s in from_protobuf]


def test_java_protobuf_and_its_json_form_decode_alike() -> None:
    request = p.java_traces()
    from_protobuf = decode_traces(request.SerializeToString(), "protobuf")
    from_json = decode_traces(_json(p.to_json(request)), "json")
    assert from_protobuf.rejected == from_json.rejected == 0
    assert [span_to_rows(s) for s in from_protobuf.records] == [span_to_rows(s) for s in from_json.records]
    job = from_protobuf.records[2]
    # A map-valued attribute stays a map (the mapping stores it as JSON), arrays become tuples.
    assert _attrs(job)[c.EXTRA] == {"site_id": "site-002", "attempts": (1, 2)}


def test_log_record_keeps_its_own_ids_not_the_current_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("sink request"):  # the sink's own context must not leak in
        decoded = decode_logs(_json(p.node_logs()), "json")
    state, heartbeat = decoded.records
    assert format(state.log_record.trace_id, "032x") == p.NODE_TRACE_ID
    assert format(state.log_record.span_id, "016x") == p.NODE_OK_SPAN_ID
    assert heartbeat.log_record.trace_id == 0 and heartbeat.log_record.span_id == 0
    assert trace.get_current_span().get_span_context().trace_id == 0
    assert state.log_record.event_name == c.DEVICE_STATE_EVENT
    assert state.log_record.severity_number is SeverityNumber.INFO
    assert state.log_record.body == "device dev_007: online -> maintenance"
    assert _attrs(state.log_record)[c.EXTRA] == {"site_id": "site-002", "window_minutes": 30}


def test_unspecified_severity_and_kind_become_none_and_internal() -> None:
    document = {
        "resourceLogs": [
            {"scopeLogs": [{"logRecords": [{"severityNumber": 0, "body": {"boolValue": True}}]}]}
        ],
    }
    record = decode_logs(_json(document), "json").records[0]
    assert record.log_record.severity_number is None
    assert record.log_record.body is True
    span_doc = {
        "resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": p.NODE_TRACE_ID, "spanId": "01" * 8}]}]}]
    }
    span = decode_traces(_json(span_doc), "json").records[0]
    assert span.kind is SpanKind.INTERNAL
    # An enum name from a newer OTLP version is tolerated like an unknown field.
    span_doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["kind"] = "SPAN_KIND_FROM_THE_FUTURE"
    assert decode_traces(_json(span_doc), "json").records[0].kind is SpanKind.INTERNAL
    # Nothing is invented: no service.name when the sender gave none.
    assert "service.name" not in span.resource.attributes


def test_values_of_every_kind() -> None:
    attributes = [
        {"key": "s", "value": {"stringValue": "x"}},
        {"key": "b", "value": {"boolValue": False}},
        {"key": "i", "value": {"intValue": "9007199254740993"}},
        {"key": "d", "value": {"doubleValue": 1.5}},
        {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "p"}, {"stringValue": "q"}]}}},
        {"key": "y", "value": {"bytesValue": "AAEC"}},
        {"key": "empty", "value": {}},
    ]
    document = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {"spans": [{"traceId": p.NODE_TRACE_ID, "spanId": "01" * 8, "attributes": attributes}]}
                ]
            }
        ]
    }
    span = decode_traces(_json(document), "json").records[0]
    assert _attrs(span) == {
        "s": "x",
        "b": False,
        "i": 9007199254740993,  # beyond float precision: kept exact
        "d": 1.5,
        "a": ("p", "q"),
        "y": "AAEC",
    }


def test_snake_case_fields_and_unknown_fields_are_accepted() -> None:
    document = {
        "resource_spans": [
            {
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": p.NODE_TRACE_ID,
                                "span_id": "02" * 8,
                                "name": "x",
                                "someFutureField": 1,
                            }
                        ]
                    }
                ],
                "futureResourceField": {"a": 1},
            }
        ]
    }
    decoded = decode_traces(_json(document), "json")
    assert decoded.rejected == 0
    assert decoded.records[0].name == "x"


# --- rejections and undecodable bodies -----------------------------------------------------------
@pytest.mark.parametrize(
    ("trace_id", "span_id", "reason"),
    [
        ("", "01" * 8, "missing trace_id"),
        ("00" * 16, "01" * 8, "invalid trace_id"),
        ("abcd", "01" * 8, "invalid trace_id"),
        ("zz" * 16, "01" * 8, "invalid trace_id"),
        (p.NODE_TRACE_ID, "", "missing span_id"),
        (p.NODE_TRACE_ID, "0102", "invalid span_id"),
    ],
)
def test_a_span_with_a_bad_id_is_rejected_and_the_rest_kept(trace_id: str, span_id: str, reason: str) -> None:
    good = {"traceId": p.NODE_TRACE_ID, "spanId": "03" * 8, "name": "good"}
    bad = {"traceId": trace_id, "spanId": span_id, "name": "bad"}
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [good, bad, dict(good, name="good too")]}]}]}
    decoded = decode_traces(_json(document), "json")
    assert [s.name for s in decoded.records] == ["good", "good too"]
    assert decoded.rejected == 1
    assert decoded.error_message == f"{reason} (1)"


def test_bad_ids_in_protobuf_are_rejected_too() -> None:
    request = p.java_traces()
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x01\x02"
    request.resource_spans[0].scope_spans[0].spans[1].span_id = b""
    decoded = decode_traces(request.SerializeToString(), "protobuf")
    assert decoded.rejected == 2
    assert len(decoded.records) == 1
    assert "invalid trace_id (1)" in decoded.error_message and "missing span_id (1)" in decoded.error_message


def test_a_log_record_with_a_malformed_trace_id_is_rejected() -> None:
    request = p.java_logs()
    request.resource_logs[0].scope_logs[0].log_records[0].trace_id = b"\x01" * 5
    decoded = decode_logs(request.SerializeToString(), "protobuf")
    assert decoded.rejected == 1 and len(decoded.records) == 1
    assert decoded.error_message == "invalid trace_id (1)"


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (b"\xff\xff\xff\xff", "protobuf"),
        (b"\x0a\x05\x0a", "protobuf"),  # a length prefix longer than the data
        (b"not json", "json"),
        (b"", "json"),
        (b"\xff\xfe{}", "json"),
        (b"[1, 2]", "json"),
        (b'{"resourceSpans": "nope"}', "json"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": {"a": 1}}]}]}]}', "json"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}', "json"),
        (b"[" * 100_000 + b"]" * 100_000, "json"),
    ],
)
def test_undecodable_bodies_raise(body: bytes, encoding: str) -> None:
    with pytest.raises(OtlpDecodeError):
        decode_traces(body, encoding)  # type: ignore[arg-type]


def test_an_empty_protobuf_body_is_an_empty_request() -> None:
    decoded = decode_traces(b"", "protobuf")
    assert decoded.records == [] and decoded.rejected == 0


def test_responses_are_serialised_in_the_request_encoding() -> None:
    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = 3
    response.partial_success.error_message = "invalid trace_id (3)"
    as_json = json.loads(serialize(response, "json"))
    assert as_json == {"partialSuccess": {"rejectedSpans": "3", "errorMessage": "invalid trace_id (3)"}}
    parsed = ExportTraceServiceResponse.FromString(serialize(response, "protobuf"))
    assert parsed.partial_success.rejected_spans == 3
    assert json.loads(serialize(ExportLogsServiceRequest(), "json")) == {}
