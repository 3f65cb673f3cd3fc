"""GET /<table>/timeseries: rows written through the writer, the rollups refreshed or not yet,
each series checked against SQL over the raw rows: counts exactly, quantiles within 1 % of percentile_cont,
zeros for empty buckets, the "other" series, the raw fallback, and the 422s."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.pool import NullPool

from exporter import conventions as c
from exporter.rollups.refresh import refresh
from exporter.rollups.schema import ROLLUP_TABLES
from exporter.stats import ExportStats
from exporter.writer import RowWriter
from homepot_foundation.database import create_engine
from query_api.timeseries import MAX_POINTS
from tests.query_api.conftest import PREFIX
from tests.support.telemetry import event_log, failing_request_span, job_span, request_span, rows_by_table

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
ROUTES = [f"/r{n}" for n in range(8)]
EPOCH = "'1970-01-01T00:00:00+00:00'::timestamptz"
Row = dict[str, Any]


def _minutes(rng: random.Random) -> float:
    """Rows over three hours, none in 11:00-11:20 (empty buckets)."""
    while True:
        minute = rng.uniform(0, 180)
        if not 60 <= minute < 80:
            return minute


def _service(n: int) -> tuple[str, str]:
    return ("svc-a", "1.0") if n % 3 else ("svc-b", "2.0")


def dataset() -> dict[str, list[Row]]:
    rng = random.Random(11)
    records: list[Any] = []
    for _ in range(600):
        route = ROUTES[min(int(rng.expovariate(0.5)), len(ROUTES) - 1)]  # skewed: /r0 biggest
        records.append(request_span(route, rng.choice([200, 200, 200, 201, 404, 429, 500, 503])))
    for n in range(150):
        records.append(
            job_span(None, **{c.JOB_STATUS: rng.choice(["success", "success", "failed", "timeout"])})
        )
        records.append(failing_request_span(f"/boom{n % 3}"))
        records.append(
            event_log(
                c.DEVICE_STATE_EVENT,
                **{
                    c.DEVICE_ID: f"d{n % 5}",
                    c.DEVICE_PREVIOUS_STATE: rng.choice(["online", "offline", None]),
                    c.DEVICE_NEW_STATE: rng.choice(["online", "offline", "error"]),
                },
            )
        )
        records.append(
            event_log(
                c.USER_ACTIVITY_EVENT,
                **{
                    c.ACTIVITY_TYPE: rng.choice(["click", "page_view", "search"]),
                    c.PAGE_URL: rng.choice(["/devices", "/sites", "/jobs"]),
                    c.SESSION_ID: f"s{n % 7}",
                },
            )
        )
    batch = rows_by_table(*records)
    for table_rows in batch.values():
        for n, row in enumerate(table_rows):
            row["timestamp"] = T0 + timedelta(minutes=_minutes(rng))
            row["service_name"], row["service_version"] = _service(n)
    for row in batch["api_request_logs"]:
        row["response_time_ms"] = rng.lognormvariate(3, 1)
    for row in batch["job_outcomes"]:
        row["duration_ms"] = int(rng.lognormvariate(6, 1))
    for n, row in enumerate(batch["error_logs"]):
        row["category"] = ["api", "database", "job"][n % 3]
        row["fingerprint"] = f"fp{n % 4}"
    return batch


@pytest.fixture(params=["refreshed", "not refreshed yet"])
def loaded(db_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The dataset written by the writer on emptied raw and rollup tables, then the rollups
    refreshed (read from them), or not yet (raw rows stand in for the stale buckets)."""
    write_dataset(db_url, refreshed=request.param == "refreshed")
    yield db_url


