"""The server span of every HTTP request: one ASGI middleware, outermost in the app's stack.

It replaces the stock ``FastAPIInstrumentor`` for our purposes, because it is cheaper and sees
more. The span is current while the request runs (user middleware, handlers, error handlers,
background tasks), so jobs, device states and errors recorded on the way join its trace. It
carries the attributes of the stable HTTP semantic conventions that the analytics tables need,
plus what stock instrumentation leaves out: body sizes counted as they stream (no
Content-Length needed), the user, the client behind trusted proxies, and the error text of
4xx/5xx responses. It skips what stock instrumentation pays on every request and we never
store: each attribute in two convention sets, a second route lookup, duration histograms,
per-message bookkeeping (bench/README.md has the figures).

The span ends when the last byte of the response is sent, so ``response_time_ms`` is what the
client waited, not counting background tasks. ``ExceptionRecorder``, just inside Starlette's
error handler, records an unhandled exception on the span before the 500 goes out; one raised
after the response (a background task) becomes an error record in the request's trace.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import Span as _SdkSpan
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.routing import Mount

from exporter import conventions as c
from exporter.containment import never_raise
from exporter.events import error_event
from exporter.own_logging import exporter_logger
from instrumentation import _state
from instrumentation.asgi import ERROR_BODY_CAPTURE_BYTES, ASGIApp, Message, Receive, Scope, Send, error_text
from instrumentation.client_ip import Network, client_ip
from instrumentation.detached import enter_request, leave_request
from instrumentation.exclusions import ExcludedPaths
from instrumentation.log_capture import mark_recorded
from instrumentation.records import record_error
from instrumentation.request_span import RequestSpan, RequestSpans
from instrumentation.stock import StockSpanDetails
from instrumentation.users import UserResolver

logger = exporter_logger(__name__)
# Instrumentation must never break the host application. The guards keep no state: one each,
# built once, costs the request path nothing measurable.
_SPAN_END_GUARD = never_raise("could not complete the request span", logger=logger)
_USER_RESOLVER_GUARD = never_raise(
    "the user resolver failed; the request is recorded without a user", logger=logger
)


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers") or ()}


def route_template(scope: Scope, entry_root_path: str) -> str | None:
    """The matched route's template (``/devices/{device_id}``), mounts' prefixes included.

    Routers leave the innermost matched route in ``scope["route"]`` (FastAPI only for its own
    routes), and each mount a request goes through appends its matched prefix to
    ``root_path``. A request a mounted app answers without a route of its own (static files)
    is named by the mount, as stock instrumentation does.
    """
    mounted = str(scope.get("root_path", ""))[len(entry_root_path) :]
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None or isinstance(route, Mount):
        return mounted or None
    return mounted + path


class _ScopeHeaders:
    """The propagator's view of the ASGI headers."""

    @staticmethod
    def get(scope: Scope, key: str) -> list[str] | None:
        wanted = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for name, value in scope.get("headers") or () if name == wanted]
        if len(values) > 1 and wanted == b"baggage":
            return [",".join(values)]  # the baggage propagator reads only the first value
        return values or None

    @staticmethod
    def keys(scope: Scope) -> list[str]:
        return [name.decode("latin-1") for name, _ in scope.get("headers") or ()]


_SCOPE_HEADERS = _ScopeHeaders()


EXCHANGE_KEY = "homepot_analytics.exchange"


class _Exchange:
    """One request's span, and whether it has ended (the response went out) or failed."""

    __slots__ = ("ended", "exception", "path", "span")

    def __init__(self, span: trace.Span, path: str) -> None:
        self.span = span
        self.path = path
        self.ended = False
        self.exception: BaseException | None = None

    def failed(self, exception: BaseException) -> None:
        if exception is self.exception:  # seen on the way in already
            return
        self.exception = exception
        summary = f"{type(exception).__name__}: {exception}"
        if self.ended:  # raised after the response was sent (a background task): still an error
            record_error("api", "error", None, summary, exception=exception, endpoint=self.path)
            return
        self.span.record_exception(exception, escaped=True)
        mark_recorded(exception)
        self.span.set_status(Status(StatusCode.ERROR, summary))


