"""Who changed a device or started a job, as stored: one rule for the mapping and the query API."""

from __future__ import annotations

from typing import Any

from exporter.privacy import Privacy


def stored_actor(value: Any, privacy: Privacy) -> str | None:
    """``changed_by``/``initiated_by``: "system" stays readable, a user is treated as a user id."""
    if value is None:
        return None
    value = str(value)
    return value if value == "system" else privacy.user(value)