def write_dataset(db_url: str, *, refreshed: bool) -> None:
    """Empty the rollups, write the dataset through the writer, and refresh the rollups or not."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        for parts in ROLLUP_TABLES.values():
            for table in parts.values():
                conn.execute(f"DELETE FROM {table.name}")
    writer = RowWriter(db_url, stats=ExportStats())
    try:
        writer.write(dataset())
    finally:
        writer.close()
    if refreshed:
        engine = create_engine(db_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                assert refresh(conn).buckets > 0
        finally:
            engine.dispose()


def raw(db_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def get(client: TestClient, path: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"{PREFIX}/{path}/timeseries", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def points_by_bucket(series: dict[str, Any]) -> dict[datetime, dict[str, Any]]:
    return {datetime.fromisoformat(point["bucket"]): point for point in series["points"]}


def near(estimate: float | None, exact: float | None) -> bool:
    if exact is None:
        return estimate is None
    return estimate is not None and abs(estimate - exact) <= 0.01 * abs(exact) + 1e-9


def test_request_series_at_5m_equal_the_raw_rows_bucket_by_bucket(client: TestClient, loaded: str) -> None:
    start, end = T0 + timedelta(minutes=7), T0 + timedelta(hours=3)
    answer = get(client, "requests", interval="5m", start_date=start.isoformat(), end_date=end.isoformat())
    assert answer["source"] == "rollup_5m"
    assert answer["first_bucket"] == (T0 + timedelta(minutes=5)).isoformat()
    [series] = answer["series"]
    assert series["group"] is None and series["other"] is False
    points = points_by_bucket(series)
    # Whole buckets from floor(start) = 10:05 to 13:00: a date-time end_date is inclusive, so
    # 13:00:00 is in the window, and its bucket is too.
    first = T0 + timedelta(minutes=5)
    expected_buckets = [first + timedelta(minutes=5 * i) for i in range(36)]
    assert list(points) == expected_buckets
    exact = {
        row[0]: row[1:]
        for row in raw(
            loaded,
            f"""SELECT date_bin('5 minutes', timestamp, {EPOCH}) AS b, count(*),
                       count(*) FILTER (WHERE status_code BETWEEN 400 AND 499),
                       count(*) FILTER (WHERE status_code BETWEEN 500 AND 599),
                       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY response_time_ms)
                FROM api_request_logs GROUP BY 1""",
        )
    }
    empty = 0
    for bucket, point in points.items():
        count, c4, c5, quantiles = exact.get(bucket, (0, 0, 0, [None, None, None]))
        assert point["count"] == count, bucket
        assert point["rate_per_s"] == pytest.approx(count / 300)
        if count == 0:
            empty += 1
            assert point["client_error_rate"] is None and point["p95_ms"] is None
            continue
        assert point["client_error_rate"] == pytest.approx(c4 / count)
        assert point["server_error_rate"] == pytest.approx(c5 / count)
        for name, value in zip(("p50_ms", "p95_ms", "p99_ms"), quantiles, strict=True):
            assert near(point[name], value), (bucket, name, point[name], value)
    assert empty >= 4, "11:00-11:20 has no rows: zeros, not missing buckets"


def test_top_groups_get_a_series_and_the_rest_sum_into_other(client: TestClient, loaded: str) -> None:
    window = {"start_date": T0.isoformat(), "end_date": (T0 + timedelta(hours=3)).isoformat()}
    answer = get(client, "requests", interval="1h", group_by="route", top=3, **window)
    assert answer["source"] == "rollup_1h"
    totals = raw(
        loaded,
        "SELECT coalesce(route, '') AS r, count(*) FROM api_request_logs"
        " GROUP BY r ORDER BY count(*) DESC, r",
    )
    top = [route for route, _ in totals[:3]]
    assert [s["group"] for s in answer["series"]] == [*top, None]
    assert answer["series"][-1]["other"] is True
    per_bucket = {
        (row[0], row[1]): row[2:]
        for row in raw(
            loaded,
            f"""SELECT date_bin('1 hour', timestamp, {EPOCH}),
                       CASE WHEN coalesce(route, '') = ANY(%s) THEN coalesce(route, '')
                            ELSE '(other)' END, count(*),
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms)
                FROM api_request_logs GROUP BY 1, 2""",
            top,
        )
    }
    for series in answer["series"]:
        key = "(other)" if series["other"] else series["group"]
        assert len(series["points"]) == 4  # 10:00 ... 13:00 (13:00:00 is inside the window)
        for bucket, point in points_by_bucket(series).items():
            count, p95 = per_bucket.get((bucket, key), (0, None))
            assert point["count"] == count, (key, bucket)
            assert near(point["p95_ms"], p95), (key, bucket, point["p95_ms"], p95)
    assert sum(p["count"] for s in answer["series"] for p in s["points"]) == 600 + 150


def test_a_point_of_one_rollup_row_reads_its_stored_quantiles(client: TestClient, db_url: str) -> None:
    """A route's hour is one row of rollup_route_latency_1h: its point takes the quantiles stored
    there (changed here by hand, to see which are read); the "other" series adds up its bins."""
    write_dataset(db_url, refreshed=True)
    window = {"start_date": T0.isoformat(), "end_date": (T0 + timedelta(hours=3)).isoformat()}
    window |= {"service_name": "svc-a"}  # a route of one service: one row per hour
    before = get(client, "requests", interval="1h", group_by="route", top=3, **window)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE rollup_route_latency_1h SET latency_p95 = -1")
        rows_per_point = {
            (bucket, route): rows
            for bucket, route, rows in conn.execute(
                "SELECT bucket, route, count(*) FROM rollup_route_latency_1h"
                " WHERE service_name = 'svc-a' GROUP BY 1, 2"
            )
        }
    after = get(client, "requests", interval="1h", group_by="route", top=3, **window)
    alone = 0
    for old, new in zip(before["series"], after["series"], strict=True):
        for old_point, new_point in zip(old["points"], new["points"], strict=True):
            bucket = datetime.fromisoformat(old_point["bucket"])
            if not old["other"] and rows_per_point.get((bucket, old["group"])) == 1:
                assert new_point == old_point | {"p95_ms": -1}
                alone += 1
            else:  # several rows (methods), the "other" series, or none: ranked from the bins
                assert new_point == old_point
    assert alone > 0


def test_a_day_is_the_sum_of_its_hours(client: TestClient, loaded: str) -> None:
    answer = get(client, "requests", interval="1d", start_date="2026-11-30", end_date="2026-12-01")
    assert answer["source"] == "rollup_1d"
    [series] = answer["series"]
    assert [p["bucket"] for p in series["points"]] == [
        "2026-11-30T00:00:00+00:00",
        "2026-12-01T00:00:00+00:00",
    ]
    [(count, p99)] = raw(
        loaded,
        "SELECT count(*), percentile_cont(0.99) WITHIN GROUP (ORDER BY response_time_ms)"
        " FROM api_request_logs",
    )
    assert series["points"][0]["count"] == count
    assert near(series["points"][0]["p99_ms"], p99)
    assert series["points"][1]["count"] == 0
    assert series["points"][0]["rate_per_s"] == pytest.approx(count / 86400)


def test_a_filter_the_rollups_cannot_answer_reads_raw_rows_with_the_same_answer(
    client: TestClient, loaded: str
) -> None:
    window = {"start_date": T0.isoformat(), "end_date": (T0 + timedelta(hours=3)).isoformat()}
    by_name = get(client, "requests", interval="5m", group_by="status_class", service_name="svc-b", **window)
    by_version = get(
        client, "requests", interval="5m", group_by="status_class", service_version="2.0", **window
    )
    assert (by_name["source"], by_version["source"]) == ("rollup_5m", "raw")
    assert by_version["series"] == by_name["series"]
    [(count,)] = raw(loaded, "SELECT count(*) FROM api_request_logs WHERE service_version = '2.0'")
    assert sum(p["count"] for s in by_version["series"] for p in s["points"]) == count


def test_1m_reads_raw_rows(client: TestClient, loaded: str) -> None:
    start = T0 + timedelta(minutes=30)
    answer = get(
        client,
        "requests",
        interval="1m",
        start_date=start.isoformat(),
        end_date=(start + timedelta(minutes=59, seconds=59)).isoformat(),
    )
    assert answer["source"] == "raw"
    [series] = answer["series"]
    assert len(series["points"]) == 60
    exact = dict(
        raw(
            loaded,
            f"SELECT date_bin('1 minute', timestamp, {EPOCH}), count(*) FROM api_request_logs GROUP BY 1",
        )
    )
    for bucket, point in points_by_bucket(series).items():
        assert point["count"] == exact.get(bucket, 0)
        assert point["rate_per_s"] == pytest.approx(exact.get(bucket, 0) / 60)


def test_job_series_by_status(client: TestClient, loaded: str) -> None:
    window = {"start_date": T0.isoformat(), "end_date": (T0 + timedelta(hours=3)).isoformat()}
    answer = get(client, "jobs", interval="1h", group_by="status", **window)
    exact = {
        (row[0], row[1]): row[2:]
        for row in raw(
            loaded,
            f"""SELECT date_bin('1 hour', timestamp, {EPOCH}), status, count(*),
                       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY duration_ms)
                FROM job_outcomes GROUP BY 1, 2""",
        )
    }
    assert {s["group"] for s in answer["series"]} == {"success", "failed", "timeout"}
    for series in answer["series"]:
        for bucket, point in points_by_bucket(series).items():
            count, quantiles = exact.get((bucket, series["group"]), (0, [None, None]))
            assert point["count"] == count
            assert point["success_rate"] == (None if not count else float(series["group"] == "success"))
            assert near(point["p50_duration_ms"], quantiles[0])
            assert near(point["p95_duration_ms"], quantiles[1])
    total = get(client, "jobs", interval="1h", **window)["series"][0]["points"]
    [(succeeded, count)] = raw(
        loaded, "SELECT count(*) FILTER (WHERE status = 'success'), count(*) FROM job_outcomes"
    )
    assert sum(p["count"] for p in total) == count
    assert sum((p["success_rate"] or 0) * p["count"] for p in total) == pytest.approx(succeeded)


@pytest.mark.parametrize(
    ("path", "group_by", "table", "expression"),
    [
        ("errors", "fingerprint", "error_logs", "coalesce(fingerprint, '')"),
        ("errors", "category", "error_logs", "category"),
        ("device-states", "transition", "device_state_history", "concat(previous_state, '→', new_state)"),
        ("user-activities", "page_url", "user_activities", "page_url"),
        ("user-activities", "activity_type", "user_activities", "activity_type"),
        ("user-activities", "service_name", "user_activities", "service_name"),
    ],
)
def test_count_series_per_group_equal_the_raw_rows(
    client: TestClient, loaded: str, path: str, group_by: str, table: str, expression: str
) -> None:
    window = {"start_date": T0.isoformat(), "end_date": (T0 + timedelta(hours=3)).isoformat()}
    answer = get(client, path, interval="5m", group_by=group_by, top=50, **window)
    exact = {
        (row[0], row[1]): row[2]
        for row in raw(
            loaded,
            f"SELECT date_bin('5 minutes', timestamp, {EPOCH}), {expression}, count(*)"
            f" FROM {table} GROUP BY 1, 2",
        )
    }
    assert {s["group"] for s in answer["series"]} == {group for _, group in exact}
    assert not any(s["other"] for s in answer["series"])
    for series in answer["series"]:
        assert len(series["points"]) == 37
        for bucket, point in points_by_bucket(series).items():
            assert point["count"] == exact.get((bucket, series["group"]), 0), (series["group"], bucket)


def test_no_rows_no_groups(client: TestClient, loaded: str) -> None:
    answer = get(client, "errors", group_by="category", start_date="2026-01-05", end_date="2026-01-05")
    assert answer["series"] == []
    [series] = get(client, "errors", interval="1h", start_date="2026-01-05", end_date="2026-01-05")["series"]
    assert [p["count"] for p in series["points"]] == [0] * 24


@pytest.mark.parametrize(
    ("params", "parameter", "words"),
    [
        ({"interval": "2m"}, "interval", "'1m', '5m', '1h' or '1d'"),
        ({"group_by": "user_id"}, "group_by", "'route', 'service_name', 'status_class' or 'method'"),
        ({"top": 51}, "top", "50"),
        (
            {"interval": "1m", "start_date": "2026-01-01", "end_date": "2026-01-31"},
            "interval",
            "widen the interval",
        ),
        (
            {"interval": "5m", "group_by": "route", "start_date": "2026-11-01", "end_date": "2026-11-30"},
            "interval",
            "shorten the window",
        ),
        ({"bucket": "5m"}, "bucket", "unknown query parameter"),
    ],
)
def test_bad_requests_are_422_naming_the_parameter(
    client: TestClient, params: dict[str, Any], parameter: str, words: str
) -> None:
    response = client.get(f"{PREFIX}/requests/timeseries", params=params)
    assert response.status_code == 422, response.text
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["query", parameter]
    assert words in detail["msg"], detail["msg"]


def test_the_point_cap_counts_the_series(client: TestClient) -> None:
    # 36 days of hours: 864 points alone, 11 series (top 10 + other) make 9504; top 11 is 10368.
    window = {"interval": "1h", "start_date": "2026-01-01", "end_date": "2026-02-05"}
    assert client.get(f"{PREFIX}/jobs/timeseries", params=window | {"group_by": "status"}).status_code == 200
    refused = client.get(f"{PREFIX}/jobs/timeseries", params=window | {"group_by": "status", "top": 11})
    assert refused.status_code == 422
    assert str(MAX_POINTS) in refused.json()["detail"][0]["msg"]


def test_admin_only(anonymous: TestClient) -> None:
    assert anonymous.get(f"{PREFIX}/requests/timeseries").status_code == 401


def test_latency_reads_the_per_route_histograms_unless_the_status_class_is_needed() -> None:
    from exporter.rollups.definitions import JOB_LATENCY, REQUESTS, ROUTE_LATENCY
    from query_api import timeseries as series

    spec = series.REQUEST_SERIES
    assert [spec.latency_rollup_for(g) for g in (None, "route", "service_name", "method")] == [
        ROUTE_LATENCY
    ] * 4
    assert spec.latency_rollup_for("status_class") is REQUESTS
    assert series.JOB_SERIES.latency_rollup_for("job_type") is JOB_LATENCY
    assert series.JOB_SERIES.latency_rollup_for("status") is series.JOB_SERIES.rollup
