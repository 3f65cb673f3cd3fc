"""Finished spans and log records as compact bytes, and back: what crosses to the export worker.

An instrumented service hands its telemetry to a worker process (``exporter.worker``) that maps
and writes it. On the service's side a record is turned into bytes the moment it ends: a
pickled tuple of plain values (ids as ints, times as ints, attributes as the dict the SDK holds),
so no span object or attribute graph waits in a queue for the garbage collector to walk, and
nothing of the mapping or the COPY runs in the service's interpreter. The worker rebuilds SDK
``ReadableSpan`` / ``ReadableLogRecord`` objects, so the one mapping (``exporter.mapping``) reads
them exactly as it reads the SDK's own.

Resources and instrumentation scopes are the same few objects for every record of a provider:
a record carries a small key, and each frame carries the table of keys (``Interned``). Pure:
values in, values out.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from exporter.mapping.values import has_events, plain, span_attributes

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_KINDS = {kind.value: kind for kind in SpanKind}
_STATUS_CODES = {code.value: code for code in StatusCode}
_SEVERITIES = {number.value: number for number in SeverityNumber}

# What a key stands for: (resource attributes, schema url) or (scope name, version, schema url).
Described = tuple[Any, ...]


class Interned:
    """Small integer keys for resources and scopes, so a record names its own in a few bytes.

    Holds the objects it has seen (an ``id`` is only unique while its object lives) and each
    one's plain description, which every frame carries (``descriptions``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[int, int] = {}
        self._held: list[Any] = []
        self._descriptions: dict[int, Described] = {}

    def key(self, item: Any, describe: Any) -> int:
        key = self._keys.get(id(item))
        if key is not None:
            return key
        with self._lock:
            key = self._keys.get(id(item))
            if key is None:
                key = len(self._held)
                self._held.append(item)
                self._descriptions[key] = describe(item)
                self._keys[id(item)] = key
        return key

    def descriptions(self) -> dict[int, Described]:
        with self._lock:
            return dict(self._descriptions)


def _describe_resource(resource: Resource | None) -> Described:
    if resource is None:
        return ({}, None)
    return (dict(resource.attributes), resource.schema_url or None)


def _describe_scope(scope: InstrumentationScope | None) -> Described:
    if scope is None:
        return ("", None, None)
    return (scope.name, scope.version, scope.schema_url or None)


def _context_ids(context: SpanContext | None) -> tuple[int, int, int] | None:
    if context is None:
        return None
    return (context.trace_id, context.span_id, int(context.trace_flags))


def encode_span(span: ReadableSpan, interned: Interned) -> bytes:
    """The bytes of one finished span: what the mapping reads of it, nothing else."""
    context = span.context
    parent = span.parent
    status = span.status
    events = (
        [(event.name, event.timestamp, dict(plain(event.attributes))) for event in span.events]
        if has_events(span)
        else ()
    )
    return encode_span_fields(
        span.name,
        _context_ids(context),
        None if parent is None else (parent.trace_id, parent.span_id, parent.is_remote),
        span.kind.value,
        span.start_time,
        span.end_time,
        _as_dict(span_attributes(span)),
        events,
        status.status_code.value,
        status.description,
        resource_key(interned, span.resource),
        scope_key(interned, span.instrumentation_scope),
    )


def encode_span_fields(*fields: Any) -> bytes:
    """The one span format, for spans that are not SDK objects (``instrumentation.request_span``):
    name, (trace id, span id, flags), parent (trace id, span id, is remote) or None, kind value,
    start and end (ns), attributes, events [(name, ns, attributes)], status code value, status
    description, resource key, scope key (keys from ``Interned``)."""
    return pickle.dumps(fields, _PROTOCOL)


def resource_key(interned: Interned, resource: Resource | None) -> int:
    return interned.key(resource, _describe_resource)


def scope_key(interned: Interned, scope: InstrumentationScope | None) -> int:
    return interned.key(scope, _describe_scope)


def _as_dict(attributes: Mapping[str, Any]) -> dict[str, Any]:
    # The SDK's own dict as it is (the span has ended: nothing changes it any more).
    return attributes if type(attributes) is dict else dict(attributes)


