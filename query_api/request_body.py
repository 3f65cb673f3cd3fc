"""The one bounded reader of request bodies (OTLP sink, frontend intake).

The limit holds on the declared ``Content-Length`` and on the bytes actually streamed (a chunked
upload has no length), so no request can make the service hold more than ``limit`` bytes.
"""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The body (or what it decompresses to) is larger than the limit."""


async def read_limited(request: Request, limit: int) -> bytes:
    """The raw request body; BodyTooLarge as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Content-Length {int(declared)} exceeds the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
    return bytes(body)
