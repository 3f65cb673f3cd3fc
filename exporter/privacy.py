"""What the mapping does to personal and secret values before a row is stored.

The mapping calls one ``Privacy`` object for every user id, IP address, URL and free text it
stores, so the rules live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Privacy:
    """Pass-through policy: values are stored as they arrive."""

    def user(self, value: str | None) -> str | None:
        """A user id as stored (``user_id``, and ``changed_by``/``initiated_by`` when a user)."""
        return value

    def ip(self, value: str | None) -> str | None:
        """A client IP address as stored."""
        return value

    def url(self, value: str | None) -> str | None:
        """A path or URL as stored (``endpoint``, ``page_url``)."""
        return value

    def text(self, value: str | None) -> str | None:
        """Free text as stored (messages, stack traces, search queries, JSON string values)."""
        return value


PASS_THROUGH = Privacy()


def privacy_from_settings(settings: object) -> Privacy:
    """The policy a process applies, from its settings."""
    return PASS_THROUGH
