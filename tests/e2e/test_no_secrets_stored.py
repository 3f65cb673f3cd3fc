"""No secrets stored: a corpus of secrets sent through every way into the tables (an instrumented
service's requests, exceptions, jobs, device states, errors and activity; the service's activity
intake and OTLP sink) is found nowhere in the database, and users and IPs arrive pseudonymous.

And nothing else masked: a precision corpus of ordinary HOMEPOT values that look a little like
secrets (``config_key``, ``collapse_key``, ``device_key_id``, "password: Field required") and its
vocabulary (job status "completed", actor "orchestrator") is stored as HOMEPOT sent it."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from exporter.privacy import privacy_from_settings
from exporter.schema import TABLES
from homepot_foundation.settings import Settings
from instrumentation import job_span, record_device_state, record_error, record_user_activity, setup_telemetry
from query_api.app import create_app
from tests.conftest import JWT_SECRET
from tests.support.throwaway import empty_tables

USER = "alice@example.com"
CLIENT_IP = "203.0.113.77"

PASSWORD = "Hunter2-correct-horse"
DB_PASSWORD = "Db-pass-9931x"
BEARER = "opaque-bearer-7f3a9c21e8d4"
APP_JWT = jwt.encode({"sub": "svc", "scope": "devices"}, "the-app-own-secret-0123456789abcdef", "HS256")
# The caller's credentials: the service's own JWT names the user (its sub), nothing else of it stays.
HEADER_JWT = jwt.encode({"sub": USER, "role": "operator"}, "the-app-own-secret-0123456789abcdef", "HS256")
STRIPE = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
GITHUB = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
AWS = "AKIAIOSFODNN7EXAMPLE"
BASIC = base64.b64encode(b"admin:Basic-pw-441").decode()
QUERY_TOKEN = "qtok-77123abcXYZ"
SESSION = "sess-55aa11bbCC"
COOKIE = "cookie-secret-8812QQ"
HEADER_KEY = "hdr-key-4411ZZ"
BODY_SECRET = "body-secret-66AAbb"
URL_TOKEN = "urltok-90zzQQ81"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7secretbody\n-----END RSA PRIVATE KEY-----"
PEM_BODY = "MIIEowIBAAKCAQEA7secretbody"
# Credentials written as prose after a credential word (no "=" or ":").
PROSE_TOKEN = "9f2c7a1be3d4e5"
PROSE_API_KEY = "ak-prose-5521xyz"
PROSE_PASSWORD = "Prose-pw-7731"
CORPUS = [
    PASSWORD,
    DB_PASSWORD,
    BEARER,
    APP_JWT,
    HEADER_JWT,
    STRIPE,
    GITHUB,
    AWS,
    BASIC,
    QUERY_TOKEN,
    SESSION,
    COOKIE,
    HEADER_KEY,
    BODY_SECRET,
    URL_TOKEN,
    PEM_BODY,
    PROSE_TOKEN,
    PROSE_API_KEY,
    PROSE_PASSWORD,
]
CONNECTION = f"postgresql://app:{DB_PASSWORD}@db.internal:5432/homepot"


@pytest.fixture()
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The conftest's settings, on tables emptied with DELETE (TRUNCATE of every partition is slow)."""
    empty_tables(database_url)
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", jwt_secret=JWT_SECRET, export_delay_ms=50
    )


def stored_text(url: str) -> str:
    """Every row of every table, as JSON text."""
    with psycopg.connect(url) as conn:
        return "\n".join(
            text
            for table in TABLES
            for (text,) in conn.execute(f"SELECT row_to_json(t)::text FROM {table} t")
        )


def row_count(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in TABLES
        }


def assert_no_secret(text: str) -> None:
    leaked = [secret for secret in CORPUS if secret in text or json.dumps(secret)[1:-1] in text]
    assert leaked == [], f"secrets stored: {leaked}"


