"""The policy the mapping applies to every stored user id, IP address, URL, text and JSON value:
which rules are on, each carried out by the module of that rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.privacy.ips import truncate_ip
from exporter.privacy.json_masking import mask_json
from exporter.privacy.pseudonyms import is_pseudonym, pseudonym
from exporter.privacy.text_masking import mask_secrets
from exporter.privacy.urls import DEFAULT_SENSITIVE_PARAMS, is_sensitive_param, strip_sensitive_params
from homepot_foundation.settings import DEFAULT_SYSTEM_ACTORS


@dataclass(frozen=True)
class Privacy:
    """A policy for stored values. ``Privacy()`` (``PASS_THROUGH``) stores everything as it arrives;
    ``privacy_from_settings`` gives the protective policy a deployment runs with."""

    pseudonym_key: bytes | None = field(default=None, repr=False)
    truncate_ips: bool = False
    mask_secrets: bool = False
    sensitive_params: frozenset[str] = frozenset(DEFAULT_SENSITIVE_PARAMS)
    # changed_by/initiated_by values that name no person, in lowercase (``stored_actor``).
    system_actors: frozenset[str] = frozenset(DEFAULT_SYSTEM_ACTORS)
    _extra_words: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "system_actors", frozenset(actor.lower() for actor in self.system_actors))
        extra = sorted(word for word in self.sensitive_params if word not in DEFAULT_SENSITIVE_PARAMS)
        object.__setattr__(self, "_extra_words", tuple(extra))

    def is_system_actor(self, value: str) -> bool:
        """Whether a ``changed_by``/``initiated_by`` value names no person ("system", "orchestrator")."""
        return value.lower() in self.system_actors

    def user(self, value: Any) -> str | None:
        """A user id as stored (``user_id``, and ``changed_by``/``initiated_by`` when a user)."""
        if value is None:
            return None
        text = value if isinstance(value, str) else str(value)
        # A value that already is a pseudonym is kept: a row that passes twice (the OTLP sink,
        # a replay) is not hashed twice.
        if self.pseudonym_key is None or not text or is_pseudonym(text):
            return text
        return pseudonym(text, self.pseudonym_key)

    def ip(self, value: Any) -> str | None:
        """A client IP address as stored: its network when truncating (None if it is no IP)."""
        if value is None:
            return None
        text = value if isinstance(value, str) else str(value)
        return truncate_ip(text) if self.truncate_ips else text

    def url(self, value: Any) -> str | None:
        """A path or URL as stored (``endpoint``, ``page_url``): no sensitive query parameters,
        and secrets in the rest (a token in a path, a password in user info) masked."""
        if value is None:
            return None
        text = value if isinstance(value, str) else str(value)
        if not self.mask_secrets:
            return text
        if "?" in text or "#" in text:
            text = strip_sensitive_params(text, self.sensitive_params)
        return self.text(text)

    def text(self, value: Any) -> str | None:
        """Free text as stored (messages, stack traces, search queries, JSON string values)."""
        if value is None:
            return None
        text = value if isinstance(value, str) else str(value)
        if not self.mask_secrets or len(text) < 5:  # no secret pattern matches fewer characters ("pwd=x")
            return text
        return mask_secrets(text, self._extra_words)

    def is_secret_key(self, name: str) -> bool:
        """Whether a JSON key (``extra_data``/``context``) names a secret, so its value is masked."""
        return self.mask_secrets and is_sensitive_param(name, self.sensitive_params)

    def json(self, value: Any) -> Any:
        """A decoded JSON value as stored: strings masked, and under a key naming a secret
        (``{"password": ...}``) the value replaced whatever it looks like."""
        # self.text and self.is_secret_key, not the functions: a CachingPrivacy's are cached.
        return mask_json(value, self.text, self.is_secret_key)


PASS_THROUGH = Privacy()
