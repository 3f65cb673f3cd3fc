"""Who made a request: the default user resolver for bearer-token services.

A resolver is any ``Callable[[Scope, int], str | None]`` given the ASGI scope and the response
status; it runs when the response starts, after the app's own authentication has run.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, MutableMapping
from typing import Any

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


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    return None


def jwt_subject(token: str) -> str | None:
    """The ``sub`` claim of a JWT, read without verifying it (the app verifies; we only label)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError):
        return None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    return str(subject) if subject is not None else None


def default_user_resolver(scope: Scope, status_code: int) -> str | None:
    """The app's ``request.state`` user, else the bearer JWT's subject.

    The token's claim is not trusted for a request the app rejected as unauthenticated (401):
    anyone can write a JWT naming someone else.
    """
    user = _from_state(scope)
    if user is not None:
        return user
    if status_code == 401:
        return None
    token = bearer_token(scope)
    return jwt_subject(token) if token else None
