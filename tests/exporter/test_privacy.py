"""The privacy policy: pseudonyms, truncated IPs, URLs without secrets, secrets masked in text."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from exporter import conventions as c
from exporter.mapping import log_record_to_rows, span_to_rows
from exporter.privacy import (
    PASS_THROUGH,
    REDACTED,
    CachingPrivacy,
    Privacy,
    export_privacy,
    is_pseudonym,
    privacy_from_settings,
)
from homepot_foundation.settings import Settings
from tests.support.telemetry import event_log, failing_request_span, job_span, request_span

KEY = b"k" * 32
STRICT = Privacy(pseudonym_key=KEY, truncate_ips=True, mask_secrets=True)

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImlhdCI6MTUxNjIzOTAyMn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
# (text containing a secret, the secret) for every kind the policy must mask.
SECRETS_IN_TEXT = [
    ("login failed: password=hunter2!x", "hunter2!x"),
    ('{"password": "correct horse battery"}', "correct horse battery"),
    ("{'client_secret': 'cs-7781-secret-value'}", "cs-7781-secret-value"),
    ("PASSWD: Sommer2024", "Sommer2024"),
    ("retrying with access_token=ya29.a0AfH6SMBx3", "ya29.a0AfH6SMBx3"),
    ("Authorization: Bearer opaque-token-123456", "opaque-token-123456"),
    ("authorization: bearer opaque-token-123456", "opaque-token-123456"),
    ("header Basic dXNlcjpwYXNzd29yZA== rejected", "dXNlcjpwYXNzd29yZA=="),
    (f"invalid token {JWT} given", JWT),
    ("connect to postgresql://app:S3cr3t-pw@db.internal:5432/homepot failed", "S3cr3t-pw"),
    ("redis://:hunter2redis@cache:6379/0 unreachable", "hunter2redis"),
    ("key sk_live_4eC39HqLyjWDarjtT1zdp7dc leaked", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("gh token ghp_16C7e42F292c6912E7710c838347Ae178B4a here", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
    ("aws AKIAIOSFODNN7EXAMPLE in config", "AKIAIOSFODNN7EXAMPLE"),
    ("slack xoxb-123456789012-123456789012-abcdefABCDEF", "xoxb-123456789012-123456789012-abcdefABCDEF"),
    ("google AIzaSyA-1234567890abcdefghijklmnopqrstu", "AIzaSyA-1234567890abcdefghijklmnopqrstu"),
    ("openai sk-proj-abcdefghijklmnopqrstuvwxyz012345", "sk-proj-abcdefghijklmnopqrstuvwxyz012345"),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEA7",
    ),
    ("cut off: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0", "MIIEvQIBADANBgkqhkiG9w0"),
    ('escaped {\\"api_key\\": \\"k-991-abc\\"}', "k-991-abc"),
    ("jsessionid=9F8E7D6C5B4A;", "9F8E7D6C5B4A"),
    ("İstanbul office: password=Gizli123 then İ", "Gizli123"),
    # A credential after a credential word, with no "=" or ":" (prose).
    ("invalid token 9f2c7a1be3d4 for device dev_001", "9f2c7a1be3d4"),
    ("api key sk_abc12345xyz rejected", "sk_abc12345xyz"),
    ("password Hunter2-x expired", "Hunter2-x"),
    ("login with passphrase correct-horse-battery-staple", "correct-horse-battery-staple"),
    ("Token ABCDEFGHIJKLMNOPQRSTUV refused", "ABCDEFGHIJKLMNOPQRSTUV"),
    ("credentials 12345678 wrong", "12345678"),
    # Beside validation messages (the precision corpus below), credentials stay masked.
    ("password: hunter2", "hunter2"),
    ("password=hunter2", "hunter2"),
    ("invalid token abc123def", "abc123def"),
    ("api key sk-live-xxxx rejected", "sk-live-xxxx"),
    ("secret=s3cr3t-value", "s3cr3t-value"),
    ("DB_PASSWORD=x9y8z7w6", "x9y8z7w6"),
    ("retry with sessionId=abc123xyz", "abc123xyz"),
    ("password: required-2024!", "required-2024!"),
    ("password: mustang1", "mustang1"),
    ('{"password": "missing link horse"}', "missing link horse"),
    ("session_count: Bearer opaque-token-123456", "opaque-token-123456"),  # no pair, a bearer token
]

# Texts that only look a little like secrets: stored unchanged.
HARMLESS = [
    "Basic authentication required",
    "max tokens exceeded",
    "Key (event_id)=(8b6f) already exists",
    "device dev_001 went offline at 12:00",
    "akiaiosfodnn7example is not an AWS key in lower case",
    "task-runner finished",
    "http://example.com/path",
    "token expired, please sign in again",
    "the secret santa list for 2024",
    "tokens 5 left",
    "get_token 123456 called",
    "password reset requested",
]

# The precision corpus: ordinary HOMEPOT values that name a key or a credential field yet hold no
# secret. Masking them would destroy what the AI team needs; each is stored as it is.
ORDINARY_TEXT = [
    # validation messages (FastAPI's 422 as our middleware records it, pydantic 2 and 1)
    "password: Field required",
    "password: field required",
    "body.password: Field required; body.token: Input should be a valid string",
    "body.password: String should have at least 8 characters",
    "token: value is not a valid string",
    "api_key: ensure this value has at least 32 characters",
    "secret: none is not an allowed value",
    "password: required, token: missing.",
    '{"password": "Field required"}',
    # ordinary names in key=value text
    "config_key=display.brightness applied",
    "collapse_key: firmware_update",
    "device_key_id=dk_0042 rotated",
    "sort_key=created_at",
    "session_count=3",
    "secretary: Jane",
    "tokenizer: bpe",
]
ORDINARY_KEYS = [
    "config_key",
    "collapse_key",
    "device_key_id",
    "sort_key",
    "key_id",
    "keyword",
    "monkey",
    "public_key",
    "primary_key",
    "partition_key",
    "idempotency_key",
    "configKey",
    "collapseKey",
    "session_count",
    "auth_method",
    "cookie_consent",
    "bypass",
    "secretary",
    "tokenizer",
    "device_id",
]
SECRET_KEYS = [
    "password",
    "Password",
    "passwd",
    "passwordHash",
    "db_password",
    "DB_PASSWORD",
    "pwd",
    "passphrase",
    "secret",
    "client_secret",
    "clientSecret",
    "token",
    "access_token",
    "refresh_token",
    "csrftoken",
    "push_tokens",
    "api_key",
    "apikey",
    "apiKey",
    "X-Api-Key",
    "x_api_key",
    "access_key",
    "accessKeyId",
    "private_key",
    "secret_key",
    "signing_key",
    "session_key",
    "key",
    "session",
    "sessionid",
    "session_id",
    "SessionID",
    "jsessionid",
    "authorization",
    "auth",
    "jwt",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "credentials",
    "cookie",
]


@pytest.mark.parametrize(("text", "secret"), SECRETS_IN_TEXT)
def test_every_kind_of_secret_is_masked_in_text(text: str, secret: str) -> None:
    masked = STRICT.text(text)
    assert masked is not None
    assert secret not in masked
    assert REDACTED in masked


def test_masking_keeps_the_context_around_a_secret() -> None:
    assert (
        STRICT.text("login failed: password=hunter2 for bob") == f"login failed: password={REDACTED} for bob"
    )
    assert STRICT.text('{"password": "x y", "user": "bob"}') == f'{{"password": "{REDACTED}", "user": "bob"}}'
    assert STRICT.text("Authorization: Bearer abcdefghij") == f"Authorization: Bearer {REDACTED}"
    assert (
        STRICT.text("postgresql://app:pw123456@db:5432/x down")
        == f"postgresql://app:{REDACTED}@db:5432/x down"
    )


@pytest.mark.parametrize("text", HARMLESS)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert STRICT.text(text) == text


@pytest.mark.parametrize("text", ORDINARY_TEXT)
def test_the_precision_corpus_of_text_is_stored_unmasked(text: str) -> None:
    assert STRICT.text(text) == text


@pytest.mark.parametrize("name", ORDINARY_KEYS)
def test_ordinary_names_are_no_secret_keys(name: str) -> None:
    assert not STRICT.is_secret_key(name)
    assert STRICT.url(f"/x?{name}=v1&page=2") == f"/x?{name}=v1&page=2"


@pytest.mark.parametrize("name", SECRET_KEYS)
def test_names_of_secrets_are_secret_keys(name: str) -> None:
    assert STRICT.is_secret_key(name)
    assert STRICT.url(f"/x?{name}=v1&page=2") == "/x?page=2"
    assert STRICT.json({name: "plain-value"}) == {name: REDACTED}


def test_the_precision_corpus_of_json_is_stored_unmasked() -> None:
    context = {
        "config_key": "display.brightness",
        "collapse_key": "firmware_update",
        "device_key_id": "dk_0042",
        "sort_key": "created_at",
        "key_id": 3,
        "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
        "session_count": 4,
        "errors": {"password": "Field required", "token": "Input should be a valid string"},
        "message": "password: Field required",
        "settings": [{"config_key": "volume", "value": 7}],
    }
    assert STRICT.json(context) == context
    assert STRICT.json({"password": "missing link horse", "token": "required-2024!"}) == {
        "password": REDACTED,
        "token": REDACTED,
    }


def test_masking_is_idempotent_and_handles_none_and_non_strings() -> None:
    once = STRICT.text(SECRETS_IN_TEXT[0][0])
    assert STRICT.text(once) == once
    assert STRICT.text(None) is None
    assert STRICT.text(12345) == "12345"


def test_pathological_inputs_are_scanned_in_linear_time() -> None:
    # Catastrophic backtracking would take seconds (or forever) on these.
    for text in (
        "password" * 20_000,
        "a:" * 50_000,
        "token=" + "x" * 100_000,
        "://a:" * 20_000,
        "eyJ" * 30_000,
    ):
        started = time.perf_counter()
        STRICT.text(text)
        assert time.perf_counter() - started < 1.0, text[:20]


def test_pass_through_stores_everything_as_it_arrives() -> None:
    assert PASS_THROUGH.text("password=hunter2") == "password=hunter2"
    assert PASS_THROUGH.url("/x?token=1") == "/x?token=1"
    assert PASS_THROUGH.user("alice") == "alice"
    assert PASS_THROUGH.ip("203.0.113.7") == "203.0.113.7"


# --- URLs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("/login?user=bob&password=x&next=%2Fhome", "/login?user=bob&next=%2Fhome"),
        ("/a?access_token=abc&X-Api-Key=1&keyword=q&monkey=2", "/a?keyword=q&monkey=2"),
        ("/x?SessionID=1&Password=2&q=a+b", "/x?q=a+b"),
        ("/x?token=1", "/x"),
        ("/x?secret", "/x"),
        ("/x?authorization=Bearer%20abc&page=2", "/x?page=2"),
        ("/cb?X-Amz-Signature=abc&X-Amz-Credential=def&id=3", "/cb?id=3"),
        ("https://u:pw@host/p#access_token=zz&state=1", f"https://u:{REDACTED}@host/p#state=1"),
        ("/app#/devices?token=1&tab=2", "/app#/devices?tab=2"),
        ("/page#section-2", "/page#section-2"),
        ("/api/keys/sk_live_4eC39HqLyjWDarjtT1zdp7dc", f"/api/keys/{REDACTED}"),
        (f"/reset/{JWT}", f"/reset/{REDACTED}"),
        ("/api/v1/devices/dev_001", "/api/v1/devices/dev_001"),
    ],
)
def test_sensitive_query_parameters_are_removed_from_urls(url: str, stored: str) -> None:
    assert STRICT.url(url) == stored


def test_configured_parameters_are_removed_too_and_masked_in_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOMEPOT_ANALYTICS_SENSITIVE_QUERY_PARAMS", "otp, Ticket")
    settings = Settings(data_dir=tmp_path, pseudonym_key=SecretStr("x" * 16))
    assert settings.sensitive_query_params == ["otp", "Ticket"]
    privacy = privacy_from_settings(settings)
    assert privacy.url("/verify?otp=123456&ticket=T-1&step=2") == "/verify?step=2"
    assert privacy.text("otp=123456 rejected") == f"otp={REDACTED} rejected"
    assert STRICT.url("/verify?otp=123456") == "/verify?otp=123456"  # not in the built-in list


# --- IPs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "stored"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("203.0.113.0", "203.0.113.0"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::"),
        ("::ffff:203.0.113.9", "203.0.113.0"),
        ("203.0.113.7:4711", "203.0.113.0"),
        ("[2001:db8:abcd:12::1]:443", "2001:db8:abcd::"),
        ("fe80::1%eth0", "fe80::"),
        ("alice-laptop.local", None),  # not an IP: cannot be truncated, so not stored
        (None, None),
    ],
)
def test_ips_are_truncated_to_their_network(address: str | None, stored: str | None) -> None:
    assert STRICT.ip(address) == stored


# --- pseudonyms ---------------------------------------------------------------------------------------------
def test_pseudonyms_are_keyed_stable_idempotent_and_fit_the_column() -> None:
    alice = STRICT.user("alice@example.com")
    assert alice is not None and is_pseudonym(alice) and len(alice) == 34
    assert STRICT.user("alice@example.com") == alice
    assert STRICT.user(alice) == alice  # a row seen twice is not hashed twice
    assert STRICT.user("bob@example.com") != alice
    assert Privacy(pseudonym_key=b"another key......").user("alice@example.com") != alice
    assert STRICT.user(42) == STRICT.user("42")
    assert STRICT.user(None) is None
    assert STRICT.user("") == ""  # no identity to hide
    assert not is_pseudonym("u_" + "A" * 32) and not is_pseudonym("alice")


def test_the_same_person_has_the_same_id_in_every_table() -> None:
    user = "alice@example.com"
    expected = STRICT.user(user)
    attributes: dict[str, Any] = {"enduser.id": user, "client.address": "198.51.100.23"}
    request = span_to_rows(request_span(**attributes), STRICT)
    failing = failing_request_span()
    failing._attributes = {**(failing.attributes or {}), "enduser.id": user}  # same span, with a user
    errors = [row for table, row in span_to_rows(failing, STRICT) if table == "error_logs"]
    job = span_to_rows(job_span(**{c.JOB_INITIATED_BY: user}), STRICT)
    state = log_record_to_rows(
        event_log(
            c.DEVICE_STATE_EVENT, **{c.DEVICE_ID: "d1", c.DEVICE_NEW_STATE: "on", c.DEVICE_CHANGED_BY: user}
        ),
        STRICT,
    )
    activity = log_record_to_rows(event_log(c.USER_ACTIVITY_EVENT, **{"user.id": user}), STRICT)
    assert request[0][1]["user_id"] == expected
    assert request[0][1]["ip_address"] == "198.51.100.0"
    assert errors[0]["user_id"] == expected
    assert job[0][1]["initiated_by"] == expected
    assert state[0][1]["changed_by"] == expected
    assert activity[0][1]["user_id"] == expected
    system_job = span_to_rows(job_span(**{c.JOB_INITIATED_BY: "system"}), STRICT)
    assert system_job[0][1]["initiated_by"] == "system"


# --- system actors ----------------------------------------------------------------------------------------
def _initiated_by(value: str, privacy: Privacy) -> str | None:
    ((_, row),) = span_to_rows(job_span(**{c.JOB_INITIATED_BY: value}), privacy)
    return row["initiated_by"]


def _changed_by(value: str, privacy: Privacy) -> str | None:
    attributes = {c.DEVICE_ID: "d1", c.DEVICE_NEW_STATE: "on", c.DEVICE_CHANGED_BY: value}
    ((_, row),) = log_record_to_rows(event_log(c.DEVICE_STATE_EVENT, **attributes), privacy)
    return row["changed_by"]


@pytest.mark.parametrize("actor", ["system", "orchestrator", "scheduler", "agent", "Orchestrator", "SYSTEM"])
def test_system_actors_are_never_pseudonymised(actor: str) -> None:
    assert _initiated_by(actor, STRICT) == actor
    assert _changed_by(actor, STRICT) == actor


def test_anyone_else_is_a_user() -> None:
    for user in ("alice@example.com", "orchestrator-7", "agent_smith", "user123"):
        assert _initiated_by(user, STRICT) == STRICT.user(user)
        assert _changed_by(user, STRICT) == STRICT.user(user)


def test_system_actors_come_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = Settings(data_dir=tmp_path, pseudonym_key=SecretStr("x" * 16))
    assert default.system_actors == ["system", "orchestrator", "scheduler", "agent"]
    assert privacy_from_settings(default).system_actors == {"system", "orchestrator", "scheduler", "agent"}
    monkeypatch.setenv("HOMEPOT_ANALYTICS_SYSTEM_ACTORS", "system, Cron-Runner ,homepot-agent")
    settings = Settings(data_dir=tmp_path, pseudonym_key=SecretStr("x" * 16))
    assert settings.system_actors == ["system", "Cron-Runner", "homepot-agent"]
    privacy = privacy_from_settings(settings)
    assert _initiated_by("cron-runner", privacy) == "cron-runner"
    assert _changed_by("homepot-agent", privacy) == "homepot-agent"
    assert _initiated_by("orchestrator", privacy) == privacy.user("orchestrator")  # no longer listed
    assert export_privacy(settings).system_actors == privacy.system_actors


# --- from settings ------------------------------------------------------------------------------------------
def test_settings_key_is_used_and_the_policy_is_cached(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, pseudonym_key=SecretStr("a-deployment-key-0001"))
    privacy = privacy_from_settings(settings)
    assert (
        privacy_from_settings(Settings(data_dir=tmp_path, pseudonym_key=SecretStr("a-deployment-key-0001")))
        is privacy
    )
    assert privacy.user("alice") == Privacy(pseudonym_key=b"a-deployment-key-0001").user("alice")
    assert privacy.truncate_ips and privacy.mask_secrets
    assert not (tmp_path / "pseudonym.key").exists()


def test_without_a_key_one_is_generated_once_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = privacy_from_settings(settings).user("alice")
    key_file = tmp_path / "data" / "pseudonym.key"
    assert key_file.exists()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # Another process (a restart) reads the same file: the same pseudonym.
    from exporter import privacy as privacy_module

    assert Privacy(pseudonym_key=privacy_module._read_or_create_key(key_file)).user("alice") == first
    assert [p.name for p in key_file.parent.iterdir()] == ["pseudonym.key"]  # no temp files left


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    from exporter import privacy as privacy_module

    keys: list[bytes] = []
    path = tmp_path / "shared" / "pseudonym.key"
    threads = [
        threading.Thread(target=lambda: keys.append(privacy_module._read_or_create_key(path)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1


def test_an_unwritable_data_dir_still_never_stores_raw_ids(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    privacy = privacy_from_settings(Settings(data_dir=blocker / "data"))
    stored = privacy.user("alice")
    assert stored is not None and is_pseudonym(stored)


def test_switched_off_pseudonymisation_and_truncation_store_raw_values(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, pseudonymize_users=False, truncate_ips=False)
    privacy = privacy_from_settings(settings)
    assert privacy.user("alice") == "alice"
    assert privacy.ip("203.0.113.77") == "203.0.113.77"
    assert privacy.text("password=x1") == f"password={REDACTED}"  # secrets are always masked
    assert not (tmp_path / "pseudonym.key").exists()


def test_export_policy_pseudonymises_even_when_the_deployment_does_not(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, pseudonymize_users=False, truncate_ips=False)
    exported = export_privacy(settings)
    stored = exported.user("alice")
    assert stored is not None and is_pseudonym(stored)
    assert exported.ip("203.0.113.77") == "203.0.113.0"


def test_a_short_pseudonym_key_is_refused() -> None:
    with pytest.raises(ValueError, match="pseudonym_key"):
        Settings(pseudonym_key=SecretStr("short"))


def test_json_keys_naming_secrets_are_recognised() -> None:
    assert STRICT.is_secret_key("password") and STRICT.is_secret_key("X-Api-Key")
    assert STRICT.is_secret_key("refresh_token") and STRICT.is_secret_key("sessionId")
    assert not STRICT.is_secret_key("device_id") and not STRICT.is_secret_key("keyword")
    assert not PASS_THROUGH.is_secret_key("password")


def test_json_values_are_masked_by_content_and_by_key() -> None:
    value = {
        "password": "plain",
        "api-key": 7,
        "empty_token": "",
        "n": 1,
        "l": [f"Bearer {JWT}", {"secret": None}],
    }
    assert STRICT.json(value) == {
        "password": REDACTED,
        "api-key": REDACTED,
        "empty_token": "",
        "n": 1,
        "l": [f"Bearer {REDACTED}", {"secret": None}],
    }
    assert PASS_THROUGH.json(value) == value


def test_the_caching_policy_gives_what_the_plain_one_gives() -> None:
    cached = CachingPrivacy(pseudonym_key=KEY, truncate_ips=True, mask_secrets=True)
    for _ in range(2):  # the second round is answered from the caches
        # Equal keys to an untyped cache, but not the same text: each keeps its own pseudonym.
        for value in (1, 1.0, True, "1", "alice"):
            assert cached.user(value) == STRICT.user(value)
        for text, _secret in SECRETS_IN_TEXT:
            assert cached.text(text) == STRICT.text(text)
        long_text = "Traceback: password=hunter2 " + "x" * 1000  # too long to be cached: same result
        assert cached.text(long_text) == STRICT.text(long_text)
        for key in ("site", "client_secret", "api-key", "monkey"):
            assert cached.is_secret_key(key) == STRICT.is_secret_key(key)
        document = {"site": "site_12", "token": "abc", "inner": {"password": "x", "note": "Bearer abcdefgh"}}
        assert cached.json(document) == STRICT.json(document)
        assert cached.url("/a?token=1&b=2") == STRICT.url("/a?token=1&b=2")
        assert cached.ip("203.0.113.7:4711") == STRICT.ip("203.0.113.7:4711")
