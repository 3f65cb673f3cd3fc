"""The user-activity intake, end to end through the service's OpenTelemetry log path into
``user_activities`` on the real PostgreSQL; plus the pure validation rules."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import psycopg
import pytest
from fastapi.testclient import TestClient

from exporter.privacy import privacy_from_settings
from homepot_foundation.settings import Settings
from query_api.activity_events import (
    ActivityEvent,
    bearer_subject,
    event_time,
    stored_event_id,
    validate_batch,
)
from query_api.app import SERVICE_NAME, create_app
from tests.conftest import JWT_SECRET, fetch_rows

BATCH = "/api/v1/analytics/user-activities"
LEGACY = "/api/v1/analytics/user-activity"


def token(sub: str, secret: str = JWT_SECRET, **claims: Any) -> str:
    return jwt.encode({"sub": sub, **claims}, secret, algorithm="HS256")


def bearer(sub: str, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, **kwargs)}"}


@pytest.fixture(scope="module")
def service_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("intake") / "data",
        jwt_secret=JWT_SECRET,
        export_delay_ms=50,
    )


@pytest.fixture(scope="module")
def service(service_settings: Settings) -> Iterator[TestClient]:
    """One running service for the tests of this module that need no settings of their own."""
    with TestClient(create_app(service_settings)) as test_client:
        yield test_client


@pytest.fixture()
def client(service: TestClient, database_url: str) -> TestClient:
    """The shared service with nothing left in its queue and its tables empty."""
    assert service.app.state.logger_provider.force_flush(10_000)  # type: ignore[attr-defined]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM user_activities")  # the only table it writes; faster than TRUNCATE
    return service


def stored_user(settings: Settings, user_id: str) -> str | None:
    """A user id as the service's privacy policy stores it (a pseudonym, when it makes them)."""
    return privacy_from_settings(settings).user(user_id)


def stored(client: TestClient, database_url: str) -> list[dict[str, Any]]:
    """The rows, once the service's batch log processor has handed everything to the exporter."""
    assert client.app.state.logger_provider.force_flush(10_000)  # type: ignore[attr-defined]
    return fetch_rows(database_url, "user_activities", order_by="timestamp, id")


def test_batch_is_stored_with_the_user_from_the_token_not_the_body(
    client: TestClient, database_url: str, service_settings: Settings
) -> None:
    event_id = str(uuid.uuid4())
    batch = [
        {
            "activity_type": "page_view",
            "page_url": "/devices",
            "session_id": "s-1",
            "timestamp": "2030-01-01T00:00:00Z",  # in the future: clamped below
            "user_id": "mallory",  # ignored: a client cannot claim to be someone else
        },
        {
            "activity_type": "search",
            "page_url": "/devices",
            "element_id": "device-search",
            "search_query": "temperature",
            "session_id": "s-1",
            "duration_ms": 1500.4,
            "extra_data": {"results": 3, "filters": ["online"]},
            "event_id": event_id,
            "timestamp": int(time.time() * 1000) - 60_000,
        },
    ]
    before = datetime.now(UTC)
    response = client.post(BATCH, json=batch, headers=bearer("user123"))
    assert response.status_code == 202
    assert response.json() == {"accepted": 2, "rejected": []}

    rows = stored(client, database_url)
    assert [row["activity_type"] for row in rows] == ["search", "page_view"]
    search, view = rows
    assert {row["user_id"] for row in rows} == {stored_user(service_settings, "user123")}
    assert search["element_id"] == "device-search"
    assert search["search_query"] == "temperature"
    assert search["duration_ms"] == 1500
    assert search["extra_data"] == {"results": 3, "filters": ["online"]}
    assert search["session_id"] == "s-1"
    assert search["event_id"] == uuid.UUID(stored_event_id(ActivityEvent.model_validate(batch[1])))
    assert before - timedelta(seconds=62) < search["timestamp"] < before - timedelta(seconds=58)
    # The clamped page view is stored at arrival, with what the client claimed kept aside.
    assert before - timedelta(seconds=1) < view["timestamp"] < datetime.now(UTC) + timedelta(seconds=1)
    assert view["extra_data"] == {"client_timestamp": "2030-01-01T00:00:00+00:00"}
    assert view["page_url"] == "/devices" and view["element_id"] is None
    # The OpenTelemetry path stamped the service's resource on the records.
    assert {row["service_name"] for row in rows} == {SERVICE_NAME}


