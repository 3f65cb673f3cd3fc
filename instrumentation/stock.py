"""For apps traced by stock OpenTelemetry instrumentation (``FastAPIInstrumentor``, or
``opentelemetry-instrument``): one middleware that fills what stock spans leave out.

    FastAPIInstrumentor.instrument_app(app)
    app.add_middleware(StockSpanDetails)

Stock server spans carry no user, no body sizes (0.66 records them in metrics only) and, for a
4xx, no more than the reason phrase. Added as an ordinary middleware it runs inside the stock
instrumentation's, while the request's server span is current, and sets on that span what our
own middleware sets on ours: ``enduser.id`` (the app's ``request.state`` user, else the bearer
JWT's subject), ``http.request.body.size`` / ``http.response.body.size`` counted as the bodies
stream, and the error text of a 4xx/5xx. It never raises into the app; without a recording span
it only passes the request on.

``setup_telemetry`` on an app that stock instrumentation traces too uses this middleware
instead of a server span of its own, so each request keeps one server span.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from exporter import conventions as c
from exporter.containment import never_raise
from exporter.own_logging import exporter_logger
from instrumentation.asgi import ERROR_BODY_CAPTURE_BYTES, ASGIApp, Message, Receive, Scope, Send, error_text
from instrumentation.log_capture import mark_recorded
from instrumentation.users import UserResolver, default_user_resolver

logger = exporter_logger(__name__)
_GUARD = never_raise("could not add request details to the stock span", logger=logger)


class StockSpanDetails:
    """ASGI middleware: user, body sizes and error text onto the current (stock) server span."""

    def __init__(self, app: ASGIApp, user_resolver: UserResolver = default_user_resolver) -> None:
        self.app = app
        self.user_resolver = user_resolver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        span = trace.get_current_span()
        if scope["type"] != "http" or not span.is_recording():
            await self.app(scope, receive, send)
            return
        sizes = {"request": 0, "response": 0}
        state: dict[str, Any] = {"status": 0, "error_body": bytearray()}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                sizes["request"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                state["status"] = int(message.get("status", 0))
            elif kind == "http.response.body":
                body = message.get("body", b"")
                sizes["response"] += len(body)
                error_body: bytearray = state["error_body"]
                if state["status"] >= 400 and len(error_body) < ERROR_BODY_CAPTURE_BYTES:
                    error_body.extend(body[: ERROR_BODY_CAPTURE_BYTES - len(error_body)])
                if not message.get("more_body", False):
                    # Before the last byte goes out: the stock middleware ends its span then.
                    with _GUARD:
                        self._describe(span, scope, state["status"], sizes, bytes(error_body))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        except Exception as exception:
            # The stock middleware around us records it on its span: the server logging it
            # again ("Exception in ASGI application") must not make a second error row.
            mark_recorded(exception)
            raise

    def _describe(
        self, span: trace.Span, scope: Scope, status: int, sizes: dict[str, int], error_body: bytes
    ) -> None:
        attributes: dict[str, Any] = {
            c.REQUEST_BODY_SIZE[0]: sizes["request"],
            c.RESPONSE_BODY_SIZE[0]: sizes["response"],
        }
        if status >= 400:
            message = error_text(error_body)
            if message:
                attributes[c.HTTP_ERROR_MESSAGE] = message
        user = self.user_resolver(scope, status)
        if user:
            attributes[c.USER_ID[0]] = str(user)
        span.set_attributes(attributes)
