"""OTLP export requests written the way non-Python services send them, for decoder and sink tests.

* A Node service (``@opentelemetry/sdk-node``, OTLP/HTTP JSON): stable HTTP semantic conventions
  (``http.request.method``, ``url.path``, ``http.response.status_code``, ``client.address``),
  ids in hex, enums as numbers, 64-bit integers as strings (and, for some ints, as numbers).
* A Java service (Java agent 1.x, OTLP/HTTP protobuf): the older conventions (``http.method``,
  ``http.target``, ``http.status_code``, ``net.sock.peer.addr``), an exception as a span event
  and, through the logback appender, as a log record with ``exception.*`` attributes.

``to_json`` / ``to_protobuf`` turn one form into the other so every payload is tested in both.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

START = 1_764_942_323_000_000_000  # 2025-12-05 13:45:23 UTC
MS = 1_000_000

# --- Node (JSON) ---------------------------------------------------------------------------------
NODE_TRACE_ID = "5b8efff798038103d269b633813fc60c"
NODE_ERROR_SPAN_ID = "eee19b7ec3c1b174"
NODE_OK_SPAN_ID = "eee19b7ec3c1b175"
NODE_TYPE_ERROR = "Cannot read properties of undefined (reading 'sku')"
NODE_STACK = (
    "TypeError: Cannot read properties of undefined (reading 'sku')\n"
    "    at placeOrder (/app/dist/orders.js:42:17)\n"
    "    at Layer.handle (/app/node_modules/express/lib/router/layer.js:95:5)"
)


def _node_attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def node_traces(trace_id: str = NODE_TRACE_ID) -> dict[str, Any]:
    """Two server spans (a 500 with an exception event, a 200), a client and an internal span.

    The 200 belongs to a trace of its own: ``trace_id`` reversed."""
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        _node_attr("service.name", "checkout-node"),
                        _node_attr("telemetry.sdk.language", "nodejs"),
                        _node_attr("telemetry.sdk.name", "opentelemetry"),
                        _node_attr("telemetry.sdk.version", "1.30.1"),
                    ],
                    "droppedAttributesCount": 0,
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "@opentelemetry/instrumentation-http", "version": "0.57.1"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": NODE_ERROR_SPAN_ID,
                                "name": "POST /api/orders/:id",
                                "kind": 2,
                                "startTimeUnixNano": str(START),
                                "endTimeUnixNano": str(START + 45 * MS),
                                "attributes": [
                                    _node_attr("http.request.method", "POST"),
                                    _node_attr("url.scheme", "http"),
                                    _node_attr("url.path", "/api/orders/42"),
                                    _node_attr("http.route", "/api/orders/:id"),
                                    # Node writes some ints as JSON numbers, protobuf JSON as strings.
                                    {"key": "http.response.status_code", "value": {"intValue": "500"}},
                                    _node_attr("client.address", "203.0.113.9"),
                                    _node_attr("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
                                    _node_attr("user.id", "u-77"),
                                    _node_attr("http.request.body.size", 512),
                                    _node_attr("http.response.body.size", 87),
                                    _node_attr("error.type", "TypeError"),
                                ],
                                "droppedAttributesCount": 0,
                                "events": [
                                    {
                                        "timeUnixNano": str(START + 44 * MS),
                                        "name": "exception",
                                        "attributes": [
                                            _node_attr("exception.type", "TypeError"),
                                            _node_attr("exception.message", NODE_TYPE_ERROR),
                                            _node_attr("exception.stacktrace", NODE_STACK),
                                        ],
                                        "droppedAttributesCount": 0,
                                    }
                                ],
                                "droppedEventsCount": 0,
                                "status": {"code": 2, "message": NODE_TYPE_ERROR},
                                "links": [],
                                "droppedLinksCount": 0,
                                "flags": 257,
                            },
                            {
                                "traceId": trace_id[::-1],
                                "spanId": NODE_OK_SPAN_ID,
                                "name": "GET /api/orders",
                                "kind": "SPAN_KIND_SERVER",
                                "startTimeUnixNano": str(START + 1000 * MS),
                                "endTimeUnixNano": str(START + 1003 * MS),
                                "attributes": [
                                    _node_attr("http.request.method", "GET"),
                                    _node_attr("url.path", "/api/orders"),
                                    _node_attr("url.query", "page=2"),
                                    _node_attr("http.route", "/api/orders"),
                                    _node_attr("http.response.status_code", 200),
                                    _node_attr("client.address", "203.0.113.10"),
                                ],
                                "status": {},
                            },
                            {
                                "traceId": trace_id,
                                "spanId": "eee19b7ec3c1b176",
                                "parentSpanId": NODE_ERROR_SPAN_ID,
                                "name": "POST",
                                "kind": 3,
                                "startTimeUnixNano": str(START + 5 * MS),
                                "endTimeUnixNano": str(START + 30 * MS),
                                "attributes": [
                                    _node_attr("http.request.method", "POST"),
                                    _node_attr("url.full", "http://payments:8080/charge"),
                                    _node_attr("http.response.status_code", 200),
                                ],
                                "status": {"code": 0},
                            },
                            {
                                "traceId": trace_id,
                                "spanId": "eee19b7ec3c1b177",
                                "parentSpanId": NODE_ERROR_SPAN_ID,
                                "name": "middleware - jsonParser",
                                "kind": 1,
                                "startTimeUnixNano": str(START + 1 * MS),
                                "endTimeUnixNano": str(START + 2 * MS),
                                "attributes": [],
                                "status": {"code": 0},
                            },
                        ],
                    }
                ],
            }
        ]
    }


def node_logs(trace_id: str = NODE_TRACE_ID) -> dict[str, Any]:
    """A device state change recorded by a Node service with the homepot.* keys (and a map as
    ``homepot.extra``), plus an ordinary info log that is no analytics row."""
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [_node_attr("service.name", "device-gateway-node")]},
                "scopeLogs": [
                    {
                        "scope": {"name": "device-events"},
                        "logRecords": [
                            {
                                "timeUnixNano": str(START + 2000 * MS),
                                "observedTimeUnixNano": str(START + 2001 * MS),
                                "severityNumber": 9,
                                "severityText": "INFO",
                                "eventName": "homepot.device_state_change",
                                "body": {"stringValue": "device dev_007: online -> maintenance"},
                                "attributes": [
                                    _node_attr("homepot.device.id", "dev_007"),
                                    _node_attr("homepot.device.previous_state", "online"),
                                    _node_attr("homepot.device.new_state", "maintenance"),
                                    _node_attr("homepot.device.changed_by", "system"),
                                    _node_attr("homepot.device.reason", "Firmware window"),
                                    {
                                        "key": "homepot.extra",
                                        "value": {
                                            "kvlistValue": {
                                                "values": [
                                                    _node_attr("site_id", "site-002"),
                                                    _node_attr("window_minutes", 30),
                                                ]
                                            }
                                        },
                                    },
                                ],
                                "traceId": trace_id,
                                "spanId": NODE_OK_SPAN_ID,
                            },
                            {
                                "timeUnixNano": str(START + 2002 * MS),
                                "severityNumber": 9,
                                "body": {"stringValue": "heartbeat ok"},
                                "attributes": [],
                                "traceId": "",
                                "spanId": "",
                            },
                        ],
                    }
                ],
            }
        ]
    }


# --- Java (protobuf) -----------------------------------------------------------------------------
JAVA_TRACE_ID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
JAVA_NOT_FOUND_SPAN_ID = bytes.fromhex("b7ad6b7169203331")
JAVA_ERROR_SPAN_ID = bytes.fromhex("b7ad6b7169203332")
JAVA_JOB_SPAN_ID = bytes.fromhex("b7ad6b7169203333")
JAVA_STACK = (
    "java.lang.IllegalStateException: stock service unavailable\n"
    "\tat com.homepot.inventory.StockClient.reserve(StockClient.java:88)\n"
    "\tat com.homepot.inventory.ReserveController.post(ReserveController.java:41)"
)


def _kv(key: str, value: Any) -> KeyValue:
    return KeyValue(key=key, value=_any(value))


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[_kv(k, v) for k, v in value.items()]))
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    return AnyValue(string_value=value)


def _java_resource() -> Resource:
    return Resource(
        attributes=[
            _kv("service.name", "inventory-java"),
            _kv("telemetry.sdk.language", "java"),
            _kv("telemetry.distro.name", "opentelemetry-java-instrumentation"),
            _kv("process.runtime.name", "OpenJDK Runtime Environment"),
        ]
    )


def java_traces(trace_id: bytes = JAVA_TRACE_ID) -> ExportTraceServiceRequest:
    """A 404 and a 500 (exception event) server span in old semantic conventions, and a job span."""
    not_found = Span(
        trace_id=trace_id,
        span_id=JAVA_NOT_FOUND_SPAN_ID,
        name="GET /inventory/items/{id}",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=START,
        end_time_unix_nano=START + 12_500_000,
        attributes=[
            _kv("http.method", "GET"),
            _kv("http.scheme", "http"),
            _kv("http.target", "/inventory/items/17?verbose=true"),
            _kv("http.route", "/inventory/items/{id}"),
            _kv("http.status_code", 404),
            _kv("net.sock.peer.addr", "10.1.2.3"),
            _kv("http.user_agent", "okhttp/4.12.0"),
            _kv("enduser.id", "ops-bot"),
            _kv("thread.id", 57),
        ],
        status=Status(),  # a 4xx is not an error on a server span
    )
    failed = Span(
        trace_id=trace_id,
        span_id=JAVA_ERROR_SPAN_ID,
        name="POST /inventory/reserve",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=START + 100 * MS,
        end_time_unix_nano=START + 180 * MS,
        attributes=[
            _kv("http.method", "POST"),
            _kv("http.target", "/inventory/reserve"),
            _kv("http.route", "/inventory/reserve"),
            _kv("http.status_code", 500),
            _kv("net.sock.peer.addr", "10.1.2.4"),
            _kv("http.request_content_length", 240),
        ],
        events=[
            Span.Event(
                time_unix_nano=START + 179 * MS,
                name="exception",
                attributes=[
                    _kv("exception.type", "java.lang.IllegalStateException"),
                    _kv("exception.message", "stock service unavailable"),
                    _kv("exception.stacktrace", JAVA_STACK),
                ],
            )
        ],
        status=Status(code=Status.STATUS_CODE_ERROR),
    )
    job = Span(
        trace_id=trace_id,
        span_id=JAVA_JOB_SPAN_ID,
        parent_span_id=JAVA_ERROR_SPAN_ID,
        name="job firmware_update",
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=START + 110 * MS,
        end_time_unix_nano=START + 170 * MS,
        attributes=[
            _kv("homepot.job.id", "job-j-1"),
            _kv("homepot.job.type", "firmware_update"),
            _kv("homepot.device.id", "dev_042"),
            _kv("homepot.job.status", "failed"),
            _kv("homepot.job.error_code", "E_FW_CHECKSUM"),
            _kv("homepot.job.error_message", "checksum mismatch"),
            _kv("homepot.job.retry_count", 2),
            _kv("homepot.job.initiated_by", "system"),
            _kv("homepot.extra", {"site_id": "site-002", "attempts": [1, 2]}),
        ],
        status=Status(code=Status.STATUS_CODE_ERROR, message="checksum mismatch"),
    )
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=_java_resource(),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(
                            name="io.opentelemetry.tomcat-10.0", version="1.32.0-alpha"
                        ),
                        spans=[not_found, failed, job],
                    )
                ],
            )
        ]
    )


def java_logs(trace_id: bytes = JAVA_TRACE_ID) -> ExportLogsServiceRequest:
    """The 500's exception logged through logback (attributes, no event name) and an INFO line."""
    error = LogRecord(
        time_unix_nano=START + 179 * MS,
        observed_time_unix_nano=START + 179 * MS + 5000,
        severity_number=SeverityNumber.SEVERITY_NUMBER_ERROR,
        severity_text="ERROR",
        body=AnyValue(string_value="Failed to reserve stock for order 9001"),
        attributes=[
            _kv("exception.type", "java.lang.IllegalStateException"),
            _kv("exception.message", "stock service unavailable"),
            _kv("exception.stacktrace", JAVA_STACK),
            _kv("thread.name", "http-nio-8080-exec-3"),
            _kv("code.namespace", "com.homepot.inventory.ReserveController"),
        ],
        trace_id=trace_id,
        span_id=JAVA_ERROR_SPAN_ID,
        flags=1,
    )
    info = LogRecord(
        time_unix_nano=START + 10 * MS,
        severity_number=SeverityNumber.SEVERITY_NUMBER_INFO,
        severity_text="INFO",
        body=AnyValue(string_value="Reserved 3 items"),
        trace_id=trace_id,
        span_id=JAVA_NOT_FOUND_SPAN_ID,
    )
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=_java_resource(),
                scope_logs=[
                    ScopeLogs(
                        scope=InstrumentationScope(name="com.homepot.inventory.ReserveController"),
                        log_records=[error, info],
                    )
                ],
            )
        ]
    )


# --- one form into the other ---------------------------------------------------------------------
_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _walk(node: Any, convert: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = convert(value)
            else:
                _walk(value, convert)
    elif isinstance(node, list):
        for item in node:
            _walk(item, convert)


def to_json(message: Message) -> dict[str, Any]:
    """OTLP/JSON as the specification writes it: hex ids, enums as integers."""
    document = json_format.MessageToDict(message, use_integers_for_enums=True)
    _walk(document, lambda value: base64.b64decode(value).hex())
    return document


def to_protobuf(document: dict[str, Any], message_type: type[Message]) -> Message:
    """The protobuf message an OTLP/JSON document describes."""
    document = copy.deepcopy(document)
    _walk(document, lambda value: base64.b64encode(bytes.fromhex(value)).decode())
    return json_format.ParseDict(document, message_type(), ignore_unknown_fields=True)
