"""A prototype, not shipped: one lean ASGI middleware in place of FastAPIInstrumentor plus our
RequestDetailsMiddleware, measured by the benchmark as variant ``lean_prototype``.

It produces the server span our mapping needs (stable HTTP semantic conventions, route, status,
body sizes, client address, user agent, user, error text, the exception event) and makes it
current for the handler, like the stock instrumentation; it skips what the stock middleware
pays for on every request and we never store: the generic attribute collection in both
semantic-convention sets (each attribute set twice), the second route lookup, duration
histograms and active-request counters, the per-send bookkeeping. See bench/README.md.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from instrumentation.middleware import ERROR_BODY_CAPTURE_BYTES, error_text
from instrumentation.users import UserResolver

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class _ScopeHeaders:
    """The propagator's view of the ASGI headers (only consulted when a traceparent came in)."""

    @staticmethod
    def get(scope: Scope, key: str) -> list[str] | None:
        wanted = key.encode("latin-1")
        values = [v.decode("latin-1") for k, v in scope.get("headers") or () if k == wanted]
        return values or None

    @staticmethod
    def keys(scope: Scope) -> list[str]:
        return [k.decode("latin-1") for k, _ in scope.get("headers") or ()]


_GETTER = _ScopeHeaders()


class LeanServerSpanMiddleware:
    def __init__(self, app: Any, tracer: trace.Tracer, user_resolver: UserResolver) -> None:
        self.app = app
        self.tracer = tracer
        self.user_resolver = user_resolver

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        user_agent = None
        content_length = 0
        parent = None
        for name, value in scope.get("headers") or ():
            if name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                content_length = int(value)
            elif name == b"traceparent":
                parent = propagate.extract(scope, getter=_GETTER)  # type: ignore[arg-type]
        method = scope["method"]
        span = self.tracer.start_span(method, context=parent, kind=SpanKind.SERVER, start_time=time.time_ns())
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        request_bytes = 0
        response_bytes = 0
        status = 0
        error_body = bytearray()

        async def counting_receive() -> Message:
            nonlocal request_bytes
            message = await receive()
            if message["type"] == "http.request":
                request_bytes += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, response_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                response_bytes += len(body)
                if status >= 400 and len(error_body) < ERROR_BODY_CAPTURE_BYTES:
                    error_body.extend(body[: ERROR_BODY_CAPTURE_BYTES - len(error_body)])
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        except Exception as exception:
            span.record_exception(exception)
            span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))
            status = status or 500
            raise
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None)
            attributes: dict[str, Any] = {
                "http.request.method": method,
                "url.path": scope["path"],
                "http.response.status_code": status,
                "http.request.body.size": max(request_bytes, content_length),
                "http.response.body.size": response_bytes,
            }
            if path:
                attributes["http.route"] = path
                span.update_name(f"{method} {path}")
            client = scope.get("client")
            if client:
                attributes["client.address"] = client[0]
            if user_agent:
                attributes["user_agent.original"] = user_agent
            user_id = self.user_resolver(scope, status)
            if user_id:
                attributes["enduser.id"] = user_id
            if status >= 400:
                message = error_text(bytes(error_body))
                if message:
                    attributes["homepot.http.error_message"] = message
                if status >= 500:
                    span.set_status(StatusCode.ERROR)
            span.set_attributes(attributes)
            span.end()
            otel_context.detach(token)
