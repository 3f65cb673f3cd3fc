"""GET /errors, the fingerprint summary, and PATCH /errors/{id} (resolve / reopen)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from exporter.schema import error_logs
from homepot_foundation.settings import Settings
from query_api.app import create_app
from tests.conftest import fetch_rows
from tests.query_api.conftest import PREFIX, Stored, bearer
from tests.query_api.rows import insert_rows, row

URL = f"{PREFIX}/errors"
T = error_logs
FP_DB = "d" * 32
FP_MQTT = "e" * 32


def _ids(client: TestClient, **params: Any) -> list[int]:
    response = client.get(URL, params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


def _spec_examples(engine: Engine, stored: Stored = str) -> list[int]:
    return insert_rows(
        engine,
        T,
        [
            row(
                T,
                0,
                category="database",
                severity="error",
                error_code="E_DB_TIMEOUT",
                error_message="Connection timeout",
                endpoint="/api/v1/devices",
                user_id=stored("user123"),
                fingerprint=FP_DB,
                context={"pool": {"size": 5}},
                stack_trace="Traceback ...",
            ),
            row(
                T,
                5,
                category="api",
                severity="warning",
                error_code="E_RATE_LIMIT",
                error_message="Rate limit exceeded",
                resolved=True,
                resolved_at=datetime(2025, 12, 5, 13, tzinfo=UTC),
                fingerprint="a" * 32,
            ),
            row(
                T,
                10,
                category="external_service",
                severity="critical",
                error_code="E_MQTT_DOWN",
                error_message="MQTT broker offline",
                device_id="dev_007",
                fingerprint=FP_MQTT,
                trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
            ),
        ],
    )


def test_rows_and_filters(client: TestClient, engine: Engine, stored: Stored) -> None:
    a, b, c = _spec_examples(engine, stored)
    data = client.get(URL).json()["data"]
    assert [item["id"] for item in data] == [c, b, a]
    assert data[2]["context"] == {"pool": {"size": 5}}
    assert data[1]["resolved"] is True
    assert data[1]["resolved_at"] == "2025-12-05T13:00:00+00:00"
    assert _ids(client, category="database") == [a]
    assert _ids(client, category=["database", "api"]) == [b, a]
    assert _ids(client, severity="critical") == [c]
    assert _ids(client, severity=["warning", "error"]) == [b, a]
    assert _ids(client, error_code="E_RATE_LIMIT") == [b]
    assert _ids(client, resolved=True) == [b]
    assert _ids(client, resolved=False) == [c, a]
    assert _ids(client, endpoint="/api/v1/devices") == [a]
    assert _ids(client, user_id="user123") == [a]
    assert _ids(client, device_id="dev_007") == [c]
    assert _ids(client, fingerprint=FP_MQTT) == [c]
    assert _ids(client, trace_id="4bf92f3577b34da6a3ce929d0e0e4736") == [c]
    assert _ids(client, category="database", resolved=True) == []


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"category": "network"}, "category"),
        ({"severity": "fatal"}, "severity"),
        ({"resolved": "maybe"}, "resolved"),
    ],
)
def test_unknown_enum_values_are_422(
    shared: TestClient, shared_settings: Settings, params: dict[str, str], parameter: str
) -> None:
    response = shared.get(URL, params=params, headers=bearer(shared_settings))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["query", parameter]


def test_categories_of_the_conventions_are_accepted(shared: TestClient, shared_settings: Settings) -> None:
    for category in ("api", "database", "external_service", "validation", "job", "frontend", "other"):
        assert (
            shared.get(URL, params={"category": category}, headers=bearer(shared_settings)).status_code == 200
        )


def test_trace_url_when_jaeger_is_configured(
    db_url: str, tmp_path: Path, settings: Settings, engine: Engine
) -> None:
    _spec_examples(engine)
    configured = settings.model_copy(update={"jaeger_url": "http://127.0.0.1:16686/"})
    with TestClient(create_app(configured), headers=bearer(configured)) as client:
        data = client.get(URL).json()["data"]
    assert data[0]["trace_url"] == "http://127.0.0.1:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"
    assert [item["trace_url"] for item in data[1:]] == [None, None]


def test_summary_groups_by_fingerprint(client: TestClient, engine: Engine) -> None:
    rows = [
        row(T, 0, fingerprint=FP_DB, category="database", error_message="timeout after 5s", resolved=True),
        row(
            T, 30, fingerprint=FP_DB, category="database", error_message="timeout after 7s", error_code="E_DB"
        ),
        row(T, 20, fingerprint=FP_DB, category="database", error_message="timeout after 6s"),
        row(
            T,
            10,
            fingerprint=FP_MQTT,
            category="external_service",
            severity="critical",
            error_message="down",
            resolved=True,
        ),
        row(
            T,
            40,
            fingerprint=FP_MQTT,
            category="external_service",
            severity="critical",
            error_message="down",
            resolved=True,
        ),
        # Rows of the old system carry no fingerprint: same text groups together.
        row(T, 50, fingerprint=None, category="api", error_code="E_OLD", error_message="legacy"),
        row(T, 55, fingerprint=None, category="api", error_code="E_OLD", error_message="legacy"),
        row(T, 60, fingerprint=None, category="api", error_code="E_OLD", error_message="other legacy"),
        row(T, -60 * 24, fingerprint=FP_MQTT, error_message="yesterday"),
    ]
    ids = insert_rows(engine, T, rows)
    response = client.get(f"{URL}/summary", params={"start_date": "2025-12-05"})
    assert response.status_code == 200, response.text
    groups = response.json()["groups"]
    assert [g["count"] for g in groups] == [3, 2, 2, 1]
    # Equal counts: the most recently seen group first.
    db, legacy, mqtt, other = groups
    assert db["fingerprint"] == FP_DB
    assert (db["unresolved"], db["resolved"]) == (2, False)
    assert db["first_seen"] == "2025-12-05T12:00:00+00:00"
    assert db["last_seen"] == "2025-12-05T12:30:00+00:00"
    # The latest occurrence speaks for the group, though a later-recorded one is older.
    assert (db["latest_id"], db["error_message"], db["error_code"]) == (ids[1], "timeout after 7s", "E_DB")
    assert mqtt["fingerprint"] == FP_MQTT
    assert (mqtt["unresolved"], mqtt["resolved"], mqtt["severity"]) == (0, True, "critical")
    assert mqtt["first_seen"] == "2025-12-05T12:10:00+00:00"  # yesterday's occurrence is outside the window
    assert (legacy["error_message"], legacy["category"], legacy["last_seen"]) == (
        "legacy",
        "api",
        "2025-12-05T12:55:00+00:00",
    )
    assert len(legacy["fingerprint"]) == 32
    assert other["error_message"] == "other legacy"
    assert other["fingerprint"] != legacy["fingerprint"]

    open_only = client.get(f"{URL}/summary", params={"resolved": False, "limit": 2}).json()["groups"]
    assert [(g["fingerprint"], g["count"]) for g in open_only] == [(legacy["fingerprint"], 2), (FP_DB, 2)]


def test_patch_resolves_and_reopens(client: TestClient, engine: Engine, db_url: str) -> None:
    a, b, _ = _spec_examples(engine)
    before = datetime.now(UTC)
    response = client.patch(f"{URL}/{a}", json={"resolved": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == a and body["resolved"] is True
    resolved_at = datetime.fromisoformat(body["resolved_at"])
    assert before.replace(microsecond=0) <= resolved_at <= datetime.now(UTC)
    stored = {r["id"]: r for r in fetch_rows(db_url, "error_logs")}
    assert stored[a]["resolved"] is True and stored[a]["resolved_at"] == resolved_at

    # Resolving again keeps the first resolution time.
    assert client.patch(f"{URL}/{a}", json={"resolved": True}).json()["resolved_at"] == body["resolved_at"]
    assert _ids(client, resolved=True) == [b, a]

    reopened = client.patch(f"{URL}/{b}", json={"resolved": False}).json()
    assert (reopened["resolved"], reopened["resolved_at"]) == (False, None)
    stored = {r["id"]: r for r in fetch_rows(db_url, "error_logs")}
    assert (stored[b]["resolved"], stored[b]["resolved_at"]) == (False, None)


def test_patch_unknown_id_is_404(client: TestClient, engine: Engine) -> None:
    _spec_examples(engine)
    response = client.patch(f"{URL}/999999", json={"resolved": True})
    assert response.status_code == 404
    assert "999999" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("1", {"resolved": "yes"}, ["body", "resolved"]),
        ("1", {"resolved": 1}, ["body", "resolved"]),
        ("1", {}, ["body", "resolved"]),
        ("1", {"resolved": True, "resolved_at": "2025-01-01"}, ["body", "resolved_at"]),
        ("0", {"resolved": True}, ["path", "error_id"]),
        ("abc", {"resolved": True}, ["path", "error_id"]),
        (str(2**63), {"resolved": True}, ["path", "error_id"]),
    ],
)
def test_patch_bad_input_is_422(
    shared: TestClient, shared_settings: Settings, path: str, body: dict[str, Any], loc: list[str]
) -> None:
    response = shared.patch(f"{URL}/{path}", json=body, headers=bearer(shared_settings))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


def test_non_admin_cannot_resolve(
    anonymous: TestClient, settings: Settings, engine: Engine, db_url: str
) -> None:
    a, _, _ = _spec_examples(engine)
    response = anonymous.patch(f"{URL}/{a}", json={"resolved": True}, headers=bearer(settings, role="viewer"))
    assert response.status_code == 403
    assert {r["id"]: r for r in fetch_rows(db_url, "error_logs")}[a]["resolved"] is False
