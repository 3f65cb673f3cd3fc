"""Keyed pseudonyms of user ids: ``u_`` + 32 hex digits of HMAC-SHA256, the same for an id in
every table and irreversible without the key."""

from __future__ import annotations

import hashlib
import hmac
import re

PSEUDONYM_PREFIX = "u_"
_PSEUDONYM = re.compile(re.escape(PSEUDONYM_PREFIX) + "[0-9a-f]{32}")


def pseudonym(text: str, key: bytes) -> str:
    """The pseudonym of the user id ``text`` under ``key``."""
    digest = hmac.new(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return PSEUDONYM_PREFIX + digest.hexdigest()[:32]


def is_pseudonym(value: str) -> bool:
    """Whether a stored user id already is a pseudonym (``u_`` + 32 lowercase hex digits)."""
    return len(value) == 34 and _PSEUDONYM.fullmatch(value) is not None
