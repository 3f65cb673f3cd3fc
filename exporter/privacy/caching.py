"""``CachingPrivacy``: the same policy with bounded LRU caches in front of its methods, for the
values that repeat from row to row."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from exporter.privacy.policy import Privacy

VALUE_CACHE_SIZE = 65536
# Free text and JSON keys are cached only when short, in a smaller cache: memory stays small
# (a stack trace is not kept), and what repeats (a device state's reason, an activity's search,
# the keys and values of extra_data) is short.
TEXT_CACHE_SIZE = 4096
TEXT_CACHE_MAX_CHARS = 256


class CachingPrivacy(Privacy):
    """``Privacy`` that remembers its results (a bounded LRU per method).

    User ids, client IPs and paths repeat from request to request, and pseudonymising (an
    HMAC), truncating (``ipaddress``) and scanning them again each time was most of the
    mapping's cost (bench/README.md: mapping 10.1k -> 15.1k rows/s). Short free text and JSON
    keys repeat too: the secret scan of ``{"site": "site_12"}`` cost more than its JSON
    round trip. Rows are identical."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("user", "ip", "url"):
            object.__setattr__(self, name, _cached(getattr(super(), name), VALUE_CACHE_SIZE))
        for name in ("text", "is_secret_key"):
            method = getattr(super(), name)
            object.__setattr__(self, name, _cached(method, TEXT_CACHE_SIZE, TEXT_CACHE_MAX_CHARS))


def _cached(method: Any, size: int, max_chars: int | None = None) -> Any:
    """``method`` with a bounded LRU cache for ``str`` and ``int`` arguments (what the SDK's
    attributes hold); ``max_chars`` bounds the strings kept. Other values are computed each
    time: a cache takes 1.0 and True for the same key, yet their texts differ."""
    cached = lru_cache(maxsize=size)(method)

    def call(value: Any) -> Any:
        kind = type(value)
        if (kind is str and (max_chars is None or len(value) <= max_chars)) or kind is int:
            return cached(value)
        return method(value)

    return call
