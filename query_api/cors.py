"""CORS for the frontends in ``HOMEPOT_ANALYTICS_CORS_ORIGINS``.

The intake paths take credentials: HOMEPOT's frontend posts with axios ``withCredentials: true``
(its user is the httpOnly session cookie), and a browser refuses a credentialed response without
``Access-Control-Allow-Credentials: true`` and the caller's exact origin. The query API is read
with bearer tokens, so it never allows credentials. A ``*`` origin never goes with credentials
(any site could then post as the signed-in user): with ``*`` configured, no path allows them.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from exporter.own_logging import exporter_logger

logger = exporter_logger(__name__)

_METHODS = ["GET", "POST", "OPTIONS"]
_HEADERS = ["Authorization", "Content-Type"]


class FrontendCors:
    """Starlette's CORS middleware, with credentials on the intake paths only."""

    def __init__(self, app: ASGIApp, origins: Sequence[str], credentialed_paths: Sequence[str]) -> None:
        any_origin = "*" in origins
        if any_origin:
            logger.warning(
                "HOMEPOT_ANALYTICS_CORS_ORIGINS is '*': browsers may post from anywhere, but without "
                "credentials (cookie users stay anonymous); list the frontends' origins instead"
            )
        options = {
            "allow_origins": list(origins),
            "allow_methods": _METHODS,
            "allow_headers": _HEADERS,
            "max_age": 600,
        }
        self._plain = CORSMiddleware(app, allow_credentials=False, **options)  # type: ignore[arg-type]
        self._credentialed = CORSMiddleware(app, allow_credentials=not any_origin, **options)  # type: ignore[arg-type]
        self._credentialed_paths = frozenset(credentialed_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self._credentialed_paths:
            await self._credentialed(scope, receive, send)
        else:
            await self._plain(scope, receive, send)