class ExceptionRecorder:
    """Sits just inside Starlette's error handler: records an unhandled exception on the span
    before the handler turns it into a 500, so the span can end with that response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exception:
            exchange = scope.get(EXCHANGE_KEY)
            if isinstance(exchange, _Exchange):
                exchange.failed(exception)
            raise


NESTED_WARNING = (
    "this app is also instrumented by OpenTelemetry's ASGI/FastAPI instrumentation: its server span "
    "is kept as the request's (one span, one api_request_logs row per request) and setup_telemetry "
    "adds the user, body sizes and error text to it; setup_telemetry alone is cheaper"
)


def _server_error(
    attributes: dict[str, Any], status_code: int, method: str, route: str | None, path: str
) -> None:
    """A 5xx the app answered itself (``HTTPException(500)``, a returned 503) is an error too:
    one row, in the request's trace, grouped by route and normalised detail. An unhandled
    exception has its row from the span's exception event instead."""
    user = attributes.get(c.USER_ID[0])
    event = error_event(
        "api",
        "error",
        f"HTTP_{status_code}",
        str(attributes.get(c.HTTP_ERROR_MESSAGE) or _reason(status_code)),
        exception_type=None,
        stack_trace=None,
        endpoint=path,
        user_id=None if user is None else str(user),
        device_id=None,
        context={"status_code": status_code, "method": method, "route": route},
        group=route or path,
    )
    event.emit(_state.event_logger())


def set_checked_attributes(span: trace.Span, attributes: dict[str, Any]) -> None:
    """``span.set_attributes(attributes)`` for values this module made (str and int only, keys
    of its own), without the SDK's per-value validation: ~10 % of the request path's cost.

    Taken only when nothing that validation does could change the result: the SDK's own span
    and attribute container, no value length limit, room for every key. Else the SDK's way."""
    if type(span) is RequestSpan:
        span.set_checked_attributes(attributes)
        return
    bounded = getattr(span, "_attributes", None)
    if (
        type(span) is not _SdkSpan
        or type(bounded) is not BoundedAttributes
        or bounded.max_value_len is not None
        or (bounded.maxlen is not None and len(bounded._dict) + len(attributes) > bounded.maxlen)
        or not span.is_recording()
    ):
        span.set_attributes(attributes)
        return
    with bounded._lock:
        bounded._dict.update(attributes)


