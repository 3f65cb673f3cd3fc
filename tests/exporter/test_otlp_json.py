"""OTLP/JSON to protobuf without ``json_format``: the same messages, ten times faster.

The reference is protobuf's own ``json_format.ParseDict`` (with OTLP's hex ids made base64, as
``otlp_payloads.to_protobuf`` does): every payload must give the very message it gives."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from exporter.otlp_decode import OtlpDecodeError, decode_traces
from exporter.otlp_json import message_from_json
from tests.exporter.otlp_payloads import java_logs, java_traces, node_logs, node_traces, to_json, to_protobuf

TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"


def _every_kind_of_value() -> dict[str, Any]:
    """Each AnyValue kind, 64-bit integers as strings and numbers, enums as names and numbers,
    proto field names beside JSON names, unknown keys and nulls."""
    attributes = [
        {"key": "s", "value": {"stringValue": "text ✓"}},
        {"key": "b", "value": {"boolValue": False}},
        {"key": "i", "value": {"intValue": "9007199254740993"}},
        {"key": "j", "value": {"int_value": -3}},
        {"key": "d", "value": {"doubleValue": 1.5}},
        {"key": "nan", "value": {"doubleValue": "NaN"}},
        {"key": "raw", "value": {"bytesValue": base64.b64encode(b"\x00\xff").decode()}},
        {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "x"}, {"intValue": 1}]}}},
        {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": True}}]}}},
        {"key": "empty", "value": {}},
        {"key": "null", "value": None},
    ]
    span = {
        "traceId": TRACE_ID,
        "spanId": SPAN_ID,
        "parentSpanId": "",
        "name": "GET /orders",
        "kind": "SPAN_KIND_SERVER",
        "startTimeUnixNano": "1764942323000000000",
        "endTimeUnixNano": 1764942323012000000,
        "attributes": attributes,
        "dropped_attributes_count": 2,
        "events": [
            {"timeUnixNano": "1764942323005000000", "name": "exception", "attributes": attributes[:2]}
        ],
        "links": [{"traceId": TRACE_ID, "spanId": SPAN_ID, "traceState": "k=v"}],
        "status": {"code": 2, "message": "boom"},
        "flags": 257,
        "aFieldFromTheFuture": {"nested": [1, 2]},
        "traceState": None,
    }
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": attributes[:1]},
                "scope_spans": [{"scope": {"name": "manual", "version": "1.0"}, "spans": [span]}],
                "schemaUrl": "https://opentelemetry.io/schemas/1.24.0",
            }
        ]
    }


PAYLOADS: list[tuple[str, dict[str, Any], type[Message]]] = [
    ("node traces", node_traces(), ExportTraceServiceRequest),
    ("node logs", node_logs(), ExportLogsServiceRequest),
    ("java traces", to_json(java_traces()), ExportTraceServiceRequest),
    ("java logs", to_json(java_logs()), ExportLogsServiceRequest),
    ("every kind of value", _every_kind_of_value(), ExportTraceServiceRequest),
]


@pytest.mark.parametrize(
    ("document", "message_type"), [(d, t) for _, d, t in PAYLOADS], ids=[n for n, *_ in PAYLOADS]
)
def test_the_same_message_as_protobufs_json_format(
    document: dict[str, Any], message_type: type[Message]
) -> None:
    expected = to_protobuf(document, message_type)
    assert message_from_json(json.loads(json.dumps(document)), message_type) == expected


def test_ids_in_base64_are_accepted_and_bad_ids_are_left_to_reject_their_record() -> None:
    document = node_traces()
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[0]["traceId"] = base64.b64encode(bytes.fromhex(TRACE_ID)).decode()
    spans[1]["spanId"] = "not an id"
    message = message_from_json(document, ExportTraceServiceRequest)
    decoded = message.resource_spans[0].scope_spans[0].spans
    assert decoded[0].trace_id == bytes.fromhex(TRACE_ID)
    assert len(decoded[1].span_id) == 1  # the wrong size: the decoder rejects this span alone
    result = decode_traces(json.dumps(document).encode(), "json")
    assert len(result.records) == len(spans) - 1
    assert result.rejected == 1


def test_an_unknown_enum_name_leaves_the_field_unset() -> None:
    document = node_traces()
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["kind"] = "SPAN_KIND_FROM_THE_FUTURE"
    message = message_from_json(document, ExportTraceServiceRequest)
    assert message.resource_spans[0].scope_spans[0].spans[0].kind == 0
    assert message == to_protobuf(document, ExportTraceServiceRequest)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("name",), 42),  # a string field given a number
        (("attributes",), {"key": "x"}),  # a repeated field given an object
        (("startTimeUnixNano",), "12x"),  # not an integer
        (("startTimeUnixNano",), 1.5),
        (("status",), "error"),  # a message given a string
        (("attributes", 0, "value", "boolValue"), "true"),
        (("traceId",), 7),
    ],
)
def test_a_value_of_the_wrong_type_refuses_the_request(path: tuple[Any, ...], value: Any) -> None:
    document = node_traces()
    target: Any = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(ValueError):
        message_from_json(document, ExportTraceServiceRequest)
    with pytest.raises(OtlpDecodeError, match="invalid OTLP/JSON"):
        decode_traces(json.dumps(document).encode(), "json")


def test_an_integer_out_of_its_range_refuses_the_request() -> None:
    document = node_traces()
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["droppedAttributesCount"] = 2**40
    with pytest.raises(OtlpDecodeError):
        decode_traces(json.dumps(document).encode(), "json")