# --- an instrumented service ------------------------------------------------------------------------------
def instrumented_app(settings: Settings) -> FastAPI:
    app = FastAPI()
    setup_telemetry(app, service_name="secrets-e2e", settings=settings)

    @app.get("/api/v1/devices")
    def devices() -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/api/v1/login")
    async def login(request: Request) -> None:
        body = await request.json()
        raise HTTPException(401, f"invalid credentials: password={body['password']}")

    @app.get("/api/v1/crash")
    def crash() -> None:
        raise RuntimeError(f"cannot reach {CONNECTION} with Authorization: Bearer {BEARER}")

    @app.post("/api/v1/jobs")
    def run_job() -> dict[str, str]:
        try:
            with job_span(
                "job-1", "config_change", device_id="dev_001", initiated_by=USER, token_note=APP_JWT
            ):
                raise ValueError(f"config push failed: api_key={STRIPE} ({AWS})")
        except ValueError:
            pass
        record_device_state(
            "dev_001",
            "online",
            "maintenance",
            changed_by=USER,
            reason=f"rotated {GITHUB}, invalid token {PROSE_TOKEN}",
            cache=CONNECTION,
        )
        logging.getLogger("homepot_app").error("api key %s rejected", PROSE_API_KEY)
        record_error(
            "database", "error", "E_DB", f"login with password={PASSWORD} failed", user_id=USER, key=PEM
        )
        record_user_activity(
            "search",
            user_id=USER,
            page_url=f"/search?q=x&access_token={QUERY_TOKEN}&session={SESSION}",
            search_query=f"Basic {BASIC} password {PROSE_PASSWORD}",
            note=f"Bearer {BEARER}",
        )
        return {"ok": "yes"}

    return app


def drive_instrumented_app(settings: Settings) -> None:
    headers = {
        "Authorization": f"Bearer {HEADER_JWT}",
        "Cookie": f"session={COOKIE}",
        "X-API-Key": HEADER_KEY,
    }
    app = instrumented_app(settings)
    with TestClient(app, client=(CLIENT_IP, 50000), raise_server_exceptions=False) as client:
        assert client.get(f"/api/v1/devices?token={URL_TOKEN}&password={PASSWORD}&page=2", headers=headers)
        assert client.post(
            "/api/v1/login", json={"user": USER, "password": PASSWORD, "pin": BODY_SECRET}, headers=headers
        )
        assert client.get("/api/v1/crash", headers=headers).status_code == 500
        assert client.post("/api/v1/jobs", headers=headers).status_code == 200
    # Leaving the client ran the app's shutdown: everything recorded is written. The process goes
    # on (the next test): shut the pipeline down as exit would, so it records no other app.
    app.state.homepot_telemetry.shutdown()


def test_request_headers_and_bodies_are_never_stored(settings: Settings) -> None:
    drive_instrumented_app(settings)
    counts = row_count(settings.database_url or "")
    assert counts["api_request_logs"] == 4
    text = stored_text(settings.database_url or "")
    for secret in (COOKIE, HEADER_KEY, HEADER_JWT, BODY_SECRET, URL_TOKEN):  # headers, body, query
        assert secret not in text


