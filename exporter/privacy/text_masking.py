"""Secrets in free text (messages, stack traces, search queries): bearer tokens, JWTs,
``password=...`` pairs, well-known API keys, private keys and connection-string passwords masked.

A ``name=value`` / ``name: value`` pair is masked when its whole name names a secret by the rule of
``secret_names`` (``db_password=``, ``"api_key":``, ``jsessionid=``; not ``session_count=`` or
``secretary:``), and its value is no validation message: ``password: Field required`` (pydantic's,
FastAPI's 422) names a field, it holds no password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from exporter.privacy.secret_names import DEFAULT_SENSITIVE_PARAMS, is_secret_name

REDACTED = "[REDACTED]"

# Each detector is a regex with a literal prefix, run on the lowercased text only when one of its
# trigger words occurs in it; the matched spans are then replaced in the original text. ``re``
# searches a literal prefix at memchr speed, whereas one alternation of every pattern (or a
# case-insensitive one) tries each branch at every position: measured on a 6.7 kB traceback,
# ~4 ms against ~0.1 ms.

# The value after ``password=``, ``"token": ``, ``api-key: Bearer ``...
_QUOTED_VALUE = r"\\\"[^\"\\]*\\\"|\"[^\"\n]*\"|'[^'\n]*'"
_BARE_VALUE = r"(?:(?:bearer|basic|digest)\s+)?[^\s\"'&,;)}\]<>]+"
_PAIR_TAIL = (
    r"(?P<rest>[\w.-]{0,40}+)(?:\\?[\"'])?\s*[:=]\s*"
    rf"(?!\[redacted\])(?P<value>{_QUOTED_VALUE}|{_BARE_VALUE})"
)
# The rest of a pair's name before its trigger word (``db_`` of ``db_password``), read back at
# most this far: the whole name decides whether the pair is a secret.
_NAME_HEAD_MAX = 40
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
# Words that trigger the pair detector (the name may go on around them: db_password, access_token,
# jsessionid; whether it is a secret is then decided on the whole name);
# HOMEPOT_ANALYTICS_SENSITIVE_QUERY_PARAMS adds to them.
PAIR_WORDS = (
    "passw",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "access_key",
    "access-key",
    "private_key",
    "private-key",
    "credential",
    "authorization",
    "session",
)
# Words after which a credential often follows with no ``=``/``:`` at all, as prose writes it:
# ``invalid token 9f2c...``, ``api key sk_abc... rejected``, ``password Hunter2 expired``. The value
# is masked only when it looks like one (a digit in 6+ characters, or 20+ token characters), so
# ``token expired`` or ``secret santa`` stay as they are.
# A key with a secret-key prefix is masked too, however short (``api key sk-live-xxxx rejected``).
SPACED_WORDS = ("token", "password", "passwd", "passphrase", "secret", "api key", "apikey", "credential")
_SPACED_TAIL = (
    r"s?\s+(?!\[redacted\])(?P<value>(?=[^\s\"'<>]*\d)[^\s\"'&,;)}\]<>]{6,}|[a-z0-9_\-+/=.]{20,}"
    r"|(?:sk|pk|rk)[-_][a-z0-9_\-]{4,})"
)
# What a validation error says after a field's name (pydantic 2 and 1, FastAPI's 422, hand-written
# validators), in lowercase: ``password: Field required``, ``token: Input should be a valid
# string``. A phrase is followed by punctuation, a space or the end, so ``password: mustang1``
# and ``password: required-2024!`` stay passwords.
VALIDATION_PHRASES = (
    # pydantic 2
    "field required",
    "input should",
    "string should",
    "list should",
    "tuple should",
    "set should",
    "dictionary should",
    "value should",
    "data should",
    "url input should",
    "json input should",
    "decimal input should",
    "uuid input should",
    "value error",
    "assertion failed",
    "extra inputs are not permitted",
    "invalid json",
    "unable to parse",
    # pydantic 1
    "none is not an allowed value",
    "value is not a valid",
    "ensure this value",
    "str type expected",
    "extra fields not permitted",
    "string does not match",
    # hand-written validators
    "is required",
    "is missing",
    "must be",
    "must not",
    "must contain",
    "must have",
    "must match",
    "cannot be",
    "can't be",
    "may not be",
    "is too short",
    "is too long",
    "too short",
    "too long",
    "is invalid",
    "is not valid",
    "not valid",
    "is empty",
    "not provided",
    "not set",
    "does not match",
    "do not match",
    "doesn't match",
)
# One word that is a whole validation message: ``password: required``, ``token: missing.``; with
# more words after it (``password: missing link horse``) it may be a passphrase, and is masked.
VALIDATION_WORDS = ("required", "missing", "invalid", "empty")
_MESSAGE_END = r"""[.,;:)\]}"']"""
_VALIDATION_READ = 64  # longer than every phrase
_VALIDATION_MESSAGE = re.compile(
    "(?:"
    + "|".join(re.escape(phrase) for phrase in sorted(VALIDATION_PHRASES, key=len, reverse=True))
    + rf")(?={_MESSAGE_END}*(?:\s|$))"
    + "|(?:"
    + "|".join(VALIDATION_WORDS)
    + rf")(?={_MESSAGE_END}*$|{_MESSAGE_END}+\s)"
)
# Well-known API key formats: (trigger words, pattern in the original case).
_API_KEYS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("_live_", "_test_"), r"[spr]k_(?:live|test)_[A-Za-z0-9]{10,}"),  # Stripe
    (("whsec_",), r"whsec_[A-Za-z0-9]{16,}"),
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"gh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub
    (("github_pat_",), r"github_pat_[A-Za-z0-9_]{20,}"),
    (("glpat-",), r"glpat-[A-Za-z0-9_-]{20,}"),  # GitLab
    (("akia", "asia"), r"A[KS]IA[0-9A-Z]{16}"),  # AWS access key id
    (("xox",), r"xox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack
    (("aiza",), r"AIza[0-9A-Za-z_-]{35}"),  # Google
    (("sk-",), r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"),  # OpenAI, Anthropic
    (("npm_",), r"npm_[A-Za-z0-9]{36}"),
    (("sg.",), r"SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"),  # SendGrid
)
_API_KEY_CASED = re.compile("|".join(pattern for _, pattern in _API_KEYS))


def _lowercase(pattern: str) -> str:
    """A pattern for lowercased text: ``A-Z`` ranges and upper-case literals in lower case."""
    return re.sub(r"[A-Z]", lambda match: match.group(0).lower(), pattern.replace("A-Za-z", "a-z"))


@dataclass(frozen=True)
class _Detector:
    triggers: tuple[str, ...]
    pattern: re.Pattern[str]
    kind: str  # pair, spaced, scheme, userinfo, apikey or whole


_FIXED_DETECTORS = (
    _Detector(("bearer",), re.compile(r"(?P<scheme>bearer\s+)[a-z0-9\-._~+/]{8,}+=*"), "scheme"),
    _Detector(("basic",), re.compile(r"(?P<scheme>basic\s+)[a-z0-9+/]{8,}+=*"), "scheme"),
    # Only where a token starts (not inside a run of base64, which would be rescanned from
    # every "eyJ" in it: quadratic), the literal prefix first (re searches it at memchr speed).
    _Detector(
        ("eyj",), re.compile(r"eyj(?<![a-z0-9_-]eyj)[a-z0-9_-]{5,}+\.[a-z0-9_-]{5,}+\.[a-z0-9_-]*"), "whole"
    ),
    # scheme://user:password@host  (scheme, user and host are kept)
    _Detector(("://",), re.compile(r"(?P<userinfo>://[^\s:/?#@\"']*:)[^\s/?#\"']+@"), "userinfo"),
    # PEM private keys, also when cut off by a length limit
    _Detector(
        ("-----begin",),
        re.compile(r"-----begin [a-z ]*private key-----[\s\S]*?(?:-----end [a-z ]*private key-----|\Z)"),
        "whole",
    ),
    *(_Detector(triggers, re.compile(_lowercase(pattern)), "apikey") for triggers, pattern in _API_KEYS),
)


def is_validation_message(value: str) -> bool:
    """Whether ``value`` starts as a validation error does (``Field required``, ``Input should be
    a valid string``): the text after a field's name, not a credential."""
    return _VALIDATION_MESSAGE.match(value.lstrip()[:_VALIDATION_READ].lower()) is not None


@lru_cache(maxsize=16)
def _sensitive_words(extra_words: tuple[str, ...]) -> frozenset[str]:
    return frozenset(DEFAULT_SENSITIVE_PARAMS) | {word.lower().replace("-", "_") for word in extra_words}


@lru_cache(maxsize=4096)
def _is_secret_pair_name(name: str, extra_words: tuple[str, ...]) -> bool:
    return is_secret_name(name, _sensitive_words(extra_words))


def _pair_name(text: str, match: re.Match[str]) -> str:
    """The whole name of a pair: its trigger word, what follows it and what precedes it."""
    start = match.start()
    floor = max(0, start - _NAME_HEAD_MAX)
    while start > floor and text[start - 1] in _NAME_CHARS:
        start -= 1
    return text[start : match.end("rest")]


def _is_secret_pair(text: str, match: re.Match[str], extra_words: tuple[str, ...]) -> bool:
    """Whether a pair the detector found holds a secret: a secret's name, and no validation message."""
    if not _is_secret_pair_name(_pair_name(text, match), extra_words):
        return False
    start, end = match.start("value"), match.end("value")
    if text.startswith('\\"', start):  # \"Field required\"
        message = text[start + 2 : end - 2]
    elif text[start] in "\"'":
        message = text[start + 1 : end - 1]
    else:  # a bare value is the message's first word: read on
        message = text[start : start + _VALIDATION_READ]
    return not is_validation_message(message)


@lru_cache(maxsize=16)
def _detectors(extra_words: tuple[str, ...]) -> dict[str, tuple[_Detector, ...]]:
    """Every detector, by trigger word."""
    words = dict.fromkeys((*PAIR_WORDS, *(word.lower() for word in extra_words)))
    pairs = tuple(_Detector((word,), re.compile(re.escape(word) + _PAIR_TAIL), "pair") for word in words)
    spaced = tuple(
        _Detector((word,), re.compile(r"(?<![a-z0-9_])" + re.escape(word) + _SPACED_TAIL), "spaced")
        for word in SPACED_WORDS
    )
    by_trigger: dict[str, tuple[_Detector, ...]] = {}
    for detector in (*pairs, *spaced, *_FIXED_DETECTORS):
        for trigger in detector.triggers:
            by_trigger[trigger] = (*by_trigger.get(trigger, ()), detector)
    return by_trigger


def _replacement(kind: str, match: re.Match[str], text: str, extra_words: tuple[str, ...]) -> str | None:
    """What replaces one match (found in the lowercased text) in the original ``text``; None when
    it is no secret after all (then it hides nothing that another detector finds in it)."""
    original = text[match.start() : match.end()]
    if kind == "pair":
        if not _is_secret_pair(text, match, extra_words):
            return None
        name = text[match.start() : match.start("value")]
        value = text[match.start("value") : match.end("value")]
        if value.startswith('\\"'):
            return f'{name}\\"{REDACTED}\\"'
        if value[0] in "\"'":
            return f"{name}{value[0]}{REDACTED}{value[0]}"
        auth_scheme = re.match(r"(?i:bearer|basic|digest)\s+", value)
        return f"{name}{auth_scheme.group(0) if auth_scheme else ''}{REDACTED}"
    if kind == "spaced":
        return text[match.start() : match.start("value")] + REDACTED
    if kind == "scheme":
        scheme = text[match.start("scheme") : match.end("scheme")]
        credentials = original[len(scheme) :]
        if scheme[:2].lower() == "ba" and re.search(r"[A-Z0-9+/=]", credentials) is None:
            return None  # "Basic authentication failed": an English word, not base64
        return scheme + REDACTED
    if kind == "userinfo":
        return text[match.start("userinfo") : match.end("userinfo")] + REDACTED + "@"
    if kind == "apikey":
        before = text[match.start() - 1 : match.start()]
        if (before and before.isalnum()) or _API_KEY_CASED.fullmatch(original) is None:
            return None  # inside a longer word, or not in the key's case (akia... is no AWS key)
    return REDACTED


def _lowered(text: str) -> str:
    """``text.lower()`` with the same length, so spans found in it fit the original."""
    lower = text.lower()
    if len(lower) == len(text):
        return lower
    # A few characters lowercase to two (U+0130): keep those as they are.
    return "".join(char.lower() if len(char.lower()) == 1 else char for char in text)


def mask_secrets(text: str, extra_words: tuple[str, ...] = ()) -> str:
    """``text`` with every secret the detectors know replaced by ``[REDACTED]``."""
    lower = _lowered(text)
    by_trigger = _detectors(extra_words)
    # ~40 substring searches (each at memchr speed) decide which regexes run at all.
    found = [trigger for trigger in by_trigger if trigger in lower]
    if not found:
        return text
    spans: list[tuple[int, int, str]] = []
    for detector in dict.fromkeys(detector for trigger in found for detector in by_trigger[trigger]):
        for match in detector.pattern.finditer(lower):
            replacement = _replacement(detector.kind, match, text, extra_words)
            if replacement is not None:
                spans.append((match.start(), match.end(), replacement))
    if not spans:
        return text
    spans.sort(key=lambda span: (span[0], -span[1]))
    pieces: list[str] = []
    last = 0
    for start, end, replacement in spans:
        if start < last:  # inside a span already masked (a JWT as a password's value)
            continue
        pieces += (text[last:start], replacement)
        last = end
    pieces.append(text[last:])
    return "".join(pieces)
