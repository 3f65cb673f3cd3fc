"""Bearer tokens, read one way everywhere: the token of an ``Authorization: Bearer`` header, and
the ``sub`` claim of a JWT (trusted only when verified; labelled only when not)."""

from __future__ import annotations

import base64
import json

import jwt

ALGORITHM = "HS256"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization`` header value when its scheme is Bearer (any case)."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if token and scheme.lower() == "bearer" else None


def unverified_subject(token: str) -> str | None:
    """The ``sub`` claim of a JWT, read without verifying it: for labelling a request whose app
    verified the token itself. Decoded by hand: PyJWT's unverified decode costs ~6x as much, on
    every request."""
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


def verified_subject(token: str, secret: str) -> str | None:
    """The ``sub`` of an HS256 JWT whose signature (and expiry, if any) checks out, else None."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub"]})
    except jwt.PyJWTError:
        return None
    subject = claims.get("sub")
    return str(subject) if subject not in (None, "") else None