def test_invalid_events_are_reported_by_index_and_the_rest_stored(
    client: TestClient, database_url: str
) -> None:
    batch: list[Any] = [
        {"activity_type": "click", "element_id": "add-device-button"},
        {"page_url": "/x"},
        "not an object",
        {"activity_type": "click", "duration_ms": -5},
        {"activity_type": "click", "extra_data": [1, 2]},
        {"activity_type": "has spaces"},
        {"activity_type": "click", "timestamp": "yesterday"},
        {"activity_type": "form_submit", "element_id": 42},
    ]
    response = client.post(BATCH, json=batch)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    errors = {item["index"]: item["error"] for item in body["rejected"]}
    assert sorted(errors) == [1, 2, 3, 4, 5, 6]
    assert errors[1].startswith("activity_type: Field required")
    assert errors[2] == "an event must be a JSON object, not str"
    assert errors[3].startswith("duration_ms: Input should be greater than or equal to 0")
    assert errors[4].startswith("extra_data: Input should be a valid dictionary")
    assert errors[5].startswith("activity_type: String should match pattern")
    assert errors[6].startswith("timestamp:")

    rows = stored(client, database_url)
    assert sorted((row["activity_type"], row["element_id"]) for row in rows) == [
        ("click", "add-device-button"),
        ("form_submit", "42"),
    ]
    assert all(row["user_id"] is None for row in rows)  # no token: anonymous


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        (bearer("user123", secret="another-secret-that-is-long-enough-for-hs256"), "wrong signature"),
        (bearer("user123", exp=int(time.time()) - 60), "expired"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "not a bearer token"),
        ({"Authorization": "Bearer not-a-jwt"}, "garbage"),
    ],
)
def test_a_token_that_does_not_verify_leaves_the_event_anonymous(
    client: TestClient, database_url: str, headers: dict[str, str], why: str
) -> None:
    response = client.post(BATCH, json=[{"activity_type": "page_view"}], headers=headers)
    assert response.status_code == 202, why
    assert [row["user_id"] for row in stored(client, database_url)] == [None], why


def test_without_a_configured_secret_no_token_is_believed(settings: Settings, db_url: str) -> None:
    with TestClient(create_app(settings.model_copy(update={"jwt_secret": None}))) as client:
        assert (
            client.post(BATCH, json=[{"activity_type": "click"}], headers=bearer("user123")).status_code
            == 202
        )
        assert [row["user_id"] for row in stored(client, db_url)] == [None]


def test_a_resent_event_is_stored_once_whoever_resends_it(
    client: TestClient, database_url: str, service_settings: Settings
) -> None:
    """Its identity is the browser's (session and event ids): a retry after a lost answer, or
    after the token changed, stores nothing new; the first arrival's user stays."""
    event = {
        "activity_type": "click",
        "event_id": str(uuid.uuid4()),
        "session_id": "s-9",
        "timestamp": int(time.time() * 1000),
    }
    for _ in range(2):
        assert client.post(BATCH, json=[event], headers=bearer("alice")).status_code == 202
    assert client.post(BATCH, json=[event], headers=bearer("bob")).status_code == 202
    (row,) = stored(client, database_url)
    assert row["user_id"] == stored_user(service_settings, "alice")