def _reason(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return f"HTTP {status_code}"


class ServerSpanMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer: trace.Tracer,
        user_resolver: UserResolver,
        trusted_proxies: tuple[Network, ...] = (),
        excluded_paths: ExcludedPaths | None = None,
        record_server_errors: bool = True,
        request_spans: RequestSpans | None = None,
    ) -> None:
        self.app = app
        # Spans for the tables only, when nothing else would read them (instrumentation.request_span).
        self.request_spans = request_spans
        self.record_server_errors = record_server_errors
        self.tracer = tracer
        self.user_resolver = user_resolver
        self.trusted_proxies = trusted_proxies
        self.excluded_paths = excluded_paths or ExcludedPaths(())
        self._propagator: TextMapPropagator | None = None
        self._propagation_headers: frozenset[bytes] = frozenset()
        # For requests another instrumentation's server span already covers (below).
        self._details = StockSpanDetails(app, user_resolver)
        self._warned_nested = False

    def _inside_another_server_span(self, current: trace.Span) -> bool:
        """Whether stock instrumentation outside this middleware (FastAPIInstrumentor applied
        after setup_telemetry) already started this request's server span (``current``). A
        second one would split the request in two spans; that one gets our details instead."""
        if getattr(current, "kind", None) is not SpanKind.SERVER or not current.is_recording():
            return False
        if not self._warned_nested:
            self._warned_nested = True
            logger.warning(NESTED_WARNING)
        return True

    def _trace_headers(self) -> frozenset[bytes]:
        """The header names the global propagator reads (``traceparent``, ``baggage``...):
        extraction runs only when a request carries one of them."""
        propagator = propagate.get_global_textmap()
        if propagator is not self._propagator:
            self._propagation_headers = frozenset(f.lower().encode("latin-1") for f in propagator.fields)
            self._propagator = propagator
        return self._propagation_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.excluded_paths:
            await self.app(scope, receive, send)
            return
        current = trace.get_current_span()
        if self._inside_another_server_span(current):
            await self._details(scope, receive, send)
            return
        method = scope["method"]
        user_agent = None
        declared_length = 0
        parent = None
        trace_headers = self._trace_headers()
        for name, value in scope.get("headers") or ():
            if name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"content-length":
                if value.isdigit():
                    declared_length = int(value)
            elif name in trace_headers and parent is None:
                parent = propagate.extract(scope, getter=_SCOPE_HEADERS)  # type: ignore[arg-type]
        attributes = {
            c.HTTP_METHOD[0]: method,
            c.HTTP_PATH[0]: scope["path"],
            "url.scheme": scope.get("scheme", "http"),
        }
        request_spans = self.request_spans
        if request_spans is not None and request_spans.usable():
            # Without a traceparent the parent is the span current here: looked up once.
            span = request_spans.start(method, parent, attributes, current if parent is None else None)
        else:
            span = self.tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        exchange = _Exchange(span, scope["path"])
        scope[EXCHANGE_KEY] = exchange
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        call, call_token = enter_request()
        entry_root_path = str(scope.get("root_path", ""))
        request_bytes = 0
        response_bytes = 0
        status_code = 0
        error_body = bytearray()

        def end() -> None:
            exchange.ended = True
            with _SPAN_END_GUARD:
                attributes: dict[str, Any] = {
                    c.HTTP_STATUS_CODE[0]: status_code or 500,
                    c.REQUEST_BODY_SIZE[0]: max(request_bytes, declared_length),
                    c.RESPONSE_BODY_SIZE[0]: response_bytes,
                }
                if user_agent:
                    attributes[c.USER_AGENT[0]] = user_agent
                self._add_details(attributes, scope, status_code, error_body)
                route = route_template(scope, entry_root_path)
                if route:
                    attributes[c.HTTP_ROUTE] = route
                    span.update_name(f"{method} {route}")
                set_checked_attributes(span, attributes)
                if status_code >= 500 and exchange.exception is None:
                    span.set_status(Status(StatusCode.ERROR))
                    if self.record_server_errors:
                        _server_error(attributes, status_code, method, route, scope["path"])
            span.end()

        async def counting_receive() -> Message:
            nonlocal request_bytes
            message = await receive()
            if message["type"] == "http.request":
                request_bytes += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal response_bytes, status_code
            kind = message["type"]
            if kind == "http.response.start":
                status_code = int(message.get("status", 0))
            elif kind == "http.response.body":
                body = message.get("body", b"")
                response_bytes += len(body)
                if status_code >= 400 and len(error_body) < ERROR_BODY_CAPTURE_BYTES:
                    error_body.extend(body[: ERROR_BODY_CAPTURE_BYTES - len(error_body)])
                if not message.get("more_body", False):
                    await send(message)
                    if not exchange.ended:
                        end()
                    return
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        except Exception as exception:
            exchange.failed(exception)
            raise
        finally:
            if not exchange.ended:  # the response never finished (client gone, crash before it)
                end()
            leave_request(call, call_token)
            otel_context.detach(token)

    def _add_details(
        self, attributes: dict[str, Any], scope: Scope, status_code: int, error_body: bytearray
    ) -> None:
        peer = scope.get("client")
        address = peer[0] if peer else None
        if self.trusted_proxies:  # forwarding headers only matter when a proxy is trusted
            address = client_ip(address, _headers(scope), self.trusted_proxies)
        if address:
            attributes[c.CLIENT_ADDRESS[0]] = address
        if status_code >= 400:
            message = error_text(bytes(error_body))
            if message:
                attributes[c.HTTP_ERROR_MESSAGE] = message
        user_id = None
        with _USER_RESOLVER_GUARD:
            user_id = self.user_resolver(scope, status_code)
        if user_id:
            attributes[c.USER_ID[0]] = str(user_id)
