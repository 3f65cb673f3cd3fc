"""Who made a request: the default user resolver, for services that authenticate with a JWT
in a cookie (HOMEPOT's httpOnly ``access_token``) or a bearer header.

A resolver is any ``Callable[[Scope, int], str | None]`` given the ASGI scope and the response
status; it runs when the response starts, after the app's own authentication has run.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from starlette.requests import cookie_parser

from homepot_foundation.tokens import bearer_token, unverified_subject

Scope = MutableMapping[str, Any]
UserResolver = Callable[[Scope, int], "str | None"]

_STATE_KEYS = ("user_id", "user")


def _from_state(scope: Scope) -> str | None:
    """``request.state.user_id`` (or ``.user`` with an ``id``), as the app's auth set it."""
    state = scope.get("state") or {}
    for key in _STATE_KEYS:
        value = state.get(key)
        if value is None:
            continue
        if isinstance(value, str | int):
            return str(value)
        for attribute in ("id", "user_id", "username", "email"):
            found = getattr(value, attribute, None)
            if found is not None:
                return str(found)
    return None


DEFAULT_USER_COOKIE = "access_token"


def user_resolver_for(cookie: str | None = DEFAULT_USER_COOKIE) -> UserResolver:
    """The default resolver, reading the JWT from the cookie named ``cookie`` (None or "": none)
    first and the bearer header second, as HOMEPOT's own ``get_current_user`` does."""

    def resolve(scope: Scope, status_code: int) -> str | None:
        """The app's ``request.state`` user, else the subject of the session cookie's or the
        bearer header's JWT.

        The token's claim is not trusted for a request the app rejected as unauthenticated (401):
        anyone can write a JWT naming someone else."""
        user = _from_state(scope)
        if user is not None:
            return user
        if status_code == 401:
            return None
        cookies, authorization = _cookie_and_authorization(scope)
        token = _cookie_token(cookies, cookie) if cookie and cookies else None
        token = token or bearer_token(authorization)
        return unverified_subject(token) if token else None

    return resolve


def _cookie_and_authorization(scope: Scope) -> tuple[str | None, str | None]:
    """The two headers a token can come in, found in one pass over the request's headers."""
    cookies = authorization = None
    for name, value in scope.get("headers") or ():
        if name == b"cookie":
            cookies = cookies or value.decode("latin-1")
        elif name == b"authorization":
            authorization = authorization or value.decode("latin-1")
    return cookies, authorization


def _cookie_token(header: str, cookie: str) -> str | None:
    value = cookie_parser(header).get(cookie)
    # Some apps store the header form ("Bearer <jwt>") in the cookie.
    return (bearer_token(value) or value) if value else None


default_user_resolver = user_resolver_for(DEFAULT_USER_COOKIE)
