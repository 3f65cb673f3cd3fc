"""Decodes OTLP export requests (protobuf or JSON) into OpenTelemetry SDK span and log record objects.

The OTLP sink feeds what a collector sends through the same ``span_to_rows`` / ``log_record_to_rows``
as the in-process exporter; this module turns the wire format into the objects those functions
take. Pure: bytes in, objects out. A record that cannot be represented (a missing or malformed
trace/span id) is counted as rejected with its reason, so the sink can answer with OTLP's
``partial_success``; a body that cannot be parsed at all raises ``OtlpDecodeError``.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope as SdkScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from exporter.otlp_json import ID_SIZES, message_from_json

Encoding = Literal["protobuf", "json"]
Record = TypeVar("Record")
Request = TypeVar("Request", ExportTraceServiceRequest, ExportLogsServiceRequest)

_TRACE_ID_BYTES = ID_SIZES["trace_id"]
_SPAN_ID_BYTES = ID_SIZES["span_id"]

# OTLP's SpanKind starts with UNSPECIFIED = 0; the SDK's has no such value.
_SPAN_KINDS = {
    trace_pb2.Span.SPAN_KIND_INTERNAL: SpanKind.INTERNAL,
    trace_pb2.Span.SPAN_KIND_SERVER: SpanKind.SERVER,
    trace_pb2.Span.SPAN_KIND_CLIENT: SpanKind.CLIENT,
    trace_pb2.Span.SPAN_KIND_PRODUCER: SpanKind.PRODUCER,
    trace_pb2.Span.SPAN_KIND_CONSUMER: SpanKind.CONSUMER,
}
_STATUS_CODES = {
    trace_pb2.Status.STATUS_CODE_OK: StatusCode.OK,
    trace_pb2.Status.STATUS_CODE_ERROR: StatusCode.ERROR,
}
_SEVERITIES = {number.value: number for number in SeverityNumber if number.value > 0}


class OtlpDecodeError(ValueError):
    """The request body is not a valid OTLP export request in the declared encoding."""


class _Rejected(Exception):
    """One record cannot be represented; the reason goes into ``partial_success``."""


@dataclass
class Decoded(Generic[Record]):
    """The records of one export request, and how many were rejected and why."""

    records: list[Record] = field(default_factory=list)
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejected += count
        self.reasons[reason] += count

    @property
    def error_message(self) -> str:
        """A short human-readable summary of the rejections ("" when nothing was rejected)."""
        return "; ".join(f"{reason} ({count})" for reason, count in self.reasons.most_common(5))


# --- parsing ---------------------------------------------------------------------------------------
def parse_traces(body: bytes, encoding: Encoding) -> ExportTraceServiceRequest:
    """The ExportTraceServiceRequest in ``body``; raises OtlpDecodeError."""
    return _parse(body, encoding, ExportTraceServiceRequest)


def parse_logs(body: bytes, encoding: Encoding) -> ExportLogsServiceRequest:
    """The ExportLogsServiceRequest in ``body``; raises OtlpDecodeError."""
    return _parse(body, encoding, ExportLogsServiceRequest)


def _parse(body: bytes, encoding: Encoding, message_type: type[Request]) -> Request:
    if encoding == "protobuf":
        message = message_type()
        try:
            message.ParseFromString(body)
        except (DecodeError, RecursionError) as error:
            raise OtlpDecodeError(f"invalid protobuf: {error}") from error
        return message
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise OtlpDecodeError(f"invalid JSON: {error}") from error
    if not isinstance(document, dict):
        raise OtlpDecodeError("invalid OTLP/JSON: the body must be a JSON object")
    try:
        return message_from_json(document, message_type)
    except (ValueError, RecursionError) as error:
        raise OtlpDecodeError(f"invalid OTLP/JSON: {error}") from error


# --- values ----------------------------------------------------------------------------------------
def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        # Kept as a dict: the mapping stores a map-valued homepot.extra as JSON directly.
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for pair in pairs:
        value = _value(pair.value)
        if value is not None:
            attributes[pair.key] = value
    return attributes


def _resource(resource: PbResource, schema_url: str) -> Resource:
    # Resource() (not Resource.create) so nothing is added: the sender's service.name stays its own.
    attributes = {
        key: json.dumps(value, default=str) if isinstance(value, dict) else value
        for key, value in _attributes(resource.attributes).items()
    }
    return Resource(attributes, schema_url or None)


def _scope(scope: InstrumentationScope, schema_url: str) -> SdkScope:
    return SdkScope(scope.name, scope.version or None, schema_url or None, _attributes(scope.attributes))


def _id(raw: bytes, size: int, name: str, *, required: bool) -> int:
    if not raw:
        if required:
            raise _Rejected(f"missing {name}")
        return 0
    if len(raw) != size:
        raise _Rejected(f"invalid {name}")
    number = int.from_bytes(raw, "big")
    if number == 0 and required:
        raise _Rejected(f"invalid {name}")
    return number


# --- spans -----------------------------------------------------------------------------------------
def decode_traces(body: bytes, encoding: Encoding) -> Decoded[ReadableSpan]:
    """The spans of an OTLP trace export request as SDK ``ReadableSpan`` objects."""
    return spans_from_request(parse_traces(body, encoding))


def spans_from_request(request: ExportTraceServiceRequest) -> Decoded[ReadableSpan]:
    decoded: Decoded[ReadableSpan] = Decoded()
    for resource_spans in request.resource_spans:
        resource = _resource(resource_spans.resource, resource_spans.schema_url)
        for scope_spans in resource_spans.scope_spans:
            scope = _scope(scope_spans.scope, scope_spans.schema_url)
            for span in scope_spans.spans:
                try:
                    decoded.records.append(_span(span, resource, scope))
                except _Rejected as rejected:
                    decoded.reject(str(rejected))
    return decoded


def _span(span: trace_pb2.Span, resource: Resource, scope: SdkScope) -> ReadableSpan:
    trace_id = _id(span.trace_id, _TRACE_ID_BYTES, "trace_id", required=True)
    span_id = _id(span.span_id, _SPAN_ID_BYTES, "span_id", required=True)
    parent_id = _id(span.parent_span_id, _SPAN_ID_BYTES, "parent_span_id", required=False)
    flags = TraceFlags(span.flags & 0xFF)
    status_code = _STATUS_CODES.get(span.status.code, StatusCode.UNSET)
    # The SDK only keeps a description on ERROR (and warns otherwise).
    description = (span.status.message or None) if status_code is StatusCode.ERROR else None
    start = span.start_time_unix_nano or None
    events = [
        Event(event.name, _attributes(event.attributes), event.time_unix_nano or start)
        for event in span.events
    ]
    return ReadableSpan(
        name=span.name,
        context=SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags),
        parent=SpanContext(trace_id, parent_id, is_remote=True) if parent_id else None,
        resource=resource,
        attributes=_attributes(span.attributes),
        events=events,
        kind=_SPAN_KINDS.get(span.kind, SpanKind.INTERNAL),
        status=Status(status_code, description),
        start_time=start,
        end_time=span.end_time_unix_nano or None,
        instrumentation_scope=scope,
    )


# --- log records -----------------------------------------------------------------------------------
def decode_logs(body: bytes, encoding: Encoding) -> Decoded[ReadableLogRecord]:
    """The log records of an OTLP logs export request as SDK ``ReadableLogRecord`` objects."""
    return log_records_from_request(parse_logs(body, encoding))


def log_records_from_request(request: ExportLogsServiceRequest) -> Decoded[ReadableLogRecord]:
    decoded: Decoded[ReadableLogRecord] = Decoded()
    for resource_logs in request.resource_logs:
        resource = _resource(resource_logs.resource, resource_logs.schema_url)
        for scope_logs in resource_logs.scope_logs:
            scope = _scope(scope_logs.scope, scope_logs.schema_url)
            for record in scope_logs.log_records:
                try:
                    decoded.records.append(_log_record(record, resource, scope))
                except _Rejected as rejected:
                    decoded.reject(str(rejected))
    return decoded


def _log_record(record: logs_pb2.LogRecord, resource: Resource, scope: SdkScope) -> ReadableLogRecord:
    # A log record need not belong to a trace: both ids may be empty, but not malformed.
    trace_id = _id(record.trace_id, _TRACE_ID_BYTES, "trace_id", required=False)
    span_id = _id(record.span_id, _SPAN_ID_BYTES, "span_id", required=False)
    log = LogRecord(
        timestamp=record.time_unix_nano or None,
        observed_timestamp=record.observed_time_unix_nano or None,
        severity_text=record.severity_text or None,
        severity_number=_SEVERITIES.get(record.severity_number),
        body=_value(record.body),
        attributes=_attributes(record.attributes),
        event_name=record.event_name or None,
    )
    # Set after construction: the constructor falls back to the *current* span's ids, which
    # in the sink would be whatever request happens to be active, not the sender's.
    log.trace_id = trace_id
    log.span_id = span_id
    log.trace_flags = TraceFlags(record.flags & 0xFF)
    return ReadableLogRecord(log_record=log, resource=resource, instrumentation_scope=scope)


# --- responses -------------------------------------------------------------------------------------
def serialize(message: Message, encoding: Encoding) -> bytes:
    """A response message in the request's encoding."""
    if encoding == "protobuf":
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()
