"""What the dashboard reads beside the summaries and time series: error group status (regression
detection), one group's page and its resolution, the devices whose jobs fail, sessions per day,
click targets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from exporter.rollups.refresh import refresh
from exporter.schema import api_request_logs, error_logs, job_outcomes, user_activities
from homepot_foundation.settings import Settings
from query_api.app import create_app
from query_api.error_status import NEW_FOR, status_of
from tests.conftest import fetch_rows
from tests.query_api.conftest import PREFIX, bearer
from tests.query_api.rows import NOON, insert_rows, row

FP = "f" * 32
OTHER_FP = "0" * 32
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
NOW = datetime.now(UTC).replace(microsecond=0)


def _at(minutes_ago: float) -> datetime:
    return NOW - timedelta(minutes=minutes_ago)


def _error(minutes_ago: float, fingerprint: str = FP, **values: Any) -> dict[str, Any]:
    values.setdefault("service_name", "api")
    values.setdefault("error_message", "Connection timeout")
    return row(error_logs, timestamp=_at(minutes_ago), fingerprint=fingerprint, **values)


def _window(hours: float = 2) -> dict[str, str]:
    # Whole hours in the middle: the summary reads the rollups there, raw rows at the edges.
    return {
        "start_date": (NOW - timedelta(hours=hours)).isoformat(),
        # From the clock, not NOW: the module may have been imported minutes before the test runs.
        "end_date": (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
    }


def _groups(client: TestClient, **params: Any) -> dict[str, dict[str, Any]]:
    response = client.get(f"{PREFIX}/errors/summary", params=_window() | params)
    assert response.status_code == 200, response.text
    return {group["fingerprint"]: group for group in response.json()["groups"]}


def _resolve(client: TestClient, fingerprint: str, resolved: bool, **params: Any) -> dict[str, Any]:
    response = client.patch(
        f"{PREFIX}/errors/groups/{fingerprint}", params=params, json={"resolved": resolved}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _refresh(engine: Engine) -> None:
    with engine.connect() as conn:
        refresh(conn)


@pytest.mark.parametrize("reading", ["rollups", "raw rows"])
def test_a_resolved_group_that_occurs_again_is_regressed(
    client: TestClient, engine: Engine, db_url: str, reading: str
) -> None:
    # severity is no rollup key: with it the summary reads raw rows; both readings must agree.
    filters = {"severity": "error"} if reading == "raw rows" else {}
    insert_rows(
        engine, error_logs, [_error(50, user_id="u1"), _error(40, user_id="u2"), _error(30, OTHER_FP)]
    )
    before = _groups(client, **filters)
    assert before[FP]["status"] == "new" and before[FP]["users"] == 2
    assert before[FP]["last_resolved_at"] is None

    assert _resolve(client, FP, True, service_name="api") == {
        "fingerprint": FP,
        "resolved": True,
        "updated": 2,
    }
    _refresh(engine)  # as the service does within seconds: the rollups then say it too
    resolved = _groups(client, **filters)
    assert resolved[FP]["status"] == "resolved" and resolved[FP]["unresolved"] == 0
    assert resolved[FP]["last_resolved_at"] is not None
    assert resolved[OTHER_FP]["status"] == "new", "only the group asked for is resolved"

    # It happens again, after the resolution: regressed.
    insert_rows(engine, error_logs, [_error(0) | {"timestamp": datetime.now(UTC)}])
    again = _groups(client, **filters)
    assert again[FP]["status"] == "regressed"
    assert again[FP]["unresolved"] == 1 and again[FP]["count"] == 3
    assert again[FP]["last_resolved_at"] == resolved[FP]["last_resolved_at"]

    # Reopened, it is an open group again (first seen minutes ago: new).
    assert _resolve(client, FP, False)["updated"] == 2  # the open one stays as it is
    _refresh(engine)
    reopened = _groups(client, **filters)
    assert reopened[FP]["status"] == "new" and reopened[FP]["last_resolved_at"] is None
    stored = [r for r in fetch_rows(db_url, "error_logs") if r["fingerprint"] == FP]
    assert not any(r["resolved"] or r["resolved_at"] for r in stored)


def test_a_regression_is_seen_when_the_resolution_lies_before_the_window(
    client: TestClient, engine: Engine
) -> None:
    insert_rows(engine, error_logs, [_error(60 * 30)])  # 30 hours ago
    _resolve(client, FP, True)
    insert_rows(engine, error_logs, [_error(0) | {"timestamp": datetime.now(UTC)}])
    last_hour = {
        "start_date": _at(60).isoformat(),
        "end_date": (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
    }
    response = client.get(f"{PREFIX}/errors/summary", params=last_hour)
    (group,) = response.json()["groups"]
    assert group["status"] == "regressed"
    assert group["first_seen_ever"] == _at(60 * 30).isoformat()


def test_a_group_open_for_longer_than_a_week_is_ongoing(client: TestClient, engine: Engine) -> None:
    insert_rows(engine, error_logs, [_error(60 * 24 * 8), _error(5)])
    (group,) = client.get(f"{PREFIX}/errors/summary", params=_window(hours=24 * 9)).json()["groups"]
    assert group["status"] == "ongoing"


def test_status_rules() -> None:
    now = NOW
    assert status_of(0, None, None, now, now) == "resolved"
    assert status_of(2, now, now - timedelta(hours=1), now, now) == "regressed"
    # An occurrence left open before the resolution (one row resolved by id) is no regression.
    assert status_of(1, now - timedelta(hours=2), now - timedelta(hours=1), now, now) == "new"
    assert status_of(1, now, None, now - NEW_FOR - timedelta(seconds=1), now) == "ongoing"


def test_a_group_page_has_the_stack_trace_occurrences_their_requests_and_traces(
    client: TestClient, engine: Engine, settings: Settings
) -> None:
    insert_rows(
        engine,
        api_request_logs,
        [
            row(
                api_request_logs,
                timestamp=_at(10),
                trace_id=TRACE,
                service_name="api",
                endpoint="/api/v1/reports/daily",
                route="/api/v1/reports/daily",
                status_code=500,
                response_time_ms=12.5,
            )
        ],
    )
    insert_rows(
        engine,
        error_logs,
        [
            _error(
                10, trace_id=TRACE, stack_trace="Traceback (most recent call last): ...", context={"a": 1}
            ),
            _error(5, stack_trace="Traceback: the latest"),
            _error(3, service_name="other"),  # the same fingerprint in another service: another group
        ],
    )
    configured = settings.model_copy(update={"jaeger_url": "http://jaeger:16686"})
    with TestClient(create_app(configured), headers=bearer(configured)) as jaeger_client:
        response = jaeger_client.get(
            f"{PREFIX}/errors/groups/{FP}", params=_window() | {"service_name": "api", "occurrences": 5}
        )
    assert response.status_code == 200, response.text
    group = response.json()
    assert group["service_name"] == "api" and group["count"] == 2 and group["status"] == "new"
    assert group["stack_trace"] == "Traceback: the latest"
    latest, first = group["occurrences"]
    assert latest["request"] is None and latest["trace_url"] is None
    assert first["trace_url"] == f"http://jaeger:16686/trace/{TRACE}"
    assert first["request"]["method"] == "GET" and first["request"]["status_code"] == 500
    assert first["request"]["endpoint"] == "/api/v1/reports/daily"
    assert first["request"]["response_time_ms"] == 12.5


def test_group_page_and_resolution_answer_404_and_422(client: TestClient, engine: Engine) -> None:
    insert_rows(engine, error_logs, [_error(5)])
    missing = client.get(f"{PREFIX}/errors/groups/{OTHER_FP}", params=_window())
    assert missing.status_code == 404 and OTHER_FP in missing.json()["detail"]
    outside = client.get(f"{PREFIX}/errors/groups/{FP}", params={"end_date": "2020-01-01"})
    assert outside.status_code == 404
    assert client.patch(f"{PREFIX}/errors/groups/{OTHER_FP}", json={"resolved": True}).status_code == 404
    assert client.patch(f"{PREFIX}/errors/groups/{FP}", json={"resolved": "yes"}).status_code == 422
    assert client.patch(f"{PREFIX}/errors/groups/{FP}", json={}).status_code == 422
    too_long = client.get(f"{PREFIX}/errors/groups/{'a' * 33}")
    assert too_long.status_code == 422
    assert client.get(f"{PREFIX}/errors/groups/{FP}", params={"occurrences": 0}).status_code == 422
    # Resolving twice keeps the first resolution and changes nothing the second time.
    assert _resolve(client, FP, True)["updated"] == 1
    assert _resolve(client, FP, True)["updated"] == 0


def test_error_groups_need_an_admin(anonymous: TestClient, settings: Settings) -> None:
    assert anonymous.get(f"{PREFIX}/errors/groups/{FP}").status_code == 401
    operator = bearer(settings, role="operator")
    assert (
        anonymous.patch(f"{PREFIX}/errors/groups/{FP}", json={"resolved": True}, headers=operator).status_code
        == 403
    )


def test_failing_devices(client: TestClient, engine: Engine) -> None:
    def job(minutes: float, device: str | None, status: str) -> dict[str, Any]:
        return row(job_outcomes, minutes, device_id=device, status=status, service_name="orchestrator")

    insert_rows(
        engine,
        job_outcomes,
        [
            job(0, "dev_1", "failed"),
            job(1, "dev_1", "timeout"),
            job(2, "dev_1", "success"),
            job(3, "dev_2", "failed"),
            job(4, "dev_2", "success"),
            job(5, "dev_2", "success"),
            job(6, "dev_3", "success"),
            job(7, "dev_4", "cancelled"),
            job(8, None, "failed"),
        ],
    )
    response = client.get(f"{PREFIX}/jobs/failing-devices", params={"start_date": "2025-12-05"})
    assert response.status_code == 200, response.text
    devices = response.json()["devices"]
    assert [(d["device_id"], d["jobs"], d["failures"]) for d in devices] == [("dev_1", 3, 2), ("dev_2", 3, 1)]
    assert devices[0]["failure_rate"] == pytest.approx(2 / 3)
    assert devices[0]["last_failed_at"] == (NOON + timedelta(minutes=1)).isoformat()
    assert (
        client.get(f"{PREFIX}/jobs/failing-devices", params={"top": 1}).json()["devices"][0]["device_id"]
        == "dev_1"
    )
    only = client.get(f"{PREFIX}/jobs/failing-devices", params={"job_type": "firmware_update"}).json()
    assert only["devices"] == []
    assert client.get(f"{PREFIX}/jobs/failing-devices", params={"top": 0}).status_code == 422


def test_sessions_per_day_and_click_targets(client: TestClient, engine: Engine) -> None:
    def activity(
        hours: float, session: str, user: str | None, kind: str = "page_view", **values: Any
    ) -> dict[str, Any]:
        return row(
            user_activities, hours * 60, session_id=session, user_id=user, activity_type=kind, **values
        )

    insert_rows(
        engine,
        user_activities,
        [
            activity(0, "s1", "u1"),
            activity(1, "s1", "u1", "click", element_id="save"),
            activity(2, "s2", "u1", "click", element_id="save"),
            activity(3, "s3", None, "click", element_id="cancel"),
            activity(24, "s4", "u2"),  # the next UTC day
            activity(25, "s4", "u2", "click"),  # no element: not a target
        ],
    )
    sessions = client.get(f"{PREFIX}/user-activities/sessions", params={"start_date": "2025-12-05"})
    assert sessions.status_code == 200, sessions.text
    assert sessions.json()["days"] == [
        {"day": "2025-12-05", "sessions": 3, "users": 1},
        {"day": "2025-12-06", "sessions": 1, "users": 1},
    ]
    targets = client.get(f"{PREFIX}/user-activities/click-targets").json()["targets"]
    assert [(t["element_id"], t["clicks"], t["sessions"]) for t in targets] == [
        ("save", 2, 2),
        ("cancel", 1, 1),
    ]
    narrowed = client.get(f"{PREFIX}/user-activities/sessions", params={"session_id": "s4"}).json()
    assert narrowed["days"] == [{"day": "2025-12-06", "sessions": 1, "users": 1}]
    assert client.get(f"{PREFIX}/user-activities/sessions", params={"top": 3}).status_code == 422
