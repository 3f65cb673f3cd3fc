"""Who changed a device or started a job, as stored: one rule for the mapping and the query API."""

from __future__ import annotations

from typing import Any

from exporter.privacy import Privacy


def stored_actor(value: Any, privacy: Privacy) -> str | None:
    """``changed_by``/``initiated_by``: a system actor (``privacy.system_actors``: "system",
    "orchestrator", "scheduler", "agent" by default, in any case) is stored as given, anyone else
    as a user id (a pseudonym when the policy pseudonymises)."""
    if value is None:
        return None
    value = str(value)
    return value if privacy.is_system_actor(value) else privacy.user(value)