def test_text_plain_beacon_bodies_are_accepted(client: TestClient, database_url: str) -> None:
    body = json.dumps([{"activity_type": "page_leave", "page_url": "/a", "duration_ms": 12000}])
    response = client.post(BATCH, content=body, headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert response.status_code == 202
    assert [(row["activity_type"], row["duration_ms"]) for row in stored(client, database_url)] == [
        ("page_leave", 12000)
    ]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"[{", 400, "body is not valid JSON"),
        (b"", 400, "empty body"),
        (b"\xff\xfe\x00", 400, "body is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "body is not valid JSON"),
        (b'{"activity_type": "click"}', 422, "body must be a JSON array of events"),
    ],
)
def test_bodies_that_are_not_a_batch_are_refused_clearly(
    client: TestClient, database_url: str, body: bytes, status: int, message: str
) -> None:
    response = client.post(BATCH, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert response.json()["detail"].startswith(message)
    assert stored(client, database_url) == []


def test_size_and_length_limits_answer_413(settings: Settings, db_url: str) -> None:
    limited = settings.model_copy(update={"intake_max_body_bytes": 2048, "intake_max_batch": 3})
    with TestClient(create_app(limited)) as client:
        big = [{"activity_type": "click", "extra_data": {"blob": "x" * 4000}}]
        response = client.post(BATCH, json=big)
        assert response.status_code == 413 and "2048 bytes" in response.json()["detail"]
        # Without a Content-Length (chunked), the limit holds while reading.
        chunked = client.post(BATCH, content=iter([json.dumps(big).encode()[:1500]] * 2))
        assert chunked.status_code == 413
        too_many = client.post(BATCH, json=[{"activity_type": "click"}] * 4)
        assert too_many.status_code == 413
        assert too_many.json()["detail"] == "batch of 4 events; at most 3 per request"
        assert client.post(BATCH, json=[{"activity_type": "click"}] * 3).json()["accepted"] == 3
        assert client.post(LEGACY, json=big[0]).status_code == 413
        assert len(stored(client, db_url)) == 3


def test_legacy_single_event_endpoint_keeps_working(
    client: TestClient, database_url: str, service_settings: Settings
) -> None:
    # The body the existing HOMEPOT frontend posts, one request per event.
    body = {
        "activity_type": "device_added",
        "page_url": "/devices",
        "element_id": "add-device-button",
        "search_query": None,
        "extra_data": {"device_type": "pos_terminal"},
        "duration_ms": 250,
    }
    response = client.post(LEGACY, json=body, headers=bearer("user@example.com"))
    assert response.status_code == 201
    assert response.json() == {"success": True, "message": "Activity logged"}
    # Older clients call it "metadata".
    assert (
        client.post(LEGACY, json={"activity_type": "modal_open", "metadata": {"modal": "x"}}).status_code
        == 201
    )

    rows = stored(client, database_url)
    assert [(row["activity_type"], row["user_id"], row["extra_data"]) for row in rows] == [
        ("device_added", stored_user(service_settings, "user@example.com"), {"device_type": "pos_terminal"}),
        ("modal_open", None, {"modal": "x"}),
    ]
    assert rows[0]["duration_ms"] == 250 and rows[0]["session_id"] is None


def test_legacy_endpoint_refuses_an_invalid_event(client: TestClient, database_url: str) -> None:
    response = client.post(LEGACY, json={"page_url": "/devices"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("activity_type: Field required")
    assert client.post(LEGACY, json=[{"activity_type": "click"}]).status_code == 422
    assert client.post(LEGACY, content=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    assert stored(client, database_url) == []


def test_cors_allows_only_the_configured_origins(settings: Settings) -> None:
    allowed = "http://frontend.localhost:3000"
    with TestClient(create_app(settings.model_copy(update={"cors_origins": [allowed]}))) as client:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        }
        ok = client.options(BATCH, headers={"Origin": allowed, **preflight})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == allowed
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        refused = client.options(BATCH, headers={"Origin": "http://evil.localhost", **preflight})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        posted = client.post(BATCH, json=[{"activity_type": "click"}], headers={"Origin": allowed})
        assert posted.headers["access-control-allow-origin"] == allowed
    with TestClient(create_app(settings)) as client:  # none configured: no CORS headers at all
        response = client.post(BATCH, json=[], headers={"Origin": allowed})
        assert response.status_code == 202 and "access-control-allow-origin" not in response.headers


# --- the pure rules ------------------------------------------------------------------------------
def test_bearer_subject_needs_a_valid_signature() -> None:
    assert bearer_subject(f"Bearer {token('u1')}", JWT_SECRET) == "u1"
    assert bearer_subject(f"bearer  {token('u1')} ", JWT_SECRET) == "u1"
    assert bearer_subject(f"Bearer {token('u1')}", None) is None
    assert bearer_subject(None, JWT_SECRET) is None
    assert bearer_subject("Bearer ", JWT_SECRET) is None
    unsigned = jwt.encode({"sub": "admin"}, key=None, algorithm="none")
    assert bearer_subject(f"Bearer {unsigned}", JWT_SECRET) is None
    no_sub = jwt.encode({"name": "x"}, JWT_SECRET, algorithm="HS256")
    assert bearer_subject(f"Bearer {no_sub}", JWT_SECRET) is None


def test_event_time_clamps_only_the_absurd() -> None:
    now = datetime(2025, 12, 5, 14, 45, tzinfo=UTC)

    def at(value: object) -> tuple[datetime, bool]:
        return event_time(ActivityEvent.model_validate({"activity_type": "x", "timestamp": value}), now)

    assert at(None) == (now, False)
    assert at("2025-12-05T14:44:00") == (datetime(2025, 12, 5, 14, 44, tzinfo=UTC), False)  # naive = UTC
    assert at(int((now - timedelta(days=2)).timestamp() * 1000)) == (now - timedelta(days=2), False)
    assert at("2025-12-05T14:49:00+00:00") == (datetime(2025, 12, 5, 14, 49, tzinfo=UTC), False)
    assert at("2025-12-05T14:51:00+00:00") == (now, True)  # more than 5 minutes ahead
    assert at(0) == (now, True)  # 1970
    assert at(10**30) == (now, True)  # beyond any calendar
    assert at((now - timedelta(days=8)).isoformat()) == (now, True)


def test_stored_event_id_depends_on_the_event_never_on_its_sender() -> None:
    event_id = str(uuid.uuid4())
    event = ActivityEvent.model_validate({"activity_type": "x", "event_id": event_id, "session_id": "s"})
    other_session = ActivityEvent.model_validate(
        {"activity_type": "x", "event_id": event_id, "session_id": "t"}
    )
    assert stored_event_id(event) == stored_event_id(ActivityEvent.model_validate(event.model_dump()))
    assert stored_event_id(event) != stored_event_id(other_session)
    assert stored_event_id(ActivityEvent.model_validate({"activity_type": "x"})) is None


def test_an_event_resent_with_and_without_a_token_is_stored_once(
    client: TestClient, database_url: str
) -> None:
    event = {
        "activity_type": "click",
        "event_id": str(uuid.uuid4()),
        "session_id": "s-1",
        "element_id": "save",
        "timestamp": int(time.time() * 1000),  # the tracker always sends it: part of the row key
    }
    assert client.post(BATCH, json=[event], headers=bearer("alice")).status_code == 202
    assert client.post(BATCH, json=[event]).status_code == 202  # the token expired meanwhile
    assert client.post(BATCH, json=[event], headers=bearer("alice")).status_code == 202
    assert len(stored(client, database_url)) == 1


def test_validate_batch_ignores_unknown_keys_and_user_id() -> None:
    events, rejected = validate_batch([{"activity_type": "click", "user_id": "mallory", "colour": "red"}])
    assert rejected == [] and "user_id" not in events[0].model_dump()


# --- the session cookie, as HOMEPOT's frontend sends it (axios withCredentials) ------------------

USER_SECRET = "homepot-app-SECRET_KEY-of-enough-length"


@pytest.fixture(scope="module")
def cookie_service(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("cookie") / "data",
        jwt_secret=JWT_SECRET,
        user_token_secret=USER_SECRET,
        cors_origins=["https://app.homepot.example"],
        export_delay_ms=50,
    )
    with TestClient(create_app(settings), base_url="https://analytics.example") as test_client:
        yield test_client


def test_the_cookie_user_is_verified_with_the_host_apps_secret(
    cookie_service: TestClient, database_url: str
) -> None:
    client = cookie_service
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM user_activities")
    for name, cookie_token in (
        ("homepot", token("operator@homepot", USER_SECRET)),
        ("admin-secret", token("mallory", JWT_SECRET)),  # signed with the admin secret: not a user token
        ("garbage", "not-a-jwt"),
    ):
        client.cookies.set("access_token", cookie_token)
        assert (
            client.post(LEGACY, json={"activity_type": "page_view", "page_url": f"/{name}"}).status_code
            == 201
        )
    client.cookies.clear()
    # The bearer header second, checked with the same secret.
    headers = {"Authorization": f"Bearer {token('api-user', USER_SECRET)}"}
    assert (
        client.post(
            LEGACY, json={"activity_type": "page_view", "page_url": "/bearer"}, headers=headers
        ).status_code
        == 201
    )
    assert client.app.state.logger_provider.force_flush(10_000)  # type: ignore[attr-defined]
    users = {row["page_url"]: row["user_id"] for row in fetch_rows(database_url, "user_activities")}
    policy = privacy_from_settings(client.app.state.settings)  # type: ignore[attr-defined]
    assert users == {
        "/homepot": policy.user("operator@homepot"),
        "/admin-secret": None,
        "/garbage": None,
        "/bearer": policy.user("api-user"),
    }
    assert users["/homepot"] != "operator@homepot"  # pseudonymised like every user id


def test_cors_allows_credentials_on_the_intake_only(cookie_service: TestClient) -> None:
    origin = "https://app.homepot.example"
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    for path in (BATCH, LEGACY, "/api/v1/analytics/error"):
        answer = cookie_service.options(path, headers=preflight)
        assert answer.status_code == 200, path
        assert answer.headers["access-control-allow-origin"] == origin
        assert answer.headers["access-control-allow-credentials"] == "true"
    query = cookie_service.options(
        "/api/v1/analytics/api-requests", headers={**preflight, "Access-Control-Request-Method": "GET"}
    )
    assert query.headers["access-control-allow-origin"] == origin
    assert "access-control-allow-credentials" not in query.headers
    stranger = cookie_service.options(BATCH, headers={**preflight, "Origin": "https://evil.example"})
    assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers


def test_a_wildcard_origin_never_allows_credentials(database_url: str, tmp_path: Any) -> None:
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data", cors_origins=["*"])
    with TestClient(create_app(settings)) as client:
        answer = client.options(
            BATCH, headers={"Origin": "https://any.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-credentials" not in answer.headers
        posted = client.post(
            LEGACY, json={"activity_type": "x"}, headers={"Origin": "https://any.example", "Cookie": "a=b"}
        )
        assert posted.status_code == 201
        assert "access-control-allow-credentials" not in posted.headers
        assert posted.headers["access-control-allow-origin"] == "*"


# --- POST /api/v1/analytics/error (HOMEPOT's trackError) ---------------------------------------


def test_frontend_errors_are_stored_as_homepot_sent_them(
    cookie_service: TestClient, database_url: str
) -> None:
    client = cookie_service
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM error_logs")
    client.cookies.set("access_token", token("operator@homepot", USER_SECRET))
    # Both shapes HOMEPOT's frontend has used: message + extra_data, error_message + context.
    first = client.post(
        "/api/v1/analytics/error",
        json={
            "category": "api_error",
            "severity": "error",
            "message": "Failed to load devices",
            "extra_data": {"page_url": "https://app.homepot.example/devices?page=2"},
        },
    )
    second = client.post(
        "/api/v1/analytics/error",
        json={
            "category": "client_error",
            "severity": "warning",
            "error_message": "password=hunter2 rejected",
            "context": {"page_url": "/login"},
        },
    )
    assert (first.status_code, first.json()) == (201, {"success": True, "message": "Error logged"})
    assert second.status_code == 201
    client.cookies.clear()
    assert client.app.state.logger_provider.force_flush(10_000)  # type: ignore[attr-defined]
    rows = {row["endpoint"]: row for row in fetch_rows(database_url, "error_logs")}
    policy = privacy_from_settings(client.app.state.settings)  # type: ignore[attr-defined]
    devices, login = rows["/devices"], rows["/login"]
    assert (devices["category"], devices["severity"], devices["error_message"]) == (
        "api",
        "error",
        "Failed to load devices",
    )
    assert devices["user_id"] == policy.user("operator@homepot")
    assert devices["context"]["page_url"].startswith("https://app.homepot.example/devices")
    assert (login["category"], login["severity"]) == ("frontend", "warning")
    assert "hunter2" not in login["error_message"]  # free text is masked like everywhere


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"category": "cosmic_rays", "message": "x"}, "unknown category"),
        ({"category": "api", "severity": "apocalyptic", "message": "x"}, "unknown severity"),
        ({"category": "api"}, "message"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_a_bad_frontend_error_answers_422_saying_what_to_fix(
    cookie_service: TestClient, body: Any, complaint: str
) -> None:
    answer = cookie_service.post("/api/v1/analytics/error", json=body)
    assert answer.status_code == 422
    assert complaint in answer.json()["detail"]
