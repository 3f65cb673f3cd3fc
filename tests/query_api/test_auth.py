"""Only admins read analytics: 401 without a valid token, 403 for non-admins, 503 without a secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient

from homepot_foundation.settings import Settings
from query_api.app import create_app
from query_api.auth import MissingSecretError, issue_token
from tests.conftest import JWT_SECRET
from tests.query_api.conftest import PREFIX, bearer

_FINGERPRINT = "f" * 32
# Every GET and PATCH of the query API, with a path that reaches it.
ENDPOINTS = [
    ("GET", f"{PREFIX}/{name}{suffix}")
    for name in ("requests", "device-states", "jobs", "errors", "user-activities")
    for suffix in ("", "/summary", "/timeseries")
] + [
    ("PATCH", f"{PREFIX}/errors/1"),
    # What the dashboard reads beside those.
    ("GET", f"{PREFIX}/errors/groups/{_FINGERPRINT}"),
    ("PATCH", f"{PREFIX}/errors/groups/{_FINGERPRINT}"),
    ("GET", f"{PREFIX}/jobs/failing-devices"),
    ("GET", f"{PREFIX}/user-activities/sessions"),
    ("GET", f"{PREFIX}/user-activities/click-targets"),
]


def _call(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    body = {"resolved": True} if method == "PATCH" else None
    return client.request(method, path, headers=headers, json=body).status_code


def _token(claims: dict[str, object], secret: str = JWT_SECRET, algorithm: str = "HS256") -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm=algorithm)}"}


def _in(seconds: int) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_every_query_route_is_listed_here(shared: TestClient) -> None:
    """A new analytics route must be added to ENDPOINTS, so the auth tests below cover it."""
    routes = {
        (method.upper(), path)
        for path, operations in shared.get("/openapi.json").json()["paths"].items()
        if path.startswith(PREFIX)
        for method in operations
        if method != "post"  # POST is the frontend intake, authenticated on its own
    }
    listed = {
        (method, path.replace("/errors/1", "/errors/{error_id}").replace(_FINGERPRINT, "{fingerprint}"))
        for method, path in ENDPOINTS
    }
    assert routes == listed


def test_health_is_open(shared: TestClient) -> None:
    assert shared.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_no_token_is_401_with_bearer_challenge(shared: TestClient, method: str, path: str) -> None:
    response = shared.request(method, path, json={"resolved": True} if method == "PATCH" else None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Bearer" in response.json()["detail"]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_non_admin_is_403(shared: TestClient, shared_settings: Settings, method: str, path: str) -> None:
    assert _call(shared, method, path, bearer(shared_settings, role="viewer")) == 403


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("expired", _token({"sub": "a", "role": "admin", "exp": _in(-5)})),
        ("forged", _token({"sub": "a", "role": "admin", "exp": _in(600)}, secret="another-secret-" * 3)),
        ("no expiry", _token({"sub": "a", "role": "admin"})),
        ("other algorithm", _token({"sub": "a", "role": "admin", "exp": _in(600)}, algorithm="HS512")),
        ("alg none", {"Authorization": "Bearer " + jwt.encode({"role": "admin"}, None, algorithm="none")}),
        ("garbage", {"Authorization": "Bearer not.a.jwt"}),
        ("basic scheme", {"Authorization": "Basic YWRtaW46YWRtaW4="}),
    ],
)
def test_invalid_tokens_are_401(shared: TestClient, name: str, headers: dict[str, str]) -> None:
    response = shared.get(f"{PREFIX}/requests", headers=headers)
    assert response.status_code == 401, name
    assert response.headers["www-authenticate"] == "Bearer"


def test_expired_token_says_so(shared: TestClient, shared_settings: Settings) -> None:
    response = shared.get(f"{PREFIX}/jobs", headers=bearer(shared_settings, expires_in=-10))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


@pytest.mark.parametrize(
    "claims",
    [
        {"role": "admin"},
        {"roles": ["viewer", "admin"]},
        {"roles": "admin"},
        {"role": "viewer", "roles": ["admin"]},
    ],
)
def test_admin_by_role_or_roles(shared: TestClient, claims: dict[str, object]) -> None:
    headers = _token({"sub": "a", "exp": _in(600), **claims})
    assert shared.get(f"{PREFIX}/requests", headers=headers).status_code == 200


@pytest.mark.parametrize("claims", [{"roles": ["viewer"]}, {"role": "Admin"}, {"roles": {"admin": True}}, {}])
def test_non_admin_claims_are_403(shared: TestClient, claims: dict[str, object]) -> None:
    headers = _token({"sub": "a", "exp": _in(600), **claims})
    assert shared.get(f"{PREFIX}/requests", headers=headers).status_code == 403


def test_issued_token_carries_subject_role_and_expiry(shared_settings: Settings) -> None:
    token = issue_token(shared_settings, subject="ai-job", role="admin", expires_in=120)
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "ai-job"
    assert claims["role"] == "admin"
    assert 110 <= claims["exp"] - datetime.now(UTC).timestamp() <= 121


def test_without_secret_every_endpoint_refuses_and_says_what_to_set(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=database_url, data_dir=tmp_path, jwt_secret=None)
    with pytest.raises(MissingSecretError, match="HOMEPOT_ANALYTICS_JWT_SECRET"):
        issue_token(settings, subject="a", role="admin", expires_in=60)
    forged = _token(
        {"sub": "a", "role": "admin", "exp": _in(600)}, secret="some-secret-of-a-reasonable-length-xx"
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        for method, path in ENDPOINTS:
            response = client.request(
                method, path, headers=forged, json={"resolved": True} if method == "PATCH" else None
            )
            assert response.status_code == 503, path
            assert "HOMEPOT_ANALYTICS_JWT_SECRET" in response.json()["detail"]


def test_docs_offer_bearer_login_and_describe_every_parameter(shared: TestClient) -> None:
    spec = shared.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["AdminJWT"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["AdminJWT"]["description"],
    }
    checked = 0
    for path, operations in spec["paths"].items():
        if not path.startswith(PREFIX):
            continue
        for method, operation in operations.items():
            if method == "post":
                continue
            assert operation["security"] == [{"AdminJWT": []}], (method, path)
            for parameter in operation.get("parameters", []):
                assert parameter.get("description"), (method, path, parameter["name"])
                checked += 1
    assert checked > 60
    assert shared.get("/docs").status_code == 200


def test_cli_token_opens_the_api(shared: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from homepot_analytics.cli import app
    from homepot_foundation.settings import get_settings

    monkeypatch.setenv("HOMEPOT_ANALYTICS_JWT_SECRET", JWT_SECRET)
    get_settings.cache_clear()
    try:
        admin = CliRunner().invoke(app, ["token", "--subject", "ai-job", "--role", "admin"])
        viewer = CliRunner().invoke(app, ["token", "--subject", "someone", "--role", "viewer"])
    finally:
        get_settings.cache_clear()
    assert admin.exit_code == 0, admin.output
    headers = {"Authorization": f"Bearer {admin.output.strip()}"}
    assert shared.get(f"{PREFIX}/errors/summary", headers=headers).status_code == 200
    headers = {"Authorization": f"Bearer {viewer.output.strip()}"}
    assert shared.get(f"{PREFIX}/errors/summary", headers=headers).status_code == 403
