"""What the mapping does to personal and secret values before a row is stored.

The mapping calls one ``Privacy`` object for every user id, IP address, URL and free text it
stores, so the rules live in one place:

- user ids become keyed pseudonyms (``u_`` + 32 hex digits of HMAC-SHA256), the same in every
  table, irreversible without the key; a value that already is a pseudonym is kept as it is,
  so a row that passes twice (the OTLP sink, a replay) is not hashed twice;
- client IPs are truncated to their /24 (IPv4) or /48 (IPv6) network;
- sensitive query parameters are removed from URLs, and bearer tokens, JWTs, ``password=...``
  pairs, well-known API keys, private keys and connection-string passwords are masked in text.

``privacy_from_settings`` builds the policy of a process (cached, cheap to call per request).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    from homepot_foundation.settings import Settings

logger = logging.getLogger(__name__)

REDACTED = "[REDACTED]"
PSEUDONYM_PREFIX = "u_"
_PSEUDONYM = re.compile(r"u_[0-9a-f]{32}")
KEY_FILE_NAME = "pseudonym.key"

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

# --- secrets in free text ------------------------------------------------------------------------
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
    kind: str  # pair, scheme, userinfo, apikey or whole


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
    by_trigger: dict[str, tuple[_Detector, ...]] = {}
    for detector in (*pairs, *_FIXED_DETECTORS):
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


# --- sensitive query parameters ------------------------------------------------------------------
def _normalise_param(name: str) -> str:
    return unquote_plus(name).strip().lower().replace("-", "_")


def is_sensitive_param(name: str, sensitive: frozenset[str]) -> bool:
    """Whether a query parameter (or JSON key) names a secret under the given word list."""
    normalised = _normalise_param(name)
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


# --- IP addresses -------------------------------------------------------------------------------
_IPV4_MASK = (1 << 32) - (1 << 8)  # /24
_IPV6_MASK = (1 << 128) - (1 << 80)  # /48


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = value.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 203.0.113.7:4711
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def truncate_ip(value: str) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network address of an IP; None for what is not an IP."""
    address = _parse_ip(value)
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Address(int(address) & _IPV4_MASK))
    return str(ipaddress.IPv6Address(int(address) & _IPV6_MASK))


# --- the policy -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Privacy:
    """A policy for stored values. ``Privacy()`` (``PASS_THROUGH``) stores everything as it arrives;
    ``privacy_from_settings`` gives the protective policy a deployment runs with."""

    pseudonym_key: bytes | None = field(default=None, repr=False)
    truncate_ips: bool = False
    mask_secrets: bool = False
    sensitive_params: frozenset[str] = frozenset(DEFAULT_SENSITIVE_PARAMS)
    _extra_words: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        extra = sorted(word for word in self.sensitive_params if word not in DEFAULT_SENSITIVE_PARAMS)
        object.__setattr__(self, "_extra_words", tuple(extra))

    @property
    def pseudonymizes(self) -> bool:
        return self.pseudonym_key is not None

    def user(self, value: Any) -> str | None:
        """A user id as stored (``user_id``, and ``changed_by``/``initiated_by`` when a user)."""
        if value is None:
            return None
        text = value if isinstance(value, str) else str(value)
        if self.pseudonym_key is None or not text or is_pseudonym(text):
            return text
        digest = hmac.new(self.pseudonym_key, text.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return PSEUDONYM_PREFIX + digest.hexdigest()[:32]

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
            text = self._strip_params(text)
        return self.text(text)

    def _strip_params(self, url: str) -> str:
        base, hash_mark, fragment = url.partition("#")
        path, question_mark, query = base.partition("?")
        if question_mark:
            query = _strip_query(query, self.sensitive_params)
            base = f"{path}?{query}" if query else path
        if hash_mark:
            # SPA routes (#/devices?token=...) and OAuth implicit flows (#access_token=...).
            route, inner_mark, inner_query = fragment.partition("?")
            if inner_mark:
                inner_query = _strip_query(inner_query, self.sensitive_params)
                fragment = f"{route}?{inner_query}" if inner_query else route
            elif "=" in fragment:
                fragment = _strip_query(fragment, self.sensitive_params)
            return f"{base}#{fragment}" if fragment else base
        return base

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
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                str(key): REDACTED
                if item not in (None, "") and self.is_secret_key(str(key))
                else self.json(item)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.json(item) for item in value]
        return value


