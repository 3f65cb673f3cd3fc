"""A prototype, not shipped: the default privacy policy with per-value caches.

User ids, client IPs and request paths repeat from request to request; pseudonymising (an
HMAC), truncating (``ipaddress``) and scanning them for secrets again each time is most of
the mapping's cost under the default policy. The benchmark maps the same stream with this
variant to measure what caches in ``exporter/privacy.py`` would save (see bench/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from functools import lru_cache
from typing import Any

from exporter.privacy import Privacy

CACHE_SIZE = 65536


class CachingPrivacy(Privacy):
    """``Privacy`` whose user, ip and url results are remembered (bounded LRU per method)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("user", "ip", "url"):
            method = getattr(super(), name)
            cached = lru_cache(maxsize=CACHE_SIZE)(method)
            # Unhashable values (never seen from the SDK, which stores str/int) skip the cache.
            object.__setattr__(self, name, _hashable_or_direct(cached, method))


def _hashable_or_direct(cached: Callable[[Any], Any], method: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def call(value: Any) -> Any:
        try:
            return cached(value)
        except TypeError:
            return method(value)

    return call


def caching(policy: Privacy) -> CachingPrivacy:
    """The same policy, with caches."""
    values = {field.name: getattr(policy, field.name) for field in fields(policy) if field.init}
    return CachingPrivacy(**values)
