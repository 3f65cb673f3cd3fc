"""The built-in dashboard: ``/`` sends the browser to ``/dashboard/``, a page of our own
(``query_api/static/dashboard/``) that draws the analytics with Plotly.js.

Nothing here needs a token: the files hold no data. The page signs in with an admin token and
reads everything through the admin-only query API. Plotly.js is served from the installed
``plotly`` package (extra ``dashboard``), so the dashboard works without any CDN.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import RedirectResponse

from homepot_foundation.extras import install_hint
from query_api.tracker_asset import accepted_encodings

router = APIRouter(include_in_schema=False)

PREFIX = "/dashboard"
PLOTLY_PATH = f"{PREFIX}/vendor/plotly.min.js"
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Our files change with the package: the browser asks again each time (a 304 when unchanged).
OWN_CACHE = "no-cache"
# Plotly's file changes only with the installed version.
VENDOR_CACHE = "public, max-age=86400"


@dataclass(frozen=True)
class StaticFile:
    """One file as served: its bytes, gzipped once, and an ETag per encoding."""

    body: bytes
    gzipped: bytes
    etag: str
    media_type: str
    cache_control: str

    @classmethod
    def of(cls, body: bytes, media_type: str, cache_control: str) -> StaticFile:
        # Level 6: plotly.min.js (4.8 MB) compresses in a fraction of a second, 9 costs several.
        gzipped = gzip.compress(body, compresslevel=6, mtime=0)
        return cls(body, gzipped, hashlib.sha256(body).hexdigest()[:32], media_type, cache_control)

    def response(self, request: Request) -> Response:
        encoded = "gzip" in accepted_encodings(request.headers.get("accept-encoding"))
        etag = f'"{self.etag}{"-gz" if encoded else ""}"'
        headers = {
            "ETag": etag,
            "Cache-Control": self.cache_control,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        if etag in {
            tag.strip().removeprefix("W/") for tag in request.headers.get("if-none-match", "").split(",")
        }:
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
        if encoded:
            headers["Content-Encoding"] = "gzip"
        return Response(self.gzipped if encoded else self.body, media_type=self.media_type, headers=headers)


def _own_files() -> Traversable:
    return resources.files("query_api") / "static" / "dashboard"


@cache
def own_file(relative: str) -> StaticFile | None:
    """A file of the dashboard by its path under static/dashboard, or None (also for ``..``)."""
    parts = relative.split("/")
    if any(part in {"", ".", ".."} or part.startswith(".") for part in parts):
        return None
    media_type = _MEDIA_TYPES.get(Path(relative).suffix)
    found = _own_files().joinpath(*parts)
    if media_type is None or not found.is_file():
        return None
    return StaticFile.of(found.read_bytes(), media_type, OWN_CACHE)


def plotly_location() -> Path | None:
    """plotly.min.js of the installed ``plotly`` package, found without importing plotly."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return found if found.is_file() else None


@cache
def plotly_file() -> StaticFile | None:
    location = plotly_location()
    if location is None:
        return None
    return StaticFile.of(location.read_bytes(), _MEDIA_TYPES[".js"], VENDOR_CACHE)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/", status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get(PREFIX)
def dashboard_without_slash() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/", status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get(f"{PREFIX}/")
def dashboard_page(request: Request) -> Response:
    page = own_file("index.html")
    assert page is not None, "query_api/static/dashboard/index.html is part of the package"
    return page.response(request)


@router.get(PLOTLY_PATH)
def plotly_script(request: Request) -> Response:
    script = plotly_file()
    if script is None:
        # The page says so too; this is what a direct request (or a log) shows.
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"The dashboard's charts need the 'dashboard' extra (plotly): {install_hint('dashboard')}",
        )
    return script.response(request)


@router.get(PREFIX + "/{path:path}")
def dashboard_file(path: str, request: Request) -> Response:
    found = own_file(path)
    if found is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"No dashboard file {path!r}.")
    return found.response(request)
