"""User filters compare the value as stored: through the deployment's privacy policy."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, Table

from exporter.privacy import Privacy
from exporter.schema import api_request_logs, device_state_history, error_logs, job_outcomes, user_activities
from tests.query_api.conftest import PREFIX
from tests.query_api.rows import insert_rows, row


class Pseudonyms(Privacy):
    """Stores user ids as hashes, as a pseudonymising deployment does."""

    def user(self, value: Any) -> str | None:
        if value is None or str(value).startswith("h_"):
            return value
        return "h_" + hashlib.sha256(str(value).encode()).hexdigest()[:16]


POLICY = Pseudonyms()


@pytest.fixture()
def pseudonymising(monkeypatch: pytest.MonkeyPatch, client: TestClient) -> TestClient:
    # The service's pipeline stores with this policy, so its filters compare through it too.
    monkeypatch.setattr(client.app.state.pipeline, "privacy", POLICY)  # type: ignore[attr-defined]
    return client


@pytest.mark.parametrize(
    ("table", "path", "column"),
    [
        (api_request_logs, "requests", "user_id"),
        (error_logs, "errors", "user_id"),
        (user_activities, "user-activities", "user_id"),
        (device_state_history, "device-states", "changed_by"),
        (job_outcomes, "jobs", "initiated_by"),
    ],
)
def test_user_filters_match_stored_pseudonyms(
    pseudonymising: TestClient, engine: Engine, table: Table, path: str, column: str
) -> None:
    alice = POLICY.user("alice@example.com")
    mine, _, system = insert_rows(
        engine,
        table,
        [
            row(table, 1, **{column: alice}),
            row(table, 2, **{column: POLICY.user("bob@example.com")}),
            row(table, 3, **{column: "system" if column != "user_id" else None}),
        ],
    )
    url = f"{PREFIX}/{path}"

    def found(value: str) -> list[int]:
        response = pseudonymising.get(url, params={column: value})
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]]

    # The id an admin knows and the pseudonym a row shows both find the row; nothing else does.
    assert found("alice@example.com") == [mine]
    assert found(str(alice)) == [mine]
    assert found("carol@example.com") == []
    if column != "user_id":
        # "system" is stored readable, never hashed.
        assert found("system") == [system]
