"""GET /jobs: filters, and the per-job-type summary with its most frequent error codes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from exporter.schema import job_outcomes
from homepot_foundation.settings import Settings
from tests.query_api.conftest import PREFIX, Stored, bearer
from tests.query_api.rows import insert_rows, row

URL = f"{PREFIX}/jobs"
T = job_outcomes


def _ids(client: TestClient, **params: Any) -> list[int]:
    response = client.get(URL, params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


def test_rows_and_filters(client: TestClient, engine: Engine, stored: Stored) -> None:
    a, b, c, d = insert_rows(
        engine,
        T,
        [
            row(
                T,
                0,
                job_id="job_456",
                job_type="firmware_update",
                device_id="dev_001",
                duration_ms=3500,
                initiated_by=stored("user123"),
                extra_data={"version": "2.1"},
            ),
            row(
                T,
                5,
                job_id="job_457",
                job_type="restart",
                device_id="dev_002",
                duration_ms=1200,
                initiated_by="system",
            ),
            row(
                T,
                10,
                job_id="job_458",
                job_type="config_change",
                device_id="dev_003",
                status="failed",
                duration_ms=5000,
                error_code="E_TIMEOUT",
                error_message="no answer",
                retry_count=2,
            ),
            row(T, 15, job_id="job_459", job_type="restart", device_id="dev_003", status="timeout"),
        ],
    )
    data = client.get(URL).json()["data"]
    assert [item["id"] for item in data] == [d, c, b, a]
    assert data[3]["extra_data"] == {"version": "2.1"}
    assert data[1]["retry_count"] == 2
    assert _ids(client, job_id="job_457") == [b]
    assert _ids(client, job_type="restart") == [d, b]
    assert _ids(client, device_id="dev_003") == [d, c]
    assert _ids(client, status="failed") == [c]
    assert _ids(client, status=["failed", "timeout"]) == [d, c]
    assert _ids(client, error_code="E_TIMEOUT") == [c]
    assert _ids(client, initiated_by="user123") == [a]
    assert _ids(client, initiated_by="system") == [b]
    assert _ids(client, min_duration_ms=3500) == [c, a]


def test_system_actors_and_other_statuses_are_listed_as_stored(client: TestClient, engine: Engine) -> None:
    orchestrated, pending = insert_rows(
        engine,
        T,
        [row(T, 0, initiated_by="orchestrator"), row(T, 5, initiated_by="scheduler", status="pending")],
    )
    # A system actor is no user: the filter takes it as stored, not as a pseudonym.
    assert _ids(client, initiated_by="orchestrator") == [orchestrated]
    assert _ids(client, initiated_by="scheduler") == [pending]
    statuses = {item["id"]: item["status"] for item in client.get(URL).json()["data"]}
    assert statuses == {orchestrated: "success", pending: "pending"}


@pytest.mark.parametrize("status", ["succeeded", "SUCCESS", ""])
def test_unknown_status_is_422(shared: TestClient, shared_settings: Settings, status: str) -> None:
    response = shared.get(URL, params={"status": status}, headers=bearer(shared_settings))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["query", "status"]


def test_summary_per_job_type(client: TestClient, engine: Engine) -> None:
    firmware = [
        ("success", 1000, None, 0),
        ("success", 2000, None, 0),
        ("failed", 3000, "E_FLASH", 1),
        ("failed", 4000, "E_FLASH", 2),
        ("timeout", 5000, "E_TIMEOUT", 3),
        ("cancelled", None, "E_USER", 0),
    ]
    rows = [
        row(T, i, job_type="firmware_update", status=s, duration_ms=ms, error_code=code, retry_count=retries)
        for i, (s, ms, code, retries) in enumerate(firmware)
    ]
    rows += [
        row(T, 20 + i, job_type="restart", status="success", duration_ms=100 * (i + 1)) for i in range(2)
    ]
    insert_rows(engine, T, rows)

    response = client.get(f"{URL}/summary", params={"top": 2})
    assert response.status_code == 200, response.text
    summary = response.json()
    fw, restart = summary["job_types"]
    assert fw["job_type"] == "firmware_update"
    assert (fw["count"], fw["succeeded"], fw["failed"], fw["timed_out"], fw["cancelled"]) == (6, 2, 2, 1, 1)
    assert fw["success_rate"] == pytest.approx(2 / 6)
    # Durations 1000..5000 (the cancelled job has none): median 3000, p95 at rank 3.8 -> 4800.
    assert fw["p50_duration_ms"] == pytest.approx(3000, rel=0.01)
    assert fw["p95_duration_ms"] == pytest.approx(4800, rel=0.01)
    assert fw["avg_retry_count"] == pytest.approx(1.0)
    # Top 2 codes: E_FLASH twice, then the alphabetically first of the single ones.
    assert fw["top_error_codes"] == [
        {"error_code": "E_FLASH", "count": 2},
        {"error_code": "E_TIMEOUT", "count": 1},
    ]
    assert restart["job_type"] == "restart"
    assert (restart["count"], restart["success_rate"], restart["top_error_codes"]) == (2, 1.0, [])
    assert restart["p50_duration_ms"] == pytest.approx(150, rel=0.01)
    total = summary["total"]
    assert total["count"] == 8
    assert total["success_rate"] == pytest.approx(4 / 8)


def test_summary_window_excludes_other_days(client: TestClient, engine: Engine) -> None:
    insert_rows(
        engine, T, [row(T, 0, job_type="restart"), row(T, -60 * 24, job_type="restart", status="failed")]
    )
    summary = client.get(f"{URL}/summary", params={"start_date": "2025-12-05T00:00:00"}).json()
    assert summary["total"]["count"] == 1
    assert summary["total"]["success_rate"] == 1.0