def encode_log_record(record: ReadableLogRecord, interned: Interned) -> bytes:
    """The bytes of one log record; a body pickle cannot take is kept as its text."""
    log = record.log_record
    severity = log.severity_number
    fields = [
        log.timestamp,
        log.observed_timestamp,
        log.trace_id,
        log.span_id,
        None if log.trace_flags is None else int(log.trace_flags),
        log.severity_text,
        None if severity is None else severity.value,
        log.body,
        dict(plain(log.attributes)),
        getattr(log, "event_name", None),
        resource_key(interned, record.resource),
        scope_key(interned, record.instrumentation_scope),
    ]
    try:
        return pickle.dumps(tuple(fields), _PROTOCOL)
    except Exception:  # an object of the application's own as the body or an attribute value
        fields[7] = None if log.body is None else str(log.body)
        fields[8] = {key: _picklable(value) for key, value in plain(log.attributes).items()}
        return pickle.dumps(tuple(fields), _PROTOCOL)


def _picklable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, tuple | list):
        return tuple(_picklable(item) for item in value)
    return str(value)


class Rebuilt:
    """The resources and scopes of one frame, each built once for all its records."""

    def __init__(self, descriptions: Mapping[int, Described]) -> None:
        self._descriptions = descriptions
        self._resources: dict[int, Resource] = {}
        self._scopes: dict[int, InstrumentationScope] = {}

    def resource(self, key: int) -> Resource:
        resource = self._resources.get(key)
        if resource is None:
            attributes, schema_url = self._descriptions.get(key, ({}, None))
            # Resource() (not Resource.create) so nothing is added: the service's name stays its own.
            resource = self._resources[key] = Resource(attributes, schema_url)
        return resource

    def scope(self, key: int) -> InstrumentationScope:
        scope = self._scopes.get(key)
        if scope is None:
            name, version, schema_url = self._descriptions.get(key, ("", None, None))
            scope = self._scopes[key] = InstrumentationScope(name, version, schema_url)
        return scope


def decode_span(data: bytes, rebuilt: Rebuilt) -> ReadableSpan:
    (
        name,
        context,
        parent,
        kind,
        start,
        end,
        attributes,
        events,
        status_code,
        description,
        resource,
        scope,
    ) = pickle.loads(data)
    span_context = None
    if context is not None:
        trace_id, span_id, flags = context
        span_context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags))
    parent_context = None
    if parent is not None:
        parent_context = SpanContext(parent[0], parent[1], is_remote=parent[2])
    return ReadableSpan(
        name=name,
        context=span_context,
        parent=parent_context,
        resource=rebuilt.resource(resource),
        attributes=attributes,
        events=[
            Event(event_name, event_attributes, timestamp)
            for event_name, timestamp, event_attributes in events
        ],
        kind=_KINDS.get(kind, SpanKind.INTERNAL),
        status=Status(_STATUS_CODES.get(status_code, StatusCode.UNSET), description),
        start_time=start,
        end_time=end,
        instrumentation_scope=rebuilt.scope(scope),
    )


def decode_log_record(data: bytes, rebuilt: Rebuilt) -> ReadableLogRecord:
    (
        timestamp,
        observed,
        trace_id,
        span_id,
        flags,
        severity_text,
        severity,
        body,
        attributes,
        event_name,
        resource,
        scope,
    ) = pickle.loads(data)
    log = LogRecord(
        timestamp=timestamp,
        observed_timestamp=observed,
        severity_text=severity_text,
        severity_number=None if severity is None else _SEVERITIES.get(severity),
        body=body,
        attributes=attributes,
        event_name=event_name,
    )
    # Set after construction: the constructor falls back to the worker's current span's ids.
    log.trace_id = trace_id
    log.span_id = span_id
    log.trace_flags = None if flags is None else TraceFlags(flags)  # type: ignore[assignment]
    return ReadableLogRecord(
        log_record=log, resource=rebuilt.resource(resource), instrumentation_scope=rebuilt.scope(scope)
    )
