"""What the mapping does to personal and secret values before a row is stored.

The mapping calls one ``Privacy`` object for every user id, IP address, URL and free text it
stores, so the rules live in one place:

- user ids become keyed pseudonyms (``u_`` + 32 hex digits of HMAC-SHA256), the same in every
  table, irreversible without the key; a value that already is a pseudonym is kept as it is,
  so a row that passes twice (the OTLP sink, a replay) is not hashed twice; the system actors
  (``system``, ``orchestrator``, ...) of ``changed_by``/``initiated_by`` are no users;
- client IPs are truncated to their /24 (IPv4) or /48 (IPv6) network;
- sensitive query parameters are removed from URLs, and bearer tokens, JWTs, ``password=...``
  pairs, well-known API keys, private keys and connection-string passwords are masked in text;
  which names are secrets is decided on their whole words (``api_key`` is, ``config_key`` is
  not), and a validation message (``password: Field required``) is no secret.

``privacy_from_settings`` builds the policy of a process (cached, cheap to call per request).

One module per job: ``policy`` (the ``Privacy`` policy, delegating to the rules), ``pseudonyms``,
``keys`` (the pseudonym key file), ``ips``, ``secret_names`` (which names name a secret),
``urls`` (sensitive query parameters), ``text_masking`` and ``json_masking`` (secrets),
``caching`` (``CachingPrivacy``) and ``from_settings`` (the policies of a deployment). Everything
is imported from here.
"""

from __future__ import annotations

from exporter.privacy.caching import TEXT_CACHE_MAX_CHARS, TEXT_CACHE_SIZE, VALUE_CACHE_SIZE, CachingPrivacy
from exporter.privacy.from_settings import export_privacy, privacy_from_settings
from exporter.privacy.ips import truncate_ip
from exporter.privacy.json_masking import mask_json
from exporter.privacy.keys import KEY_FILE_NAME, resolve_pseudonym_key

# Private, yet read through this package by the tests of the key file.
from exporter.privacy.keys import _read_or_create_key as _read_or_create_key
from exporter.privacy.policy import PASS_THROUGH, Privacy
from exporter.privacy.pseudonyms import PSEUDONYM_PREFIX, is_pseudonym, pseudonym
from exporter.privacy.secret_names import is_secret_name
from exporter.privacy.text_masking import PAIR_WORDS, REDACTED, is_validation_message, mask_secrets
from exporter.privacy.urls import DEFAULT_SENSITIVE_PARAMS, is_sensitive_param, strip_sensitive_params

__all__ = [
    "DEFAULT_SENSITIVE_PARAMS",
    "KEY_FILE_NAME",
    "PAIR_WORDS",
    "PASS_THROUGH",
    "PSEUDONYM_PREFIX",
    "REDACTED",
    "TEXT_CACHE_MAX_CHARS",
    "TEXT_CACHE_SIZE",
    "VALUE_CACHE_SIZE",
    "CachingPrivacy",
    "Privacy",
    "export_privacy",
    "is_pseudonym",
    "is_secret_name",
    "is_sensitive_param",
    "is_validation_message",
    "mask_json",
    "mask_secrets",
    "privacy_from_settings",
    "pseudonym",
    "resolve_pseudonym_key",
    "strip_sensitive_params",
    "truncate_ip",
]