def test_an_instrumented_service_stores_no_secrets_and_only_pseudonyms(settings: Settings) -> None:
    drive_instrumented_app(settings)
    url = settings.database_url or ""
    counts = row_count(url)
    assert counts["api_request_logs"] == 4 and all(counts[table] >= 1 for table in TABLES), counts
    text = stored_text(url)
    assert_no_secret(text)
    assert USER not in text and CLIENT_IP not in text
    pseudonym = privacy_from_settings(settings).user(USER)
    with psycopg.connect(url) as conn:
        users = {
            value
            for table, column in (
                ("api_request_logs", "user_id"),
                ("error_logs", "user_id"),
                ("job_outcomes", "initiated_by"),
                ("device_state_history", "changed_by"),
                ("user_activities", "user_id"),
            )
            for (value,) in conn.execute(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL")
        }
        ips = {ip for (ip,) in conn.execute("SELECT DISTINCT ip_address FROM api_request_logs")}
    assert users == {pseudonym}
    assert ips == {"203.0.113.0"}


# --- the precision corpus: HOMEPOT's ordinary values survive -----------------------------------------------
# Context keys HOMEPOT sends, with values that must be kept (they are what the AI team asked for).
ORDINARY_CONTEXT = {
    "config_key": "display.brightness",
    "collapse_key": "firmware_update",
    "device_key_id": "dk_0042",
    "sort_key": "created_at",
    "key_id": "k-17",
    "session_count": 3,
}
VALIDATION_MESSAGE = "password: Field required"


class Login(BaseModel):
    username: str
    password: str


def homepot_like_app(settings: Settings) -> FastAPI:
    app = FastAPI()
    setup_telemetry(app, service_name="precision-e2e", settings=settings)

    @app.post("/api/v1/auth/login")
    def login(body: Login) -> dict[str, str]:
        return {"ok": body.username}

    @app.post("/api/v1/jobs")
    def run_job() -> dict[str, str]:
        with job_span("job-7", "config_change", device_id="dev_001", initiated_by="orchestrator") as job:
            job.extra_data.update(ORDINARY_CONTEXT)
            job.status = "completed"  # HOMEPOT's word for success
        with job_span("job-8", "health_check", initiated_by="agent") as job:
            job.status = "pending"  # unknown: kept as given
        record_device_state(
            "dev_001",
            "online",
            "updating",
            changed_by="scheduler",
            reason=VALIDATION_MESSAGE,
            **ORDINARY_CONTEXT,
        )
        record_error(
            "validation",
            "warning",
            "E_VALIDATION",
            VALIDATION_MESSAGE,
            user_id=USER,
            errors={"password": "Field required"},
            note=f"login with password={PASSWORD} failed",  # a secret beside them: still masked
            **ORDINARY_CONTEXT,
        )
        record_user_activity(
            "form_submit",
            user_id=USER,
            page_url="/devices?sort_key=name&key=abc123",
            extra_data=ORDINARY_CONTEXT,
        )
        return {"ok": "yes"}

    return app


def test_homepot_values_and_vocabulary_are_stored_unmasked(settings: Settings) -> None:
    app = homepot_like_app(settings)
    with TestClient(app, client=(CLIENT_IP, 50000)) as client:
        assert client.post("/api/v1/auth/login", json={"username": "bob"}).status_code == 422
        assert client.post("/api/v1/jobs").status_code == 200
    app.state.homepot_telemetry.shutdown()
    url = settings.database_url or ""
    text = stored_text(url)
    assert_no_secret(text)
    assert "[REDACTED]" in text  # the password beside them
    with psycopg.connect(url) as conn:
        (login_error,) = conn.execute(
            "SELECT error_message FROM api_request_logs WHERE status_code = 422"
        ).fetchone()  # type: ignore[misc]
        jobs = {
            job_id: (status, initiated_by, extra)
            for job_id, status, initiated_by, extra in conn.execute(
                "SELECT job_id, status, initiated_by, extra_data FROM job_outcomes"
            )
        }
        state = conn.execute("SELECT changed_by, reason, extra_data FROM device_state_history").fetchone()
        error = conn.execute(
            "SELECT error_message, context FROM error_logs WHERE category = 'validation'"
        ).fetchone()
        activity = conn.execute("SELECT page_url, extra_data FROM user_activities").fetchone()
    assert login_error == "body.password: Field required"
    assert jobs["job-7"] == ("success", "orchestrator", ORDINARY_CONTEXT)
    assert jobs["job-8"][:2] == ("pending", "agent")
    assert state == ("scheduler", VALIDATION_MESSAGE, ORDINARY_CONTEXT)
    assert error is not None and error[0] == VALIDATION_MESSAGE
    assert error[1]["errors"] == {"password": "Field required"}
    assert {key: error[1][key] for key in ORDINARY_CONTEXT} == ORDINARY_CONTEXT
    assert error[1]["note"] == "login with password=[REDACTED] failed"
    assert activity == ("/devices?sort_key=name", ORDINARY_CONTEXT)


# --- the analytics service: activity intake and OTLP sink --------------------------------------------------
@pytest.fixture()
def service(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), client=(CLIENT_IP, 50000)) as client:
        yield client


def flush(client: TestClient) -> None:
    assert client.app.state.logger_provider.force_flush(10_000)  # type: ignore[attr-defined]


