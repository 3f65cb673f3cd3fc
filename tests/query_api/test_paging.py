"""Cursor paging: every row exactly once, newest first, while rows keep arriving."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from exporter.schema import TABLES, api_request_logs, user_activities
from homepot_foundation.settings import Settings
from query_api.cursor import Cursor, InvalidCursor, decode_cursor, encode_cursor
from tests.query_api.conftest import PREFIX, bearer
from tests.query_api.rows import insert_rows, row

PATHS = {
    "api_request_logs": "requests",
    "device_state_history": "device-states",
    "job_outcomes": "jobs",
    "error_logs": "errors",
    "user_activities": "user-activities",
}


def test_cursor_round_trip() -> None:
    cursor = Cursor(datetime(2025, 12, 5, 13, 45, 23, 123456, tzinfo=UTC), 2**63 - 1)
    text = encode_cursor(cursor)
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_cursor(text) == cursor


def _b64(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "!!!!",
        _b64("2025-12-05T00:00:00+00:00"),
        _b64(["2025-12-05T00:00:00+00:00"]),
        _b64(["2025-12-05T00:00:00+00:00", 1, 2]),
        _b64(["not a time", 1]),
        _b64(["2025-12-05T00:00:00", 1]),  # naive: never issued
        _b64(["2025-12-05T00:00:00+00:00", "1"]),
        _b64(["2025-12-05T00:00:00+00:00", 1.5]),
        _b64(["2025-12-05T00:00:00+00:00", True]),
        _b64(["2025-12-05T00:00:00+00:00", -1]),
        _b64(["2025-12-05T00:00:00+00:00", 2**63]),
        _b64({"t": "2025-12-05T00:00:00+00:00", "i": 1}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "A" * 500,
    ],
)
def test_malformed_cursors_are_rejected(text: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(text)


@pytest.mark.parametrize("text", ["abc", _b64(["2025-12-05T00:00:00+00:00", "1"]), "%%%"])
def test_malformed_cursor_is_422_naming_cursor(
    shared: TestClient, shared_settings: Settings, text: str
) -> None:
    response = shared.get(f"{PREFIX}/requests", params={"cursor": text}, headers=bearer(shared_settings))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "cursor"]


@pytest.mark.parametrize("table", list(TABLES))
def test_walk_sees_every_row_once_while_rows_arrive(client: TestClient, engine: Engine, table: str) -> None:
    t = TABLES[table]
    # 25 rows in 10 distinct timestamps, so ties straddle page boundaries.
    original = insert_rows(engine, t, [row(t, minutes=i // 3 + (i % 2) * 0.5) for i in range(25)])
    url = f"{PREFIX}/{PATHS[table]}"
    seen: list[int] = []
    timestamps: list[str] = []
    cursor = None
    pages = 0
    for minute in range(100, 120):  # bounded; the walk takes 7 pages
        params: dict[str, object] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        body = client.get(url, params=params).json()
        seen += [item["id"] for item in body["data"]]
        timestamps += [item["timestamp"] for item in body["data"]]
        pages += 1
        # Newer rows and one older than everything arrive between pages.
        insert_rows(engine, t, [row(t, minutes=minute), row(t, minutes=minute + 0.5), row(t, minutes=-1000)])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    newer = set(seen) - set(original)
    assert sorted(set(seen) - newer) == sorted(original)
    assert len(seen) == len(set(seen)), "a row was returned twice"
    # The only newcomers a walk may meet are older than where it has got to: never newer ones.
    assert all(timestamps[seen.index(i)].startswith("2025-12-04") for i in newer)
    assert cursor is None, "the walk did not end"
    assert pages >= 7
    order = [(ts, i) for ts, i in zip(timestamps, seen, strict=True)]
    assert order == sorted(order, reverse=True)


def test_last_page_has_no_cursor_and_exact_pages(client: TestClient, engine: Engine) -> None:
    t = user_activities
    ids = insert_rows(engine, t, [row(t, minutes=i) for i in range(6)])
    first = client.get(f"{PREFIX}/user-activities", params={"limit": 3}).json()
    assert [item["id"] for item in first["data"]] == ids[:2:-1]
    second = client.get(
        f"{PREFIX}/user-activities", params={"limit": 3, "cursor": first["next_cursor"]}
    ).json()
    assert [item["id"] for item in second["data"]] == ids[2::-1]
    assert second["next_cursor"] is None
    assert client.get(f"{PREFIX}/user-activities", params={"limit": 6}).json()["next_cursor"] is None


def test_cursor_pages_within_the_window_and_filters(client: TestClient, engine: Engine) -> None:
    t = api_request_logs
    rows = [row(t, minutes=i, status_code=500 if i % 2 else 200) for i in range(10)]
    rows += [row(t, minutes=60 * 24 + i, status_code=500) for i in range(3)]  # next day
    ids = insert_rows(engine, t, rows)
    params: dict[str, object] = {"limit": 2, "start_date": "2025-12-05", "end_date": "2025-12-05"}
    params["min_status_code"] = 500
    seen: list[int] = []
    for _ in range(10):
        body = client.get(f"{PREFIX}/requests", params=params).json()
        seen += [item["id"] for item in body["data"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == [ids[i] for i in (9, 7, 5, 3, 1)]


def test_limit_bounds(shared: TestClient, shared_settings: Settings) -> None:
    headers = bearer(shared_settings)
    for limit in (0, 1001, -1, "many"):
        response = shared.get(f"{PREFIX}/jobs", params={"limit": limit}, headers=headers)
        assert response.status_code == 422, limit
        assert response.json()["detail"][0]["loc"] == ["query", "limit"]
    for limit in (1, 1000):
        assert shared.get(f"{PREFIX}/jobs", params={"limit": limit}, headers=headers).status_code == 200


def test_default_limit_is_100(client: TestClient, engine: Engine) -> None:
    t = api_request_logs
    insert_rows(engine, t, [row(t, minutes=i / 10) for i in range(101)])
    body = client.get(f"{PREFIX}/requests").json()
    assert len(body["data"]) == 100
    assert body["next_cursor"] is not None
