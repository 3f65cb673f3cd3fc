"""GET /device-states: filters, and the transition / busiest-device summary."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from exporter.schema import device_state_history
from tests.query_api.conftest import PREFIX, Stored
from tests.query_api.rows import insert_rows, row

URL = f"{PREFIX}/device-states"
T = device_state_history


def _ids(client: TestClient, **params: Any) -> list[int]:
    response = client.get(URL, params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


def test_rows_and_filters(client: TestClient, engine: Engine, stored: Stored) -> None:
    a, b, c = insert_rows(
        engine,
        T,
        [
            row(
                T,
                0,
                device_id="dev_001",
                previous_state="online",
                new_state="offline",
                changed_by=stored("user123"),
                reason="Maintenance",
                extra_data={"ticket": 42, "tags": ["a", "b"]},
            ),
            row(
                T, 15, device_id="dev_001", previous_state="offline", new_state="online", changed_by="system"
            ),
            row(
                T,
                30,
                device_id="dev_002",
                previous_state="idle",
                new_state="active",
                changed_by=stored("user456"),
            ),
        ],
    )
    data = client.get(URL).json()["data"]
    assert [item["id"] for item in data] == [c, b, a]
    assert data[2]["extra_data"] == {"ticket": 42, "tags": ["a", "b"]}
    assert data[2]["reason"] == "Maintenance"
    assert _ids(client, device_id="dev_001") == [b, a]
    assert _ids(client, previous_state="offline") == [b]
    assert _ids(client, new_state="offline") == [a]
    assert _ids(client, changed_by="system") == [b]
    assert _ids(client, changed_by="user456") == [c]
    assert _ids(client, device_id="dev_002", new_state="offline") == []


def test_summary_counts_transitions_and_busiest_devices(client: TestClient, engine: Engine) -> None:
    changes = [
        ("dev_1", "online", "offline"),
        ("dev_1", "offline", "online"),
        ("dev_1", "online", "offline"),
        ("dev_2", "online", "offline"),
        ("dev_2", "offline", "error"),
        ("dev_3", None, "online"),
    ]
    rows = [row(T, i, device_id=d, previous_state=p, new_state=n) for i, (d, p, n) in enumerate(changes)]
    rows.append(row(T, 60 * 24, device_id="dev_3", previous_state="online", new_state="offline"))  # next day
    insert_rows(engine, T, rows)
    response = client.get(
        f"{URL}/summary", params={"start_date": "2025-12-05", "end_date": "2025-12-05", "top": 2}
    )
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["transitions"] == [
        {"service_name": None, "previous_state": "online", "new_state": "offline", "count": 3},
        {"service_name": None, "previous_state": "offline", "new_state": "error", "count": 1},
        {"service_name": None, "previous_state": "offline", "new_state": "online", "count": 1},
        {"service_name": None, "previous_state": None, "new_state": "online", "count": 1},
    ]
    assert summary["devices"] == [
        {
            "service_name": None,
            "device_id": "dev_1",
            "changes": 3,
            "last_changed_at": "2025-12-05T12:02:00+00:00",
        },
        {
            "service_name": None,
            "device_id": "dev_2",
            "changes": 2,
            "last_changed_at": "2025-12-05T12:04:00+00:00",
        },
    ]
    filtered = client.get(f"{URL}/summary", params={"device_id": "dev_2"}).json()
    assert [t["count"] for t in filtered["transitions"]] == [1, 1]
