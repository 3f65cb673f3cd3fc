"""ASGI middleware that completes the server span with what stock instrumentation leaves out.

It sits inside the OpenTelemetry middleware (so the server span is current) and outside
Starlette's error handling (so it sees the 500 that an unhandled exception becomes). It counts
body bytes as they stream (no Content-Length needed), resolves the user and the client IP,
and keeps the error text of 4xx/5xx responses. All attributes are set before the last body
chunk goes out, because the OpenTelemetry middleware ends the span right after it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import trace

from exporter import conventions as c
from instrumentation.client_ip import Network, client_ip
from instrumentation.users import UserResolver

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ERROR_BODY_CAPTURE_BYTES = 4096


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers") or ()}


def _header(scope: Scope, name: bytes) -> str | None:
    """One header's value, without decoding the others (this runs on every request)."""
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


def error_text(body: bytes) -> str | None:
    """The message of an error response: FastAPI's ``detail`` when JSON, else the text."""
    if not body:
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:1024] or None
    detail = payload.get("detail", payload) if isinstance(payload, dict) else payload
    if isinstance(detail, list):  # request validation errors: "loc: msg" for each
        parts = []
        for item in detail:
            if isinstance(item, dict):
                location = ".".join(str(p) for p in item.get("loc", ()))
                parts.append(f"{location}: {item.get('msg', '')}".strip(": "))
            else:
                parts.append(str(item))
        return "; ".join(parts)[:1024] or None
    return detail if isinstance(detail, str) else json.dumps(detail, default=str)[:1024]


class RequestDetailsMiddleware:
    def __init__(self, app: ASGIApp, *, user_resolver: UserResolver, trusted_proxies: tuple[Network, ...]):
        self.app = app
        self.user_resolver = user_resolver
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        span = trace.get_current_span()
        if not span.is_recording():
            await self.app(scope, receive, send)
            return
        request_bytes = 0
        response_bytes = 0
        status_code = 0
        error_body = bytearray()
        completed = False

        async def counting_receive() -> Message:
            nonlocal request_bytes
            message = await receive()
            if message["type"] == "http.request":
                request_bytes += len(message.get("body", b""))
            return message

        def complete() -> None:
            nonlocal completed
            completed = True
            try:
                self._set_attributes(span, scope, status_code, request_bytes, response_bytes, error_body)
            except Exception:  # instrumentation must never break the host application
                logger.exception("could not complete request span")

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
                if not message.get("more_body", False) and not completed:
                    complete()
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            if not completed:  # the response never finished (client gone, error before start)
                complete()

    def _set_attributes(
        self,
        span: trace.Span,
        scope: Scope,
        status_code: int,
        request_bytes: int,
        response_bytes: int,
        error_body: bytearray,
    ) -> None:
        declared = _header(scope, b"content-length")
        if declared and declared.isdigit():
            # The app may not have read the body (e.g. it rejected the request first).
            request_bytes = max(request_bytes, int(declared))
        # Collected first and set in one call: one pass through the span's lock and checks
        # instead of one per attribute (see bench/README.md).
        attributes: dict[str, str | int] = {
            c.REQUEST_BODY_SIZE[0]: request_bytes,
            c.RESPONSE_BODY_SIZE[0]: response_bytes,
        }
        peer = scope.get("client")
        address = peer[0] if peer else None
        if self.trusted_proxies:  # forwarding headers only matter when a proxy is trusted
            address = client_ip(address, _headers(scope), self.trusted_proxies)
        if address:
            attributes[c.CLIENT_ADDRESS[0]] = address
        try:
            user_id = self.user_resolver(scope, status_code)
            if user_id:
                attributes[c.USER_ID[0]] = user_id
            if status_code >= 400:
                message = error_text(bytes(error_body))
                if message:
                    attributes[c.HTTP_ERROR_MESSAGE] = message
        finally:  # a resolver that raises still leaves the sizes and the address on the span
            span.set_attributes(attributes)
