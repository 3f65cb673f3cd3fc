"""Secrets in free text (messages, stack traces, search queries): bearer tokens, JWTs,
``password=...`` pairs, well-known API keys, private keys and connection-string passwords masked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

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
    rf"[\w.-]{{0,40}}+(?:\\?[\"'])?\s*[:=]\s*(?!\[redacted\])(?P<value>{_QUOTED_VALUE}|{_BARE_VALUE})"
)
# Words that make the value after ``=``/``:`` a secret (the word may continue: password_hash,
# access_token, sessionid); HOMEPOT_ANALYTICS_SENSITIVE_QUERY_PARAMS adds to them.
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
SPACED_WORDS = ("token", "password", "passwd", "passphrase", "secret", "api key", "apikey", "credential")
_SPACED_TAIL = r"s?\s+(?!\[redacted\])(?P<value>(?=[^\s\"'<>]*\d)[^\s\"'&,;)}\]<>]{6,}|[a-z0-9_\-+/=.]{20,})"
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


def _replacement(kind: str, match: re.Match[str], text: str) -> str:
    """What replaces one match (found in the lowercased text) in the original ``text``."""
    original = text[match.start() : match.end()]
    if kind == "pair":
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
            return original  # "Basic authentication failed": an English word, not base64
        return scheme + REDACTED
    if kind == "userinfo":
        return text[match.start("userinfo") : match.end("userinfo")] + REDACTED + "@"
    if kind == "apikey":
        before = text[match.start() - 1 : match.start()]
        if (before and before.isalnum()) or _API_KEY_CASED.fullmatch(original) is None:
            return original  # inside a longer word, or not in the key's case (akia... is no AWS key)
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
            spans.append((match.start(), match.end(), _replacement(detector.kind, match, text)))
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
