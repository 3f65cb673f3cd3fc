"""Who made a request: the default user resolver for bearer-token services.

A resolver is any ``Callable[[Scope, int], str | None]`` given the ASGI scope and the response
status; it runs when the response starts, after the app's own authentication has run.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

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


def _authorization(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


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
    token = bearer_token(_authorization(scope))
    return unverified_subject(token) if token else None
