"""GET /user-activities: filters, and counts by type, top pages, top searches."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from exporter.schema import user_activities
from tests.query_api.conftest import PREFIX, Stored
from tests.query_api.rows import insert_rows, row

URL = f"{PREFIX}/user-activities"
T = user_activities


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
                user_id=stored("user123"),
                session_id="s1",
                activity_type="page_view",
                page_url="/devices",
                duration_ms=1500,
            ),
            row(
                T,
                0.25,
                user_id=stored("user123"),
                session_id="s1",
                activity_type="click",
                page_url="/devices",
                element_id="add-device-button",
            ),
            row(
                T,
                1,
                user_id=stored("user123"),
                session_id="s1",
                activity_type="search",
                page_url="/devices",
                element_id="device-search",
                search_query="temperature",
                extra_data={"results": 3},
            ),
            row(
                T, 2, user_id=stored("user456"), session_id="s2", activity_type="page_view", page_url="/sites"
            ),
        ],
    )
    data = client.get(URL).json()["data"]
    assert [item["id"] for item in data] == [d, c, b, a]
    assert data[1]["extra_data"] == {"results": 3}
    assert data[1]["search_query"] == "temperature"
    assert _ids(client, user_id="user123") == [c, b, a]
    assert _ids(client, session_id="s2") == [d]
    assert _ids(client, activity_type="page_view") == [d, a]
    assert _ids(client, page_url="/devices") == [c, b, a]
    assert _ids(client, element_id="add-device-button") == [b]
    assert _ids(client, user_id="user456", activity_type="click") == []


def test_summary(client: TestClient, engine: Engine, stored: Stored) -> None:
    activities = [
        ("u1", "s1", "page_view", "/devices", None, 1000),
        ("u1", "s1", "page_view", "/devices", None, 3000),
        ("u2", "s2", "page_view", "/devices", None, None),
        ("u2", "s2", "page_view", "/sites", None, 500),
        ("u1", "s1", "click", "/devices", None, None),
        ("u1", "s3", "search", "/devices", "temperature", None),
        ("u2", "s2", "search", "/devices", "Temperature ", None),
        ("u2", "s2", "search", "/sites", "berlin", None),
        ("u2", "s2", "search", "/sites", "  ", None),
        (None, None, "form_submit", None, None, None),
    ]
    insert_rows(
        engine,
        T,
        [
            row(
                T,
                i,
                user_id=u and stored(u),
                session_id=s,
                activity_type=a,
                page_url=p,
                search_query=q,
                duration_ms=ms,
            )
            for i, (u, s, a, p, q, ms) in enumerate(activities)
        ],
    )
    response = client.get(f"{URL}/summary", params={"top": 5})
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["activity_types"] == [
        {"service_name": None, "activity_type": "page_view", "count": 4, "users": 2, "sessions": 2},
        {"service_name": None, "activity_type": "search", "count": 4, "users": 2, "sessions": 2},
        {"service_name": None, "activity_type": "click", "count": 1, "users": 1, "sessions": 1},
        {"service_name": None, "activity_type": "form_submit", "count": 1, "users": 0, "sessions": 0},
    ]
    pages = {p["page_url"]: p for p in summary["top_pages"]}
    assert list(pages) == ["/devices", "/sites"]
    assert (pages["/devices"]["count"], pages["/devices"]["page_views"]) == (6, 3)
    assert pages["/devices"]["avg_duration_ms"] == pytest.approx(2000)
    assert (pages["/sites"]["count"], pages["/sites"]["page_views"]) == (3, 1)
    # Case and surrounding blanks do not split a search; blank searches are not searches.
    assert summary["top_searches"] == [
        {"service_name": None, "search_query": "temperature", "count": 2},
        {"service_name": None, "search_query": "berlin", "count": 1},
    ]
    only_u1 = client.get(f"{URL}/summary", params={"user_id": "u1"}).json()
    assert sum(t["count"] for t in only_u1["activity_types"]) == 4
