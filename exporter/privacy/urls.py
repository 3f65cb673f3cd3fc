"""Sensitive query parameters: which names are secrets (also as JSON keys), and URLs with those
parameters removed from the query and the fragment."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

# Always removed from URLs; HOMEPOT_ANALYTICS_SENSITIVE_QUERY_PARAMS adds to these.
DEFAULT_SENSITIVE_PARAMS = (
    "password",
    "passwd",
    "pwd",
    "pass",
    "token",
    "secret",
    "api_key",
    "apikey",
    "key",
    "session",
    "sessionid",
    "authorization",
    "auth",
    "jwt",
    "signature",
    "credential",
)
# Names this long also match inside longer names (access_token, csrftoken, client_secret);
# shorter ones only as a whole word of the name (api-key, x_key, but not monkey or keyword).
_SUBSTRING_MIN_LENGTH = 5


def normalise_param(name: str) -> str:
    """A parameter name (or configured word) as compared: decoded, lowercase, ``-`` as ``_``."""
    return unquote_plus(name).strip().lower().replace("-", "_")


def is_sensitive_param(name: str, sensitive: frozenset[str]) -> bool:
    """Whether a query parameter (or JSON key) names a secret under the given word list."""
    normalised = normalise_param(name)
    if normalised in sensitive:
        return True
    if any(part in sensitive for part in re.split(r"[^a-z0-9]+", normalised) if part):
        return True
    return any(len(word) >= _SUBSTRING_MIN_LENGTH and word in normalised for word in sensitive)


def _strip_query(query: str, sensitive: frozenset[str]) -> str:
    kept = [
        item for item in query.split("&") if item and not is_sensitive_param(item.split("=", 1)[0], sensitive)
    ]
    return "&".join(kept)


def strip_sensitive_params(url: str, sensitive: frozenset[str]) -> str:
    """``url`` without the parameters ``sensitive`` names, in its query and in its fragment."""
    base, hash_mark, fragment = url.partition("#")
    path, question_mark, query = base.partition("?")
    if question_mark:
        query = _strip_query(query, sensitive)
        base = f"{path}?{query}" if query else path
    if hash_mark:
        # SPA routes (#/devices?token=...) and OAuth implicit flows (#access_token=...).
        route, inner_mark, inner_query = fragment.partition("?")
        if inner_mark:
            inner_query = _strip_query(inner_query, sensitive)
            fragment = f"{route}?{inner_query}" if inner_query else route
        elif "=" in fragment:
            fragment = _strip_query(fragment, sensitive)
        return f"{base}#{fragment}" if fragment else base
    return base
