"""The ASGI vocabulary the request middlewares share: message types, and the error text of a
4xx/5xx response body."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ERROR_BODY_CAPTURE_BYTES = 4096


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
