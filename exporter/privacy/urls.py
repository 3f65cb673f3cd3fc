"""Sensitive query parameters: which names are secrets (the rule of ``secret_names``, also for JSON
keys), and URLs with those parameters removed from the query and the fragment."""

from __future__ import annotations

from exporter.privacy.secret_names import DEFAULT_SENSITIVE_PARAMS, is_secret_name, normalise_param

__all__ = ["DEFAULT_SENSITIVE_PARAMS", "is_sensitive_param", "normalise_param", "strip_sensitive_params"]


def is_sensitive_param(name: str, sensitive: frozenset[str]) -> bool:
    """Whether a query parameter (or JSON key) names a secret under the given word list
    (``secret_names``: ``api_key``, ``access_token``, ``X-Amz-Signature`` do; ``sort_key``,
    ``keyword``, ``monkey`` do not)."""
    return is_secret_name(name, sensitive)


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
