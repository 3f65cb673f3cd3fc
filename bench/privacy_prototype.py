"""The default privacy policy with per-value caches (shipped: ``exporter.privacy.CachingPrivacy``).

User ids, client IPs and request paths repeat from request to request; pseudonymising (an
HMAC), truncating (``ipaddress``) and scanning them for secrets again each time is most of
the mapping's cost under the default policy. The benchmark maps the same stream with this
variant to measure what caches in ``exporter/privacy.py`` would save (see bench/README.md).
"""

from __future__ import annotations

from dataclasses import fields

from exporter.privacy import CachingPrivacy, Privacy

__all__ = ["CachingPrivacy", "caching"]


def caching(policy: Privacy) -> CachingPrivacy:
    """The same policy, with caches."""
    values = {field.name: getattr(policy, field.name) for field in fields(policy) if field.init}
    return CachingPrivacy(**values)
