"""The policies of a deployment, from its settings: the one every row is stored with (cached per
settings values, cheap to call per request) and the stricter one of a dataset export."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from exporter.privacy.caching import CachingPrivacy
from exporter.privacy.keys import resolve_pseudonym_key
from exporter.privacy.policy import Privacy
from exporter.privacy.urls import DEFAULT_SENSITIVE_PARAMS, normalise_param

if TYPE_CHECKING:
    from homepot_foundation.settings import Settings

_cache: dict[tuple[object, ...], Privacy] = {}
_cache_lock = threading.Lock()


def _settings_key(settings: Settings) -> tuple[object, ...]:
    secret = settings.pseudonym_key.get_secret_value() if settings.pseudonym_key is not None else None
    return (
        secret,
        settings.pseudonymize_users,
        settings.truncate_ips,
        tuple(settings.sensitive_query_params),
        tuple(settings.system_actors),
        str(settings.data_dir),
    )


def _sensitive_words(extra: Iterable[str]) -> frozenset[str]:
    return frozenset(DEFAULT_SENSITIVE_PARAMS) | {normalise_param(word) for word in extra if word.strip()}


def privacy_from_settings(settings: Settings) -> Privacy:
    """The policy a process applies, from its settings (cached per settings values)."""
    cache_key = _settings_key(settings)
    privacy = _cache.get(cache_key)
    if privacy is not None:
        return privacy
    with _cache_lock:
        privacy = _cache.get(cache_key)
        if privacy is None:
            privacy = CachingPrivacy(
                pseudonym_key=resolve_pseudonym_key(settings) if settings.pseudonymize_users else None,
                truncate_ips=settings.truncate_ips,
                mask_secrets=True,
                sensitive_params=_sensitive_words(settings.sensitive_query_params),
                system_actors=frozenset(actor.strip() for actor in settings.system_actors if actor.strip()),
            )
            _cache[cache_key] = privacy
    return privacy


def export_privacy(settings: Settings) -> Privacy:
    """The policy of a dataset export: pseudonyms and truncated IPs whatever the deployment stores."""
    stored = privacy_from_settings(settings)
    return Privacy(
        pseudonym_key=stored.pseudonym_key or resolve_pseudonym_key(settings),
        truncate_ips=True,
        mask_secrets=True,
        sensitive_params=stored.sensitive_params,
        system_actors=stored.system_actors,
    )
