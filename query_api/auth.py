"""Admin-only access to the analytics: HS256 JWTs signed with ``HOMEPOT_ANALYTICS_JWT_SECRET``.

A token is an admin's when its ``role`` claim is ``admin`` or its ``roles`` list holds ``admin``,
so tokens of a HOMEPOT backend that shares the secret work as they are. Without a configured
secret the service refuses every analytics request: it never falls back to open reads.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBearer

from homepot_foundation.settings import Settings
from homepot_foundation.tokens import ALGORITHM, bearer_token
from query_api.deps import SettingsDep

logger = logging.getLogger(__name__)

ADMIN_ROLE = "admin"
SECRET_VARIABLE = "HOMEPOT_ANALYTICS_JWT_SECRET"


class _AdminBearer(HTTPBearer):
    """FastAPI's scheme for the OpenAPI security entry (the lock in /docs); the header is read by
    the project's one bearer parser. A missing token is None: a 401 with our message follows."""

    async def __call__(self, request: Request) -> str | None:  # type: ignore[override]
        return bearer_token(request.headers.get("authorization"))


bearer = _AdminBearer(
    auto_error=False,
    scheme_name="AdminJWT",
    description=f"An HS256 JWT signed with {SECRET_VARIABLE} whose role is admin "
    "(`homepot-analytics token --subject NAME --role admin`).",
)


class MissingSecretError(RuntimeError):
    """No JWT secret is configured, so no token can be issued or checked."""

    def __init__(self) -> None:
        super().__init__(f"{SECRET_VARIABLE} is not set: set it to a long random string")


def issue_token(settings: Settings, *, subject: str, role: str, expires_in: int) -> str:
    """A token for ``subject`` with ``role`` that expires ``expires_in`` seconds from now."""
    if not settings.jwt_secret:
        raise MissingSecretError()
    now = datetime.now(UTC)
    claims = {"sub": subject, "role": role, "iat": now, "exp": now + timedelta(seconds=expires_in)}
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def is_admin(claims: dict[str, Any]) -> bool:
    roles = claims.get("roles")
    if isinstance(roles, str):
        roles = [roles]
    return claims.get("role") == ADMIN_ROLE or (isinstance(roles, list) and ADMIN_ROLE in roles)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED, detail=message, headers={"WWW-Authenticate": "Bearer"}
    )


def require_admin(
    settings: SettingsDep,
    token: Annotated[str | None, Depends(bearer)],
) -> dict[str, Any]:
    """The claims of a valid admin token; 401 without a valid token, 403 for a non-admin one."""
    if not settings.jwt_secret:
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"Analytics access is disabled until {SECRET_VARIABLE} is set on the service.",
        )
    if token is None:
        raise _unauthorized("Missing bearer token: send 'Authorization: Bearer <JWT>'.")
    try:
        # exp is required: a token that never expires is a standing key to every row.
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp"]},
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("Token has expired.") from None
    except jwt.InvalidTokenError as error:
        logger.info("rejected analytics token: %s", error)
        raise _unauthorized("Token is invalid.") from None
    if not is_admin(claims):
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN, detail="Analytics are restricted to admin users."
        )
    return claims
