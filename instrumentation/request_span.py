"""The server span of a request when nothing but the analytics tables will read it.

An SDK span is built for every consumer at once: attribute validation per value, a lock per
change, a frozen ``ReadableSpan`` copy at the end for each processor. When the only processor
of a provider ``setup_telemetry`` made is ours (``LinkedSpanProcessor``: the export worker) the
request span is instead a ``RequestSpan``: a small object implementing OpenTelemetry's ``Span``
API, current for the request like any span (children, jobs and records made during it join its
trace), that encodes itself into the worker's span format when it ends (``exporter.compact``).
Measured in-process, the span's part of the request path drops from ~21 µs to ~4 µs
(bench/README.md).

The SDK path is kept whenever anything else could see the span: another processor on the
provider (added at any time: checked per request), a provider the application made, a
collector export, an attribute length limit. The sampler is still asked, so the ``sampled``
flag that goes downstream in ``traceparent`` is what the SDK would have set; ids come from the
provider's id generator.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import DEFAULT_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util import types

from exporter.compact import encode_span_fields, resource_key, scope_key
from exporter.conventions import INSTRUMENTATION_NAME
from exporter.linked_processors import LinkedSpanProcessor
from exporter.sampling import RecordAll

logger = logging.getLogger(__name__)

# The SDK's default span limits: a span takes at most this many attributes and events.
MAX_ATTRIBUTES = 128
MAX_EVENTS = 128
_SERVER = SpanKind.SERVER.value
_ATOMIC = (str, bool, int, float)
# W3C trace context level 2: the trace id was made at random (the SDK sets it on roots).
_RANDOM_TRACE_ID = 0x02
# Every flag combination a request span can carry, made once (TraceFlags is an int subclass).
_FLAGS = tuple(TraceFlags(value) for value in range(4))
# A status is immutable: one for every span that has none yet.
_UNSET = Status(StatusCode.UNSET)


def _clean(value: Any) -> Any:
    """An attribute value as the SDK would keep it, or None (dropped) as it would drop it."""
    if isinstance(value, _ATOMIC):
        return value
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        kinds = {type(item) for item in value if item is not None}
        if len(kinds) <= 1 and all(issubclass(kind, _ATOMIC) for kind in kinds):
            return tuple(value)
    logger.warning("invalid type %s for attribute value; dropped", type(value).__name__)
    return None


class RequestSpan(trace.Span):
    """One request's span, recorded for the tables only (see the module docstring)."""

    __slots__ = (
        "_attributes",
        "_context",
        "_end",
        "_events",
        "_factory",
        "_name",
        "_parent",
        "_start",
        "_status",
    )

    kind = SpanKind.SERVER

    def __init__(
        self,
        factory: RequestSpans,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
    ) -> None:
        self._factory = factory
        self._name = name
        self._context = context
        self._parent = parent
        self._attributes = attributes
        self._events: list[tuple[str, int, dict[str, Any]]] = []
        self._status = _UNSET
        self._start = time.time_ns()
        self._end: int | None = None

    # --- what other code reads ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def parent(self) -> SpanContext | None:
        return self._parent

    @property
    def start_time(self) -> int:
        return self._start

    @property
    def end_time(self) -> int | None:
        return self._end

    @property
    def attributes(self) -> Mapping[str, Any]:
        return dict(self._attributes)

    @property
    def status(self) -> Status:
        return self._status

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end is None

    # --- what other code writes ---------------------------------------------------------------
    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self.set_attributes({key: value})

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end is not None:
            logger.warning("setting attributes on an ended span")
            return
        for key, value in attributes.items():
            if not key or not isinstance(key, str):
                continue
            cleaned = _clean(value)
            if cleaned is not None:
                self._put(key, cleaned)

    def set_checked_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Values the middleware made (str and int): kept as they are."""
        if self._end is not None:
            return
        if len(self._attributes) + len(attributes) <= MAX_ATTRIBUTES:
            self._attributes.update(attributes)  # nothing to evict: one call, not one per value
            return
        for key, value in attributes.items():
            self._put(key, value)

    def _put(self, key: str, value: Any) -> None:
        if key not in self._attributes and len(self._attributes) >= MAX_ATTRIBUTES:
            del self._attributes[next(iter(self._attributes))]  # the oldest goes, as in the SDK
        self._attributes[key] = value

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self._end is not None or len(self._events) >= MAX_EVENTS:
            return
        cleaned = {}
        for key, value in (attributes or {}).items():
            kept = _clean(value)
            if kept is not None:
                cleaned[key] = kept
        self._events.append((name, timestamp or time.time_ns(), cleaned))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        return None  # the tables keep no links

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # The SDK's rules: OK is final, UNSET never replaces a status.
        if self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module, qualname = type(exception).__module__, type(exception).__qualname__
        recorded: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        recorded.update(attributes or {})
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            logger.warning("calling end() on an ended span")
            return
        self._end = end_time or time.time_ns()
        self._factory.finished(self)

    def encode(self, resource: int, scope: int) -> bytes:
        context, parent, status = self._context, self._parent, self._status
        return encode_span_fields(
            self._name,
            (context.trace_id, context.span_id, int(context.trace_flags)),
            None if parent is None else (parent.trace_id, parent.span_id, parent.is_remote),
            _SERVER,
            self._start,
            self._end,
            self._attributes,
            self._events,
            status.status_code.value,
            status.description,
            resource,
            scope,
        )


class RequestSpans:
    """Starts ``RequestSpan``s for ``provider`` while ``processor`` is its only processor."""

    def __init__(self, provider: TracerProvider, processor: LinkedSpanProcessor) -> None:
        self._provider = provider
        self._processor = processor
        self._processors = provider._active_span_processor
        # Fixed when the provider is made: no attribute length limit to apply, the SDK enabled.
        self._eligible = provider._span_limits.max_span_attribute_length is None and not getattr(
            provider, "_disabled", False
        )
        # The sampler setup_telemetry makes by default: RecordAll wrapping the SDK's own default
        # instance (OTEL_TRACES_SAMPLER unset). Checked by identity per request.
        self._default_sampler = (
            provider.sampler
            if isinstance(provider.sampler, RecordAll) and provider.sampler.configured is DEFAULT_ON
            else None
        )
        link = processor.link
        self._resource = resource_key(link.interned, provider.resource)
        self._scope = scope_key(link.interned, InstrumentationScope(INSTRUMENTATION_NAME))

    def usable(self) -> bool:
        """Whether nothing but our processor would see a span of the provider (per request:
        an application may add its own processor at any time)."""
        processors = getattr(self._processors, "_span_processors", None)
        return (
            self._eligible
            and processors is not None
            and len(processors) == 1
            and processors[0] is self._processor
        )

    def start(
        self,
        name: str,
        parent_context: Context | None,
        attributes: dict[str, Any],
        current_span: trace.Span | None = None,
    ) -> trace.Span:
        """A span as the SDK's tracer would start it (ids, sampler, flags), recorded for us.
        ``current_span``: the span of ``parent_context`` when the caller has looked it up."""
        provider = self._provider
        if current_span is None:
            current_span = trace.get_current_span(parent_context)
        current: SpanContext | None = current_span.get_span_context()
        parent = current if current is not None and current.is_valid else None
        if parent is None:
            trace_id = provider.id_generator.generate_trace_id()
            random_trace_id = provider.id_generator.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random_trace_id = bool(parent.trace_flags & _RANDOM_TRACE_ID)
        sampler = provider.sampler
        if sampler is self._default_sampler:
            # RecordAll(parent-based always-on), what setup_telemetry makes unless
            # OTEL_TRACES_SAMPLER names another: a root is sampled, a child is sampled as its
            # parent is (recorded either way) and keeps its trace state; the attributes are the
            # span's own. Decided here: the SDK's call costs ~2 µs per request (tests compare).
            sampled = parent is None or parent.trace_flags.sampled
            trace_state = None if parent is None else parent.trace_state
            kept = attributes
        else:
            result = sampler.should_sample(parent_context, trace_id, name, SpanKind.SERVER, attributes)
            if not result.decision.is_recording():  # a sampler of the application's that drops
                return trace.NonRecordingSpan(parent or trace.INVALID_SPAN_CONTEXT)
            sampled, trace_state = result.decision.is_sampled(), result.trace_state
            # Samplers mostly hand the span's own attributes back: then no copy is needed.
            given = result.attributes
            kept = attributes if not given or given == attributes else dict(given)
        flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
        if random_trace_id:
            flags |= _RANDOM_TRACE_ID
        context = SpanContext(
            trace_id,
            provider.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=_FLAGS[flags],
            trace_state=trace_state,
        )
        return RequestSpan(self, name, context, parent, kept)

    def finished(self, span: RequestSpan) -> None:
        self._processor.take_encoded(span.encode(self._resource, self._scope))
