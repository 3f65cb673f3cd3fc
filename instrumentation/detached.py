"""Work that outlives the request that started it: a worker task created while a request ran
inherits that request's context (asyncio copies it), so every job and record it makes later
would file under that one request's trace (HOMEPOT's orchestrator: 3 jobs, 1 trace).

A span that has *ended* cannot be a parent of new work once its request is over: a job started
then begins a trace of its own, linked to the request's; a record made then carries no trace, and
names the request's trace in its context. Work inside a live request stays its child, and so
does a background task the request runs after its response (its span ended with the last byte,
but the request's ASGI call goes on until the task is done: ``request_call`` marks that).
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link


class RequestCall:
    """One request's ASGI call, shared (by reference) with every task created during it."""

    __slots__ = ("finished",)

    def __init__(self) -> None:
        self.finished = False


_CALL: ContextVar[RequestCall | None] = ContextVar("homepot_analytics_request_call", default=None)


def enter_request() -> tuple[RequestCall, Token[RequestCall | None]]:
    call = RequestCall()
    return call, _CALL.set(call)


def leave_request(call: RequestCall, token: Token[RequestCall | None]) -> None:
    call.finished = True  # seen by the tasks the request created, which keep this object
    _CALL.reset(token)


def ended_request() -> trace.SpanContext | None:
    """The current span's context when that span has already ended (None: no such span, a live
    one, or a remote parent, which never ends here)."""
    current = trace.get_current_span()
    span_context = current.get_span_context()
    if not span_context.is_valid or getattr(current, "end_time", None) is None:
        return None
    call = _CALL.get()
    if call is not None and not call.finished:
        return None  # the request's own background task: still part of it
    return span_context


def fresh_start() -> tuple[Context | None, list[Link] | None]:
    """The parent context and links a new span should start with: the current ones (None), or
    an empty context linked to the ended request."""
    ended = ended_request()
    if ended is None:
        return None, None
    return Context(), [Link(ended)]


def hex_trace_id(span_context: trace.SpanContext) -> str:
    return format(span_context.trace_id, "032x")