def _attr(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def otlp_traces(trace_id: str) -> dict[str, Any]:
    span = {
        "traceId": trace_id,
        "spanId": "eee19b7ec3c1b174",
        "name": "POST /api/orders",
        "kind": 2,
        "startTimeUnixNano": "1764942323000000000",
        "endTimeUnixNano": "1764942323050000000",
        "attributes": [
            _attr("http.request.method", "POST"),
            _attr("url.full", f"https://shop.internal/api/orders?password={PASSWORD}&id=7"),
            {"key": "http.response.status_code", "value": {"intValue": "500"}},
            _attr("enduser.id", USER),
            _attr("client.address", CLIENT_IP),
        ],
        "events": [
            {
                "timeUnixNano": "1764942323040000000",
                "name": "exception",
                "attributes": [
                    _attr("exception.type", "ConnectionError"),
                    _attr("exception.message", f"cannot reach {CONNECTION}"),
                    _attr(
                        "exception.stacktrace", f"ConnectionError: token {APP_JWT}\n  at connect (db.js:1)"
                    ),
                ],
            }
        ],
        "status": {"code": 2},
    }
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr("service.name", "checkout-node")]},
                "scopeSpans": [{"scope": {"name": "manual"}, "spans": [span]}],
            }
        ]
    }


def otlp_logs(extra: dict[str, Any]) -> dict[str, Any]:
    record = {
        "timeUnixNano": "1764942323100000000",
        "severityNumber": 17,
        "body": {"stringValue": f"payment failed with {STRIPE}"},
        "eventName": "homepot.error",
        "attributes": [
            _attr("homepot.event_id", str(uuid.uuid4())),
            _attr("exception.message", f"gateway refused key {AWS} / {GITHUB}"),
            _attr("user.id", USER),
            _attr("homepot.extra", json.dumps(extra)),
        ],
    }
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [_attr("service.name", "payments-java")]},
                "scopeLogs": [{"scope": {"name": "logback"}, "logRecords": [record]}],
            }
        ]
    }


def activity_batch(extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "activity_type": "search",
            "page_url": f"/devices?token={QUERY_TOKEN}&session={SESSION}&tab=all",
            "search_query": f"api_key={STRIPE}",
            "session_id": "s-1",
            "extra_data": extra,
        }
    ]


def test_the_intake_and_the_otlp_sink_store_no_secrets_and_only_pseudonyms(
    service: TestClient, settings: Settings
) -> None:
    extra = {"auth": f"Bearer {BEARER}", "jwt": APP_JWT, "dsn": CONNECTION, "nested": [{"pem": PEM}]}
    user_token = jwt.encode({"sub": USER}, JWT_SECRET, algorithm="HS256")
    accepted = service.post(
        "/api/v1/analytics/user-activities",
        json=activity_batch(extra),
        headers={"Authorization": f"Bearer {user_token}"},
    )
    assert accepted.status_code == 202, accepted.text
    assert service.post("/v1/traces", json=otlp_traces(uuid.uuid4().hex)).status_code == 200
    assert service.post("/v1/logs", json=otlp_logs(extra)).status_code == 200
    flush(service)
    url = settings.database_url or ""
    counts = row_count(url)
    assert counts["user_activities"] == 1 and counts["api_request_logs"] == 1 and counts["error_logs"] == 2
    text = stored_text(url)
    assert_no_secret(text)
    assert USER not in text and CLIENT_IP not in text
    pseudonym = privacy_from_settings(settings).user(USER)
    with psycopg.connect(url) as conn:
        page_url, activity_user = conn.execute("SELECT page_url, user_id FROM user_activities").fetchone()  # type: ignore[misc]
        request = conn.execute("SELECT endpoint, user_id, ip_address FROM api_request_logs").fetchone()
    assert page_url == "/devices?tab=all"
    assert activity_user == pseudonym
    assert request == ("/api/orders", pseudonym, "203.0.113.0")


def test_plain_values_under_secret_named_json_keys_are_masked(
    service: TestClient, settings: Settings
) -> None:
    extra = {"password": PASSWORD, "api_token": "plain-token-value-1", "client_secret": DB_PASSWORD}
    user_token = jwt.encode({"sub": USER}, JWT_SECRET, algorithm="HS256")
    response = service.post(
        "/api/v1/analytics/user-activities",
        json=activity_batch(extra),
        headers={"Authorization": f"Bearer {user_token}"},
    )
    assert response.status_code == 202
    assert service.post("/v1/logs", json=otlp_logs(extra)).status_code == 200
    flush(service)
    text = stored_text(settings.database_url or "")
    assert PASSWORD not in text and DB_PASSWORD not in text and "plain-token-value-1" not in text
