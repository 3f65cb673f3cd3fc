"""Which names name a secret: query parameters, JSON keys (``extra_data``, ``context``) and the
``name=value`` pairs of free text, by one rule.

A name is split into its words (at ``_ - .`` and other punctuation, and at camelCase):
``X-Api-Key`` -> ``x api key``, ``sessionId`` -> ``session id``. It names a secret when

- the whole name is a sensitive word: ``key``, ``session``, ``pass``, ``auth``, ``token``, ...
  (also glued: ``session_id`` is ``sessionid``);
- one of its words is a secret word, or a plural of one (``refresh_token``, ``db_password``,
  ``X-Amz-Credential``, ``credentials``), or ends with one (``csrftoken``, ``clientsecret``,
  ``jsessionid``); a word starting with ``passw`` is one too (``passwordHash``, ``passwort``);
- its words hold ``<qualifier> key``: ``api_key``, ``access_key``, ``private_key``, ``secret_key``,
  ``signing_key``, ``x-api-key``, ``accessKeyId``, also glued (``apikey``, ``privatekey``).

Words that only name a secret on their own (``key``, ``session``, ``pass``, ``auth``, ``cookie``)
are not secret inside a longer name: ``config_key``, ``collapse_key``, ``device_key_id``,
``sort_key``, ``session_count``, ``auth_method``, ``cookie_consent``, ``bypass`` and ``monkey``
are ordinary names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote_plus

# The sensitive words: always removed from URLs (as parameters) and masked as JSON keys;
# HOMEPOT_ANALYTICS_SENSITIVE_QUERY_PARAMS adds to these.
DEFAULT_SENSITIVE_PARAMS = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "pass",
    "token",
    "secret",
    "api_key",
    "apikey",
    "key",
    "session",
    "sessionid",
    "cookie",
    "authorization",
    "auth",
    "jwt",
    "signature",
    "credential",
)
# Sensitive only as the whole name: as a word of a longer name they name ordinary things.
WHOLE_NAME_ONLY = frozenset({"key", "pass", "auth", "session", "cookie"})
# "<qualifier> key" names a secret; any other key (config_key, collapse_key, public_key) does not.
SECRET_KEY_QUALIFIERS = frozenset(
    {
        "api",
        "access",
        "private",
        "secret",
        "session",
        "signing",
        "encryption",
        "decryption",
        "client",
        "auth",
        "master",
        "ssh",
        "hmac",
        "shared",
        "license",
        "app",
    }
)
# Configured words shorter than this match as a whole word only (``otp`` not in ``hotpot``).
_GLUED_MIN_LENGTH = 5

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalise_param(name: str) -> str:
    """A parameter name (or configured word) as compared: decoded, lowercase, ``-`` as ``_``."""
    return unquote_plus(name).strip().lower().replace("-", "_")


@lru_cache(maxsize=4096)
def name_words(name: str) -> tuple[str, ...]:
    """The words of a name, lowercase: ``X-Api-Key`` -> ``("x", "api", "key")``; trailing digits
    are dropped (``password2`` -> ``password``)."""
    text = _CAMEL_BOUNDARY.sub("_", unquote_plus(name).strip())
    words = (word.rstrip("0123456789") or word for word in _NON_WORD.split(text.lower()))
    return tuple(word for word in words if word)


@dataclass(frozen=True)
class _Rule:
    """The rule for one set of sensitive words, prepared once (``_rule``)."""

    whole: frozenset[str]  # whole names: every sensitive word, also glued (``session_id``)
    words: frozenset[str]  # a word of the name: each such entry and its plural
    glued: re.Pattern[str] | None  # a word ending with one (``csrftoken``, ``jsessionid``)
    sequences: tuple[tuple[str, ...], ...]  # configured entries of several words (``otp_code``)


@lru_cache(maxsize=16)
def _rule(sensitive: frozenset[str]) -> _Rule:
    words: set[str] = set()
    glued: set[str] = set()
    sequences: list[tuple[str, ...]] = []
    for entry in sensitive:
        entry_words = tuple(part for part in entry.split("_") if part)
        if entry in WHOLE_NAME_ONLY or not entry_words:
            continue
        if len(entry_words) > 1:
            sequences.append(entry_words)
            continue
        words |= {entry, entry + "s"}
        if entry in DEFAULT_SENSITIVE_PARAMS or len(entry) >= _GLUED_MIN_LENGTH:
            glued.add(entry)
    glued_pattern = (
        re.compile("(?:" + "|".join(re.escape(entry) for entry in sorted(glued)) + ")s?$") if glued else None
    )
    return _Rule(
        whole=frozenset(sensitive) | {entry.replace("_", "") for entry in sensitive},
        words=frozenset(words),
        glued=glued_pattern,
        sequences=tuple(sequences),
    )


def _sequence_matches(words: tuple[str, ...], entry_words: tuple[str, ...]) -> bool:
    """Whether ``entry_words`` (``("otp", "code")``) occur in ``words`` one after the other."""
    size = len(entry_words)
    for start in range(len(words) - size + 1):
        window = words[start : start + size]
        if window[:-1] == entry_words[:-1] and window[-1] in (entry_words[-1], entry_words[-1] + "s"):
            return True
    return False


def _has_secret_key(words: tuple[str, ...]) -> bool:
    """``api key``, ``x api key``, ``accessKeyId``, ``privatekey``: a key a qualifier makes secret."""
    for index, word in enumerate(words):
        if word in ("key", "keys") and index > 0 and words[index - 1] in SECRET_KEY_QUALIFIERS:
            return True
        if "key" in word:
            for suffix in ("key", "keys"):
                if word.endswith(suffix) and word[: -len(suffix)] in SECRET_KEY_QUALIFIERS:
                    return True
    return False


def is_secret_name(name: str, sensitive: frozenset[str]) -> bool:
    """Whether a query parameter, JSON key or text pair's name names a secret, under the sensitive
    words ``sensitive`` (the defaults and the configured ones, normalised)."""
    words = name_words(name)
    if not words:
        return False
    rule = _rule(sensitive)
    if "_".join(words) in rule.whole or "".join(words) in rule.whole:
        return True
    for word in words:
        if word in rule.words or word.startswith("passw"):
            return True
        if rule.glued is not None and rule.glued.search(word):
            return True
    if _has_secret_key(words):
        return True
    return any(_sequence_matches(words, entry_words) for entry_words in rule.sequences)
