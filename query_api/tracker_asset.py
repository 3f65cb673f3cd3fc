"""The browser tracker as it is served: ``/tracker.js`` (a classic script) and ``/tracker.mjs``
(the same code as an ES module), minified with rjsmin and compressed (br, gzip) once, on first
use, then answered from memory with an ``ETag`` per representation, ``If-None-Match`` → 304,
``HEAD`` → the headers alone."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

import brotli
import rjsmin
from fastapi import Request, Response, status

CACHE_CONTROL = "public, max-age=3600"
MEDIA_TYPE = "text/javascript; charset=utf-8"

# The last argument of the tracker's outer call: null in the classic script, where the endpoint
# comes from the <script> tag's src; the module's own URL in the module.
_MODULE_URL_ARGUMENT = "/* module URL */ null);"
_MODULE_EXPORTS = (
    "export const HomepotAnalytics = globalThis.HomepotAnalytics;\nexport default HomepotAnalytics;\n"
)


def tracker_source() -> str:
    """The tracker as written (query_api/static/tracker.js)."""
    return (resources.files("query_api") / "static" / "tracker.js").read_text(encoding="utf-8")


def module_source(source: str) -> str:
    """``source`` as an ES module: it finds its endpoint from ``import.meta.url`` and exports the
    tracker (``import HomepotAnalytics from ".../tracker.mjs"``)."""
    if source.count(_MODULE_URL_ARGUMENT) != 1 or not source.rstrip().endswith(_MODULE_URL_ARGUMENT):
        raise RuntimeError(f"tracker.js must end with its call's last argument {_MODULE_URL_ARGUMENT!r}")
    return source.replace(_MODULE_URL_ARGUMENT, "import.meta.url);") + _MODULE_EXPORTS


@dataclass(frozen=True)
class Representation:
    body: bytes
    etag: str
    encoding: str | None  # Content-Encoding; None: identity


@dataclass(frozen=True)
class Asset:
    """One script, minified, in each encoding."""

    text: str  # minified
    by_encoding: dict[str | None, Representation]

    @classmethod
    def build(cls, source: str) -> Asset:
        text = rjsmin.jsmin(source, keep_bang_comments=True).strip() + "\n"
        raw = text.encode("utf-8")
        digest = hashlib.sha256(raw).hexdigest()[:32]
        bodies: dict[str | None, bytes] = {
            None: raw,
            "gzip": gzip.compress(raw, compresslevel=9, mtime=0),
            "br": brotli.compress(raw, mode=brotli.MODE_TEXT, quality=11),
        }
        suffix = {None: "", "gzip": "-gz", "br": "-br"}
        return cls(
            text,
            {
                encoding: Representation(body, f'"{digest}{suffix[encoding]}"', encoding)
                for encoding, body in bodies.items()
            },
        )

    def choose(self, accept_encoding: str | None) -> Representation:
        """br, then gzip, when the client takes it (``Accept-Encoding``, q-values honoured)."""
        accepted = accepted_encodings(accept_encoding)
        for encoding in ("br", "gzip"):
            if encoding in accepted:
                return self.by_encoding[encoding]
        return self.by_encoding[None]


def accepted_encodings(header: str | None) -> set[str]:
    """The content codings ``header`` accepts (q > 0); ``*`` stands for br and gzip unless named."""
    accepted: set[str] = set()
    refused: set[str] = set()
    for item in (header or "").split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        (accepted if quality > 0 else refused).add(name)
    if "*" in accepted:
        accepted |= {"br", "gzip"} - refused
    return accepted - refused


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison, as If-None-Match asks: ``W/"x"`` matches ``"x"``; ``*`` matches all."""
    if not if_none_match:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or etag in {tag.removeprefix("W/") for tag in tags}


@cache
def classic() -> Asset:
    return Asset.build(tracker_source())


@cache
def module() -> Asset:
    return Asset.build(module_source(tracker_source()))


def serve(request: Request, asset: Asset) -> Response:
    """200 with the chosen representation (headers only for HEAD), or 304 when the client has it."""
    chosen = asset.choose(request.headers.get("accept-encoding"))
    headers = {
        "ETag": chosen.etag,
        "Cache-Control": CACHE_CONTROL,
        "Vary": "Accept-Encoding",
        # A public file: a cross-origin <script type="module"> needs this to load it at all.
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
    }
    if _matches(request.headers.get("if-none-match"), chosen.etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    if chosen.encoding:
        headers["Content-Encoding"] = chosen.encoding
    headers["Content-Length"] = str(len(chosen.body))
    body = b"" if request.method == "HEAD" else chosen.body
    return Response(body, media_type=MEDIA_TYPE, headers=headers)
