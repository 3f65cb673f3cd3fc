"""The summaries read from the rollups (whole buckets) and raw rows (ragged edges) answer what the
raw rows alone answer: counts equal, percentiles within 1 %; on random rows written by the
writer (so the rollups are kept as in production), over windows with ragged edges."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import ColumnElement, Connection, Engine

from exporter.rollups.definitions import (
    ACTIVITIES,
    DEVICE_STATES,
    ERRORS,
    JOB_ERRORS,
    JOBS,
    REQUESTS,
    SEARCHES,
)
from exporter.rollups.refresh import refresh
from exporter.schema import api_request_logs, device_state_history, error_logs, job_outcomes, user_activities
from exporter.stats import ExportStats
from exporter.writer import RowWriter
from query_api import rollup_reads, summaries
from query_api.filters import TimeWindow
from tests.conftest import empty_tables
from tests.query_api.rows import row

START = datetime(2025, 12, 5, 9, 0, tzinfo=UTC)
HOURS = 54  # to 7 December 15:00: whole days, hours and 5-minute buckets
WINDOWS = [
    TimeWindow(datetime(2025, 12, 5, 10, 3, 17, tzinfo=UTC), datetime(2025, 12, 7, 13, 58, 2, tzinfo=UTC)),
    TimeWindow(datetime(2025, 12, 5, 10, 3, 17, tzinfo=UTC), datetime(2025, 12, 5, 13, 58, 2, tzinfo=UTC)),
    TimeWindow(datetime(2025, 12, 5, 10, 0, tzinfo=UTC), datetime(2025, 12, 5, 14, 0, tzinfo=UTC)),
    TimeWindow(datetime(2025, 12, 5, 11, 7, 1, tzinfo=UTC), datetime(2025, 12, 5, 11, 52, 59, tzinfo=UTC)),
    TimeWindow(datetime(2025, 12, 5, 10, 3, 17, tzinfo=UTC), None),
    TimeWindow(None, datetime(2025, 12, 5, 13, 58, 2, tzinfo=UTC)),
    TimeWindow(None, None),
]
PERCENTILES = {"p50_ms", "p95_ms", "p99_ms", "max_ms", "p50_duration_ms", "p95_duration_ms"}

rng = random.Random(20251205)


def _moment() -> datetime:
    """Most rows in the first 6 hours (the short windows need some), the rest over two days more."""
    hours = 6 if rng.random() < 0.75 else HOURS
    return START + timedelta(seconds=rng.uniform(0, hours * 3600))


def _requests(count: int) -> list[dict[str, Any]]:
    return [
        row(
            api_request_logs,
            timestamp=_moment(),
            service_name=rng.choice(["api", "web", None]),
            route=rng.choice(["/devices", "/jobs/{id}", "/sites", None]),
            method=rng.choice(["GET", "GET", "POST"]),
            status_code=rng.choice([200, 200, 200, 201, 404, 422, 500, 503]),
            response_time_ms=rng.lognormvariate(3, 1),
        )
        for _ in range(count)
    ]


def _jobs(count: int) -> list[dict[str, Any]]:
    return [
        row(
            job_outcomes,
            timestamp=_moment(),
            service_name=rng.choice(["orchestrator", None]),
            job_type=rng.choice(["restart", "firmware_update", "sync"]),
            status=rng.choice(["success", "success", "failed", "timeout", "cancelled"]),
            duration_ms=rng.choice([None, rng.randint(1, 100_000), rng.randint(1, 500)]),
            retry_count=rng.randint(0, 3),
            error_code=rng.choice([None, None, "E_TIMEOUT", "E_DOWN", "E_AUTH"]),
        )
        for _ in range(count)
    ]


def _errors(count: int) -> list[dict[str, Any]]:
    found = []
    for _ in range(count):
        kind = rng.randint(0, 7)
        found.append(
            row(
                error_logs,
                timestamp=_moment(),
                service_name=rng.choice(["api", "web"]),
                category=rng.choice(["api", "database"]),
                error_code=f"E{kind}",
                error_message=f"boom {kind}",
                fingerprint=f"{kind:032x}",
                user_id=rng.choice([None, "u1", "u2", "u3", "u4"]),
            )
        )
    return found


def _device_states(count: int) -> list[dict[str, Any]]:
    states = ["online", "offline", "maintenance", "error"]
    return [
        row(
            device_state_history,
            timestamp=_moment(),
            service_name=rng.choice(["agent", None]),
            device_id=f"dev_{rng.randint(1, 12):03d}",
            previous_state=rng.choice([None, *states]),
            new_state=rng.choice(states),
        )
        for _ in range(count)
    ]


def _activities(count: int) -> list[dict[str, Any]]:
    found = []
    for _ in range(count):
        kind = rng.choice(["page_view", "page_view", "click", "search"])
        found.append(
            row(
                user_activities,
                timestamp=_moment(),
                service_name=rng.choice(["web", None]),
                activity_type=kind,
                page_url=rng.choice(["/devices", "/sites", "/jobs", None]),
                session_id=rng.choice([None, *(f"s{n}" for n in range(15))]),
                user_id=rng.choice([None, "u1", "u2", "u3"]),
                duration_ms=rng.choice([None, rng.randint(1, 5000)]),
                search_query=rng.choice(["Pos ", "pos", "terminal", " "]) if kind == "search" else None,
            )
        )
    return found


@pytest.fixture(scope="module")
def stored(database_url: str, engine: Engine) -> Iterator[Engine]:
    """Random rows in the five tables, written by the writer, once per module, and the rollups
    refreshed (else every read would take the raw rows standing in for stale buckets)."""
    empty_tables(database_url)
    writer = RowWriter(database_url, stats=ExportStats())
    try:
        for _ in range(3):  # several batches: the rollups add up across transactions
            writer.write(
                {
                    api_request_logs.name: _requests(700),
                    job_outcomes.name: _jobs(300),
                    error_logs.name: _errors(300),
                    device_state_history.name: _device_states(300),
                    user_activities.name: _activities(400),
                }
            )
    finally:
        writer.close()
    with engine.connect() as conn:
        assert refresh(conn).buckets > 0  # the rollups up to date, as the service keeps them
    yield engine
    empty_tables(database_url)


def assert_same(from_rollups: Any, from_raw: Any, path: str = "") -> None:
    if isinstance(from_raw, dict):
        assert isinstance(from_rollups, dict) and from_rollups.keys() == from_raw.keys(), path
        for key in from_raw:
            if key in PERCENTILES and from_raw[key] is not None:
                assert from_rollups[key] == pytest.approx(from_raw[key], rel=0.01), f"{path}.{key}"
            else:
                assert_same(from_rollups[key], from_raw[key], f"{path}.{key}")
    elif isinstance(from_raw, list):
        assert isinstance(from_rollups, list) and len(from_rollups) == len(from_raw), path
        for index, (a, b) in enumerate(zip(from_rollups, from_raw, strict=True)):
            assert_same(a, b, f"{path}[{index}]")
    elif isinstance(from_raw, float | Decimal):  # an avg(): numeric from raw rows, float here
        assert float(from_rollups) == pytest.approx(float(from_raw), rel=1e-9), path
    else:
        assert from_rollups == from_raw, path


Summary = Callable[..., dict[str, Any]]


def compare(engine: Engine, summary: Callable[[Connection, bool], dict[str, Any]]) -> dict[str, Any]:
    with engine.connect() as conn:
        from_rollups, from_raw = summary(conn, True), summary(conn, False)
    assert_same(from_rollups, from_raw)
    return from_rollups


REQUEST_FILTERS: list[Callable[[], list[ColumnElement[bool]]]] = [
    lambda: [],
    lambda: [api_request_logs.c.service_name.in_(["api"])],
    lambda: [api_request_logs.c.method.in_(["POST"]), api_request_logs.c.route == "/devices"],
    lambda: [api_request_logs.c.status_code >= 400, api_request_logs.c.status_code <= 499],
    lambda: [api_request_logs.c.status_code >= 500],
]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("filters", REQUEST_FILTERS)
def test_request_summary(
    stored: Engine, window: TimeWindow, filters: Callable[[], list[ColumnElement[bool]]]
) -> None:
    assert rollup_reads.plan(REQUESTS, filters(), window) is not None, "the rollups answer it"
    found = compare(
        stored,
        lambda conn, rollups: summaries.request_summary(conn, filters(), window, 100, use_rollups=rollups),
    )
    assert found["total"]["count"] > 0 and found["routes"]
    # A limit cuts the same groups.
    compare(
        stored,
        lambda conn, rollups: summaries.request_summary(conn, filters(), window, 3, use_rollups=rollups),
    )


def test_filters_off_the_keys_read_raw_rows() -> None:
    window = WINDOWS[0]
    t = api_request_logs.c
    for filters in ([t.user_id == "u1"], [t.status_code == 404], [t.status_code >= 450], [t.route == ""]):
        assert rollup_reads.plan(REQUESTS, filters, window) is None
    short = TimeWindow(datetime(2025, 12, 5, 10, 1, tzinfo=UTC), datetime(2025, 12, 5, 10, 4, tzinfo=UTC))
    assert rollup_reads.plan(REQUESTS, [], short) is None


def test_split_covers_the_window_once() -> None:
    pieces = rollup_reads.split(WINDOWS[0])
    assert [(p.grain and p.grain.name, p.low, p.high) for p in pieces] == [
        (None, datetime(2025, 12, 5, 10, 3, 17, tzinfo=UTC), datetime(2025, 12, 5, 10, 5, tzinfo=UTC)),
        ("5m", datetime(2025, 12, 5, 10, 5, tzinfo=UTC), datetime(2025, 12, 5, 11, 0, tzinfo=UTC)),
        ("1h", datetime(2025, 12, 5, 11, 0, tzinfo=UTC), datetime(2025, 12, 6, 0, 0, tzinfo=UTC)),
        ("1d", datetime(2025, 12, 6, 0, 0, tzinfo=UTC), datetime(2025, 12, 7, 0, 0, tzinfo=UTC)),
        ("1h", datetime(2025, 12, 7, 0, 0, tzinfo=UTC), datetime(2025, 12, 7, 13, 0, tzinfo=UTC)),
        ("5m", datetime(2025, 12, 7, 13, 0, tzinfo=UTC), datetime(2025, 12, 7, 13, 55, tzinfo=UTC)),
        (None, datetime(2025, 12, 7, 13, 55, tzinfo=UTC), datetime(2025, 12, 7, 13, 58, 2, tzinfo=UTC)),
    ]
    pieces = rollup_reads.split(WINDOWS[1])
    assert [(p.grain and p.grain.name, p.low, p.high) for p in pieces] == [
        (None, datetime(2025, 12, 5, 10, 3, 17, tzinfo=UTC), datetime(2025, 12, 5, 10, 5, tzinfo=UTC)),
        ("5m", datetime(2025, 12, 5, 10, 5, tzinfo=UTC), datetime(2025, 12, 5, 11, 0, tzinfo=UTC)),
        ("1h", datetime(2025, 12, 5, 11, 0, tzinfo=UTC), datetime(2025, 12, 5, 13, 0, tzinfo=UTC)),
        ("5m", datetime(2025, 12, 5, 13, 0, tzinfo=UTC), datetime(2025, 12, 5, 13, 55, tzinfo=UTC)),
        (None, datetime(2025, 12, 5, 13, 55, tzinfo=UTC), datetime(2025, 12, 5, 13, 58, 2, tzinfo=UTC)),
    ]


JOB_FILTERS: list[Callable[[], list[ColumnElement[bool]]]] = [
    lambda: [],
    lambda: [job_outcomes.c.service_name.in_(["orchestrator"])],
    lambda: [job_outcomes.c.job_type == "restart"],
]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("filters", JOB_FILTERS)
def test_job_summary(
    stored: Engine, window: TimeWindow, filters: Callable[[], list[ColumnElement[bool]]]
) -> None:
    assert rollup_reads.plan(JOBS, filters(), window) is not None
    assert rollup_reads.plan(JOB_ERRORS, filters(), window) is not None
    found = compare(
        stored,
        lambda conn, rollups: summaries.job_summary(conn, filters(), window, 100, 2, use_rollups=rollups),
    )
    assert found["total"]["count"] > 0 and any(group["top_error_codes"] for group in found["job_types"])
    compare(
        stored,
        lambda conn, rollups: summaries.job_summary(conn, filters(), window, 2, 1, use_rollups=rollups),
    )
    # A status filter: rollup_job_errors has no status, so the whole summary reads raw rows.
    assert rollup_reads.plan(JOB_ERRORS, [job_outcomes.c.status.in_(["failed"])], window) is None


ERROR_FILTERS: list[Callable[[], list[ColumnElement[bool]]]] = [
    lambda: [],
    lambda: [error_logs.c.service_name.in_(["web"]), error_logs.c.category.in_(["database"])],
    lambda: [error_logs.c.fingerprint == f"{3:032x}"],
]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("filters", ERROR_FILTERS)
def test_error_summary(
    stored: Engine, window: TimeWindow, filters: Callable[[], list[ColumnElement[bool]]]
) -> None:
    assert rollup_reads.plan(ERRORS, filters(), window) is not None
    for limit in (100, 3):
        found = compare(
            stored,
            lambda conn, rollups, limit=limit: summaries.error_summary(
                conn, filters(), window, limit, use_rollups=rollups
            ),
        )
        assert found["groups"]


@pytest.mark.parametrize("window", WINDOWS)
def test_device_state_summary(stored: Engine, window: TimeWindow) -> None:
    for filters in ([], [device_state_history.c.new_state == "offline"]):
        assert rollup_reads.plan(DEVICE_STATES, filters, window) is not None
        for limit in (100, 4):
            found = compare(
                stored,
                lambda conn, rollups, filters=filters, limit=limit: summaries.device_state_summary(
                    conn, filters, window, limit, 5, use_rollups=rollups
                ),
            )
            assert found["transitions"] and found["devices"]


@pytest.mark.parametrize("window", WINDOWS)
def test_user_activity_summary(stored: Engine, window: TimeWindow) -> None:
    for filters in (
        [],
        [user_activities.c.service_name.in_(["web"])],
        [user_activities.c.activity_type == "page_view"],
    ):
        # A filter on the activity type: the searches rollup has no such key, its part reads raw rows.
        searched = not any("activity_type" in str(condition) for condition in filters)
        assert (rollup_reads.plan(SEARCHES, filters, window) is not None) == searched
        assert rollup_reads.plan(ACTIVITIES, filters, window) is not None
        for limit, top in ((100, 10), (2, 1)):
            found = compare(
                stored,
                lambda conn, rollups, filters=filters, limit=limit, top=top: summaries.user_activity_summary(
                    conn, filters, window, limit, top, use_rollups=rollups
                ),
            )
            assert found["activity_types"] and found["top_pages"]
            assert any(page["avg_duration_ms"] is not None for page in found["top_pages"])


def test_split_at_the_end_of_the_calendar_reads_raw_rows() -> None:
    last = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert rollup_reads.split(TimeWindow(last, None)) == [rollup_reads.Piece(None, last, None)]
