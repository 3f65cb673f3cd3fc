"""Reads an OTLP/HTTP request body within a size limit, before and after decompression.

The limit holds three times: the declared ``Content-Length``, the bytes actually streamed, and
the decompressed size, so neither a large upload nor a small gzip bomb can exhaust memory.
"""

from __future__ import annotations

import zlib

from starlette.requests import Request

# Content-Encoding values the sink understands (OTLP/HTTP requires gzip; identity means none).
_GZIP = 16 + zlib.MAX_WBITS
_ZLIB = zlib.MAX_WBITS
_WBITS = {"gzip": _GZIP, "x-gzip": _GZIP, "deflate": _ZLIB}
SUPPORTED_ENCODINGS = ("identity", *_WBITS)


class BodyTooLarge(Exception):
    """The body (or what it decompresses to) is larger than the limit."""


class BadCompression(Exception):
    """The body is not valid data in its declared Content-Encoding."""


def content_coding(header: str | None) -> str | None:
    """The normalised Content-Encoding, or None when the sink cannot decode it."""
    coding = (header or "identity").strip().lower() or "identity"
    return coding if coding in SUPPORTED_ENCODINGS else None


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


def decompress(body: bytes, coding: str, limit: int) -> bytes:
    """``body`` decoded from ``coding`` (see ``content_coding``), never more than ``limit`` bytes."""
    if coding == "identity":
        return body
    output = bytearray()
    data = body
    while True:  # one pass per gzip member; bounded by the input's length
        decoder = zlib.decompressobj(_WBITS[coding])
        try:
            # max_length stops inflating one byte past the limit, whatever the ratio.
            output.extend(decoder.decompress(data, limit + 1 - len(output)))
            if len(output) <= limit and not decoder.unconsumed_tail:
                output.extend(decoder.flush())
        except zlib.error as error:
            raise BadCompression(f"invalid {coding} data: {error}") from error
        if len(output) > limit or decoder.unconsumed_tail:
            raise BodyTooLarge(f"decompressed body exceeds the limit of {limit} bytes")
        if not decoder.eof:
            raise BadCompression(f"truncated {coding} data")
        data = decoder.unused_data
        if not data or _WBITS[coding] != _GZIP:
            return bytes(output)