PASS_THROUGH = Privacy()

VALUE_CACHE_SIZE = 65536
# Free text and JSON keys are cached only when short, in a smaller cache: memory stays small
# (a stack trace is not kept), and what repeats (a device state's reason, an activity's search,
# the keys and values of extra_data) is short.
TEXT_CACHE_SIZE = 4096
TEXT_CACHE_MAX_CHARS = 256


class CachingPrivacy(Privacy):
    """``Privacy`` that remembers its results (a bounded LRU per method).

    User ids, client IPs and paths repeat from request to request, and pseudonymising (an
    HMAC), truncating (``ipaddress``) and scanning them again each time was most of the
    mapping's cost (bench/README.md: mapping 10.1k -> 15.1k rows/s). Short free text and JSON
    keys repeat too: the secret scan of ``{"site": "site_12"}`` cost more than its JSON
    round trip. Rows are identical."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("user", "ip", "url"):
            object.__setattr__(self, name, _cached(getattr(super(), name), VALUE_CACHE_SIZE))
        for name in ("text", "is_secret_key"):
            method = getattr(super(), name)
            object.__setattr__(self, name, _cached(method, TEXT_CACHE_SIZE, TEXT_CACHE_MAX_CHARS))


def _cached(method: Any, size: int, max_chars: int | None = None) -> Any:
    """``method`` with a bounded LRU cache for ``str`` and ``int`` arguments (what the SDK's
    attributes hold); ``max_chars`` bounds the strings kept. Other values are computed each
    time: a cache takes 1.0 and True for the same key, yet their texts differ."""
    cached = lru_cache(maxsize=size)(method)

    def call(value: Any) -> Any:
        kind = type(value)
        if (kind is str and (max_chars is None or len(value) <= max_chars)) or kind is int:
            return cached(value)
        return method(value)

    return call


def is_pseudonym(value: str) -> bool:
    """Whether a stored user id already is a pseudonym (``u_`` + 32 lowercase hex digits)."""
    return len(value) == 34 and _PSEUDONYM.fullmatch(value) is not None


# --- from settings --------------------------------------------------------------------------------
def _read_or_create_key(path: Path) -> bytes:
    """The key in ``path``, created once (0600) when missing; safe against concurrent creators."""
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text().strip()
        if existing:
            return existing.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".pseudonym-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        os.chmod(temporary, 0o600)
        # link() fails when the file exists: the first creator wins, everyone reads its key.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
            logger.warning(
                "HOMEPOT_ANALYTICS_PSEUDONYM_KEY is unset: generated a pseudonym key in %s. Every process "
                "that writes or queries these tables must use the same key: set the variable when they "
                "run on other machines or with another data_dir.",
                path,
            )
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return path.read_text().strip().encode()


def resolve_pseudonym_key(settings: Settings) -> bytes:
    """The configured key, else the one generated under ``data_dir`` (else a per-process key)."""
    if settings.pseudonym_key is not None:
        return settings.pseudonym_key.get_secret_value().encode()
    path = Path(settings.data_dir).expanduser() / KEY_FILE_NAME
    try:
        return _read_or_create_key(path)
    except OSError as error:
        # Never fall back to raw ids: a key of this process only keeps ids pseudonymous, though
        # they no longer match those of other processes and restarts.
        logger.error("cannot read or create %s (%s); user ids get a key of this process only", path, error)
        return _process_key()


@lru_cache(maxsize=1)
def _process_key() -> bytes:
    return secrets.token_hex(32).encode()


_cache: dict[tuple[object, ...], Privacy] = {}
_cache_lock = threading.Lock()


def _settings_key(settings: Settings) -> tuple[object, ...]:
    secret = settings.pseudonym_key.get_secret_value() if settings.pseudonym_key is not None else None
    return (
        secret,
        settings.pseudonymize_users,
        settings.truncate_ips,
        tuple(settings.sensitive_query_params),
        str(settings.data_dir),
    )


def _sensitive_words(extra: Iterable[str]) -> frozenset[str]:
    return frozenset(DEFAULT_SENSITIVE_PARAMS) | {_normalise_param(word) for word in extra if word.strip()}


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
    )
