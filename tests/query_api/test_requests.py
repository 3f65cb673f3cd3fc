"""GET /requests: rows, every filter, and the per-route summary checked against inserted rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from exporter.schema import api_request_logs
from homepot_foundation.settings import Settings
from tests.query_api.conftest import PREFIX, Stored, bearer
from tests.query_api.rows import insert_rows, row

URL = f"{PREFIX}/requests"


def _ids(client: TestClient, **params: Any) -> list[int]:
    response = client.get(URL, params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


def test_rows_carry_every_column_as_json(client: TestClient, engine: Engine) -> None:
    stored = row(
        api_request_logs,
        endpoint="/api/v1/devices/7",
        route="/api/v1/devices/{device_id}",
        method="PUT",
        status_code=201,
        response_time_ms=89.5,
        user_id="user456",
        ip_address="10.0.0.0",
        user_agent="curl/8",
        request_size_bytes=120,
        response_size_bytes=4096,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        service_name="homepot-backend",
    )
    [row_id] = insert_rows(engine, api_request_logs, [stored])
    [item] = client.get(URL).json()["data"]
    assert set(item) == {column.name for column in api_request_logs.columns} | {"trace_url"}
    assert item["id"] == row_id
    assert item["timestamp"] == "2025-12-05T12:00:00+00:00"
    assert datetime.fromisoformat(item["timestamp"]) == datetime(2025, 12, 5, 12, tzinfo=UTC)
    assert item["event_id"] == str(stored["event_id"])
    assert item["trace_url"] is None  # no Jaeger URL configured
    for name in ("endpoint", "route", "method", "status_code", "response_time_ms", "user_id", "trace_id"):
        assert item[name] == stored[name]


def test_newest_first_with_ties_broken_by_id(client: TestClient, engine: Engine) -> None:
    ids = insert_rows(engine, api_request_logs, [row(api_request_logs, minutes=m) for m in (1, 3, 2, 3)])
    assert _ids(client) == [ids[3], ids[1], ids[2], ids[0]]


def test_filters(client: TestClient, engine: Engine, stored: Stored) -> None:
    t = api_request_logs
    a, b, c, d, e = insert_rows(
        engine,
        t,
        [
            row(
                t,
                1,
                endpoint="/api/v1/devices",
                route="/api/v1/devices",
                method="GET",
                user_id=stored("user123"),
            ),
            row(
                t,
                2,
                endpoint="/api/v1/devices/1",
                route="/api/v1/devices/{id}",
                method="PUT",
                status_code=404,
            ),
            row(t, 3, endpoint="/api/v1/auth", route="/api/v1/auth", method="POST", status_code=401),
            row(
                t, 4, endpoint="/api/v1/sites", route="/api/v1/sites", status_code=503, response_time_ms=900.0
            ),
            row(
                t,
                5,
                endpoint="/api/v1/devices/2",
                route="/api/v1/devices/{id}",
                method="DELETE",
                user_id=stored("user9"),
                response_time_ms=45.0,
                trace_id="abcdef0123456789abcdef0123456789",
            ),
        ],
    )
    assert _ids(client) == [e, d, c, b, a]
    assert _ids(client, endpoint="/api/v1/devices/1") == [b]
    assert _ids(client, route="/api/v1/devices/{id}") == [e, b]
    assert _ids(client, method="POST") == [c]
    assert _ids(client, method=["PUT", "DELETE"]) == [e, b]
    assert _ids(client, status_code=404) == [b]
    assert _ids(client, min_status_code=400) == [d, c, b]
    assert _ids(client, min_status_code=400, max_status_code=499) == [c, b]
    assert _ids(client, max_status_code=299) == [e, a]
    assert _ids(client, min_response_time_ms=45) == [e, d]
    assert _ids(client, max_response_time_ms=44.9) == [c, b, a]
    assert _ids(client, user_id="user123") == [a]
    assert _ids(client, user_id="nobody") == []
    assert _ids(client, trace_id="ABCDEF0123456789ABCDEF0123456789") == [e]
    assert _ids(client, route="/api/v1/devices/{id}", user_id="user9", method="DELETE") == [e]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"method": "FETCH"}, "method"),
        ({"status_code": 600}, "status_code"),
        ({"status_code": "ok"}, "status_code"),
        ({"min_status_code": 500, "max_status_code": 400}, "min_status_code"),
        ({"min_response_time_ms": -1}, "min_response_time_ms"),
        ({"min_response_time_ms": 10, "max_response_time_ms": 5}, "min_response_time_ms"),
        ({"trace_id": "xyz"}, "trace_id"),
        ({"endpoint": "/" + "a" * 2048}, "endpoint"),
    ],
)
def test_bad_filter_values_are_422_naming_the_parameter(
    shared: TestClient, shared_settings: Settings, params: dict[str, Any], parameter: str
) -> None:
    response = shared.get(URL, params=params, headers=bearer(shared_settings))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["query", parameter]


def test_summary_per_route_against_inserted_rows(client: TestClient, engine: Engine) -> None:
    t = api_request_logs
    devices = [(10.0, 200), (20.0, 200), (30.0, 500), (40.0, 404), (50.0, 200)]
    rows = [
        row(t, i, route="/devices", method="GET", response_time_ms=ms, status_code=s)
        for i, (ms, s) in enumerate(devices)
    ]
    rows += [row(t, 10, route="/auth", method="POST", response_time_ms=5.0, status_code=401)]
    rows += [row(t, 11, route="/devices", method="POST", response_time_ms=100.0, status_code=201)]
    # Outside the window: must not count.
    rows += [row(t, -24 * 60, route="/devices", method="GET", response_time_ms=9999.0, status_code=500)]
    insert_rows(engine, t, rows)

    response = client.get(f"{URL}/summary", params={"start_date": "2025-12-05", "end_date": "2025-12-05"})
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["start_date"] == "2025-12-05T00:00:00+00:00"
    assert summary["end_date"] == "2025-12-06T00:00:00+00:00"
    by_route = {(r["route"], r["method"]): r for r in summary["routes"]}
    assert list(by_route) == [("/devices", "GET"), ("/auth", "POST"), ("/devices", "POST")]
    get = by_route[("/devices", "GET")]
    assert get["count"] == 5
    assert get["server_errors"] == 1 and get["client_errors"] == 1
    assert get["error_rate"] == pytest.approx(0.2)
    assert get["client_error_rate"] == pytest.approx(0.2)
    # percentile_cont over 10, 20, 30, 40, 50: linear interpolation between ranks.
    assert get["p50_ms"] == pytest.approx(30.0, rel=0.01)
    assert get["p95_ms"] == pytest.approx(48.0, rel=0.01)
    assert get["p99_ms"] == pytest.approx(49.6, rel=0.01)
    assert get["avg_ms"] == pytest.approx(30.0)
    assert get["max_ms"] == pytest.approx(50.0, rel=0.01)
    assert by_route[("/auth", "POST")]["client_error_rate"] == 1.0
    total = summary["total"]
    assert total["count"] == 7
    assert total["server_errors"] == 1 and total["client_errors"] == 2
    # 5, 10, 20, 30, 40, 50, 100: the median is the 4th value.
    assert total["p50_ms"] == pytest.approx(30.0, rel=0.01)
    assert total["max_ms"] == pytest.approx(100.0, rel=0.01)


def test_summary_takes_the_list_filters_and_limit(client: TestClient, engine: Engine) -> None:
    t = api_request_logs
    insert_rows(
        engine,
        t,
        [row(t, i, route=f"/r{i % 3}", status_code=500 if i % 2 else 200) for i in range(9)],
    )
    summary = client.get(f"{URL}/summary", params={"min_status_code": 500, "limit": 2}).json()
    assert summary["total"]["count"] == 4
    assert summary["total"]["error_rate"] == 1.0
    # 500s at i = 1, 3, 5, 7: /r1 twice, /r0 and /r2 once; ties by route name; limit 2.
    assert [(r["route"], r["count"]) for r in summary["routes"]] == [("/r1", 2), ("/r0", 1)]


def test_summary_of_nothing(client: TestClient) -> None:
    summary = client.get(f"{URL}/summary").json()
    assert summary == {"start_date": None, "end_date": None, "total": None, "routes": []}
