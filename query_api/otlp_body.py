"""Decompresses an OTLP/HTTP request body within a size limit (read by ``request_body``).

With the reader's two checks (the declared ``Content-Length``, the bytes actually streamed),
the limit holds a third time on the decompressed size: a small gzip bomb cannot exhaust memory.
"""

from __future__ import annotations

import zlib

from query_api.request_body import BodyTooLarge

# Content-Encoding values the sink understands (OTLP/HTTP requires gzip; identity means none).
_GZIP = 16 + zlib.MAX_WBITS
_ZLIB = zlib.MAX_WBITS
_WBITS = {"gzip": _GZIP, "x-gzip": _GZIP, "deflate": _ZLIB}
SUPPORTED_ENCODINGS = ("identity", *_WBITS)


class BadCompression(Exception):
    """The body is not valid data in its declared Content-Encoding."""


def content_coding(header: str | None) -> str | None:
    """The normalised Content-Encoding, or None when the sink cannot decode it."""
    coding = (header or "identity").strip().lower() or "identity"
    return coding if coding in SUPPORTED_ENCODINGS else None


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
