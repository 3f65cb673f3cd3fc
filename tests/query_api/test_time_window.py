"""start_date / end_date: dates, date-times, zones, the whole last day, and 422s naming the parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from exporter.schema import device_state_history
from homepot_foundation.settings import Settings
from query_api.filters import parse_instant
from tests.query_api.conftest import PREFIX, bearer
from tests.query_api.rows import NOON, insert_rows, row

URL = f"{PREFIX}/device-states"
T = device_state_history


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("2025-12-05", False, datetime(2025, 12, 5, tzinfo=UTC)),
        ("2025-12-05", True, datetime(2025, 12, 6, tzinfo=UTC)),
        ("2025-12-05T14:30:00", False, datetime(2025, 12, 5, 14, 30, tzinfo=UTC)),
        ("2025-12-05T14:30:00+00:00", False, datetime(2025, 12, 5, 14, 30, tzinfo=UTC)),
        ("2025-12-05T14:30:00+01:00", False, datetime(2025, 12, 5, 13, 30, tzinfo=UTC)),
        ("2025-12-05T14:30:00 01:00", False, datetime(2025, 12, 5, 13, 30, tzinfo=UTC)),  # unencoded "+"
        ("2025-12-05T14:30:00-05:00", False, datetime(2025, 12, 5, 19, 30, tzinfo=UTC)),
        ("2025-12-05 14:30", False, datetime(2025, 12, 5, 14, 30, tzinfo=UTC)),
        ("2025-12-05T14:30:00.250", True, datetime(2025, 12, 5, 14, 30, 0, 250001, tzinfo=UTC)),
        ("9999-12-31", True, None),
    ],
)
def test_parse_instant(text: str, end: bool, expected: datetime | None) -> None:
    assert parse_instant(text, end=end) == expected


@pytest.mark.parametrize(
    "text", ["yesterday", "2025-13-01", "2025-12-32", "05/12/2025", "2025-12-05T25:00", ""]
)
def test_parse_instant_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text, end=False)


def _ids(client: TestClient, **params: str) -> list[int]:
    response = client.get(URL, params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


def test_date_only_end_includes_the_whole_day(client: TestClient, engine: Engine) -> None:
    day_start = NOON.replace(hour=0)
    times = [
        day_start - timedelta(microseconds=1),
        day_start,
        day_start + timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
        day_start + timedelta(days=1),
    ]
    before, first, last, after = insert_rows(engine, T, [row(T, timestamp=t) for t in times])
    assert _ids(client, start_date="2025-12-05", end_date="2025-12-05") == [last, first]
    assert _ids(client, end_date="2025-12-04") == [before]
    assert _ids(client, start_date="2025-12-06") == [after]
    assert _ids(client, start_date="2025-12-05T23:59:59.999999") == [after, last]


def test_date_time_bounds_are_inclusive_and_zones_apply(client: TestClient, engine: Engine) -> None:
    a, b, c = insert_rows(engine, T, [row(T, minutes=m) for m in (0, 30, 60)])  # 12:00, 12:30, 13:00 UTC
    assert _ids(client, start_date="2025-12-05T12:30:00", end_date="2025-12-05T13:00:00") == [c, b]
    assert _ids(client, start_date="2025-12-05T12:30:00+00:00", end_date="2025-12-05T12:30:00+00:00") == [b]
    # 13:30+01:00 is 12:30 UTC; a naive time is UTC.
    assert _ids(client, end_date="2025-12-05T13:30:00+01:00") == [b, a]
    assert _ids(client, start_date="2025-12-05T07:45:00-05:00") == [c]
    berlin = datetime(2025, 12, 5, 13, 0, tzinfo=timezone(timedelta(hours=1))).isoformat()
    assert _ids(client, start_date=berlin, end_date=berlin) == [a]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"start_date": "yesterday"}, "start_date"),
        ({"end_date": "2025-02-30"}, "end_date"),
        ({"start_date": "2025-12-06", "end_date": "2025-12-05"}, "start_date"),
        ({"start_date": "2025-12-05T12:00:01", "end_date": "2025-12-05T12:00:00"}, "start_date"),
        ({"start_date": "0001-01-01T00:00:00+01:00"}, "start_date"),
    ],
)
@pytest.mark.parametrize(
    "path", ["requests", "device-states/summary", "errors", "jobs/summary", "user-activities"]
)
def test_bad_windows_are_422_naming_the_parameter(
    shared: TestClient, shared_settings: Settings, params: dict[str, str], parameter: str, path: str
) -> None:
    response = shared.get(f"{PREFIX}/{path}", params=params, headers=bearer(shared_settings))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", parameter]
    assert parameter in error["msg"]
    if "start_date" in params and "end_date" in params:
        assert "end_date" in error["msg"]
