"""A database shared with HOMEPOT: after ``create-tables`` HOMEPOT keeps inserting and reading.

The schema below is HOMEPOT's five analytics tables as its SQLAlchemy models define them
(brunel-opensim/homepot-client, ``backend/src/homepot/app/models/AnalyticsModel.py``: serial ids,
naive timestamps, JSON, ``provenance``, an integer ``device_state_history.device_id`` foreign
key to ``devices.id``, the indexes its ``index=True`` columns get), written here from those
definitions, with the few columns of ``devices`` and ``sites`` the test needs. HOMEPOT's inserts
are those its ORM emits: its own columns only (NULL for the ones it leaves unset), a naive UTC
``timestamp`` (``utc_now``) or an aware one, ``RETURNING id``; once as psycopg2 sends them (values
in the SQL text) and once as asyncpg does (typed parameters). Its reads are those of its
analytics endpoints, KPI export, context builder and purge.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from exporter.stats import ExportStats
from exporter.writer import RowWriter
from homepot_analytics.cli import app
from homepot_analytics.dataset_export import export_table
from homepot_foundation.settings import Settings
from query_api.app import create_app
from tests.conftest import JWT_SECRET
from tests.query_api.conftest import PREFIX, bearer
from tests.support.telemetry import (
    device_state_log,
    event_log,
    failing_request_span,
    job_span,
    request_span,
    rows_by_table,
)
from tests.support.throwaway import throwaway_database

HOMEPOT_DDL = """
CREATE TABLE sites (id SERIAL PRIMARY KEY, site_id VARCHAR(50) NOT NULL, name VARCHAR(100) NOT NULL);
CREATE TABLE devices (
    id SERIAL PRIMARY KEY, device_id VARCHAR(100) NOT NULL, name VARCHAR(100) NOT NULL,
    device_type VARCHAR(50) NOT NULL, status VARCHAR(20), lifecycle_state VARCHAR(20) NOT NULL,
    site_id INTEGER NOT NULL REFERENCES sites (id), created_at TIMESTAMP WITH TIME ZONE);
CREATE UNIQUE INDEX ix_devices_device_id ON devices (device_id);

CREATE TABLE api_request_logs (
    id SERIAL PRIMARY KEY, timestamp TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    endpoint VARCHAR(255) NOT NULL, method VARCHAR(10) NOT NULL, status_code INTEGER NOT NULL,
    response_time_ms FLOAT NOT NULL, user_id VARCHAR(255), ip_address VARCHAR(45),
    user_agent VARCHAR(500), error_message TEXT, request_size_bytes INTEGER, response_size_bytes INTEGER);
CREATE INDEX ix_api_request_logs_id ON api_request_logs (id);
CREATE INDEX ix_api_request_logs_timestamp ON api_request_logs (timestamp);
CREATE INDEX ix_api_request_logs_endpoint ON api_request_logs (endpoint);
CREATE INDEX ix_api_request_logs_user_id ON api_request_logs (user_id);
CREATE INDEX idx_timestamp_endpoint ON api_request_logs (timestamp, endpoint);
CREATE INDEX idx_status_code ON api_request_logs (status_code);

CREATE TABLE device_state_history (
    id SERIAL PRIMARY KEY, timestamp TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    device_id INTEGER NOT NULL REFERENCES devices (id), previous_state VARCHAR(50),
    new_state VARCHAR(50) NOT NULL, changed_by VARCHAR(255), reason VARCHAR(500), extra_data JSON,
    provenance VARCHAR(20));
CREATE INDEX ix_device_state_history_id ON device_state_history (id);
CREATE INDEX ix_device_state_history_timestamp ON device_state_history (timestamp);
CREATE INDEX ix_device_state_history_device_id ON device_state_history (device_id);
CREATE INDEX ix_device_state_history_provenance ON device_state_history (provenance);
CREATE INDEX idx_device_timestamp ON device_state_history (device_id, timestamp);

CREATE TABLE job_outcomes (
    id SERIAL PRIMARY KEY, timestamp TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    job_id VARCHAR(255) NOT NULL, job_type VARCHAR(100) NOT NULL, device_id VARCHAR(255),
    status VARCHAR(50) NOT NULL, duration_ms INTEGER, error_code VARCHAR(50), error_message TEXT,
    retry_count INTEGER, initiated_by VARCHAR(255), extra_data JSON, provenance VARCHAR(20));
CREATE INDEX ix_job_outcomes_id ON job_outcomes (id);
CREATE INDEX ix_job_outcomes_timestamp ON job_outcomes (timestamp);
CREATE INDEX ix_job_outcomes_job_id ON job_outcomes (job_id);
CREATE INDEX ix_job_outcomes_job_type ON job_outcomes (job_type);
CREATE INDEX ix_job_outcomes_device_id ON job_outcomes (device_id);
CREATE INDEX ix_job_outcomes_provenance ON job_outcomes (provenance);
CREATE INDEX idx_job_status ON job_outcomes (job_type, status);
CREATE INDEX idx_timestamp_status ON job_outcomes (timestamp, status);

CREATE TABLE error_logs (
    id SERIAL PRIMARY KEY, timestamp TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    category VARCHAR(50) NOT NULL, severity VARCHAR(20) NOT NULL, error_code VARCHAR(50),
    error_message TEXT NOT NULL, stack_trace TEXT, endpoint VARCHAR(255), user_id VARCHAR(255),
    context JSON, resolved BOOLEAN, resolved_at TIMESTAMP WITHOUT TIME ZONE, provenance VARCHAR(20));
CREATE INDEX ix_error_logs_id ON error_logs (id);
CREATE INDEX ix_error_logs_timestamp ON error_logs (timestamp);
CREATE INDEX ix_error_logs_category ON error_logs (category);
CREATE INDEX ix_error_logs_severity ON error_logs (severity);
CREATE INDEX ix_error_logs_error_code ON error_logs (error_code);
CREATE INDEX ix_error_logs_user_id ON error_logs (user_id);
CREATE INDEX ix_error_logs_resolved ON error_logs (resolved);
CREATE INDEX ix_error_logs_provenance ON error_logs (provenance);
CREATE INDEX idx_category_severity ON error_logs (category, severity);
CREATE INDEX idx_timestamp_category ON error_logs (timestamp, category);

CREATE TABLE user_activities (
    id SERIAL PRIMARY KEY, timestamp TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    user_id VARCHAR(255) NOT NULL, session_id VARCHAR(255), activity_type VARCHAR(50) NOT NULL,
    page_url VARCHAR(500), element_id VARCHAR(255), search_query TEXT, extra_data JSON,
    duration_ms INTEGER);
CREATE INDEX ix_user_activities_id ON user_activities (id);
CREATE INDEX ix_user_activities_timestamp ON user_activities (timestamp);
CREATE INDEX ix_user_activities_user_id ON user_activities (user_id);
CREATE INDEX ix_user_activities_session_id ON user_activities (session_id);
CREATE INDEX ix_user_activities_activity_type ON user_activities (activity_type);
CREATE INDEX idx_user_timestamp ON user_activities (user_id, timestamp);
CREATE INDEX idx_activity_type ON user_activities (activity_type);
"""

# The columns of each of HOMEPOT's models but the id: its ORM names each in an INSERT, NULL for
# those left unset (and none of ours).
MODEL_COLUMNS = {
    "api_request_logs": (
        "timestamp", "endpoint", "method", "status_code", "response_time_ms", "user_id", "ip_address",
        "user_agent", "error_message", "request_size_bytes", "response_size_bytes",
    ),
    "device_state_history": (
        "timestamp", "device_id", "previous_state", "new_state", "changed_by", "reason", "extra_data",
        "provenance",
    ),
    "job_outcomes": (
        "timestamp", "job_id", "job_type", "device_id", "status", "duration_ms", "error_code",
        "error_message", "retry_count", "initiated_by", "extra_data", "provenance",
    ),
    "error_logs": (
        "timestamp", "category", "severity", "error_code", "error_message", "stack_trace", "endpoint",
        "user_id", "context", "resolved", "resolved_at", "provenance",
    ),
    "user_activities": (
        "timestamp", "user_id", "session_id", "activity_type", "page_url", "element_id", "search_query",
        "extra_data", "duration_ms",
    ),
}  # fmt: skip
JSON_COLUMNS = {"extra_data", "context"}

# What create-tables must print about HOMEPOT's tables (one line each, among others).
EXPECTED_CHANGES = (
    "api_request_logs.timestamp: timestamp -> timestamptz",
    "device_state_history.extra_data: json -> jsonb",
    "error_logs.resolved_at: timestamp -> timestamptz",
    "api_request_logs: wider types, every value kept: id integer -> bigint, endpoint varchar(255) -> "
    "varchar(2048)",
    "device_state_history.device_id: kept as integer, not made varchar(255)",
    "user_activities.user_id: NOT NULL dropped",
    'job_outcomes: PRIMARY KEY (id) is now PRIMARY KEY (id, "timestamp")',
    "a naive timestamp inserted from now on is read in the session's TimeZone",
)


def utc_now() -> datetime:
    """HOMEPOT's default timestamp: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def orm_insert(conn: psycopg.Connection[Any], table: str, **values: Any) -> int:
    """An INSERT as HOMEPOT's ORM emits it for one new object of a model."""
    row = {name: values.get(name) for name in MODEL_COLUMNS[table]}
    if row["timestamp"] is None:
        row["timestamp"] = utc_now()  # the model's default
    if table == "job_outcomes" and "retry_count" not in values:
        row["retry_count"] = 0  # the model's Python-side default
    if table == "error_logs" and "resolved" not in values:
        row["resolved"] = False
    for name in JSON_COLUMNS & row.keys():
        if row[name] is not None:
            row[name] = json.dumps(row[name])  # SQLAlchemy's JSON type binds serialised text
    columns = ", ".join(f'"{name}"' for name in row)
    placeholders = ", ".join(["%s"] * len(row))
    inserted = conn.execute(
        f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) RETURNING {table}.id", tuple(row.values())
    ).fetchone()
    assert inserted is not None
    return int(inserted[0])


def provision(conn: psycopg.Connection[Any], device_id: str) -> int:
    """HOMEPOT's provisioning: the device, then its PENDING -> ACTIVE transition in the same
    transaction (``AgentService`` -> ``LifecycleService.transition``), one commit."""
    with conn.transaction():
        inserted = conn.execute(
            "INSERT INTO devices (device_id, name, device_type, status, lifecycle_state, site_id, "
            "created_at) VALUES (%s, %s, 'pos_terminal', 'unknown', 'pending', 1, %s) RETURNING devices.id",
            (device_id, f"Device {device_id}", datetime.now(UTC)),
        ).fetchone()
        assert inserted is not None
        key = int(inserted[0])
        conn.execute("UPDATE devices SET lifecycle_state = 'active' WHERE devices.id = %s", (key,))
        orm_insert(
            conn,
            "device_state_history",
            device_id=key,
            previous_state="pending",
            new_state="active",
            changed_by="user:admin@example.com",
            reason="Self-enrolment via provision endpoint",
            extra_data={"timestamp": datetime.now(UTC).isoformat()},
        )
    return key


OLD_ROWS_AT = datetime(2025, 6, 15, 9, 30)  # naive UTC, as HOMEPOT stores it


def _old_rows(conn: psycopg.Connection[Any]) -> None:
    """HOMEPOT's rows from before the adoption: they must all be kept."""
    conn.execute("INSERT INTO sites (site_id, name) VALUES ('site-1', 'Site 1')")
    conn.execute(
        "INSERT INTO devices (device_id, name, device_type, lifecycle_state, site_id) "
        "VALUES ('pos-terminal-001', 'Till 1', 'pos_terminal', 'active', 1)"
    )
    at = OLD_ROWS_AT
    orm_insert(
        conn,
        "api_request_logs",
        timestamp=at,
        endpoint="/api/v1/sites",
        method="GET",
        status_code=200,
        response_time_ms=12.5,
        user_id="admin@example.com",
    )
    orm_insert(
        conn,
        "device_state_history",
        timestamp=at,
        device_id=1,
        previous_state="online",
        new_state="offline",
        changed_by="system",
        reason="Health check: timeout",
        extra_data={"response_time_ms": 5000},
        provenance="simulated",
    )
    orm_insert(
        conn,
        "job_outcomes",
        timestamp=at,
        job_id="job-1",
        job_type="restart",
        device_id="pos-terminal-001",
        status="success",
        duration_ms=1200,
        initiated_by="orchestrator",
        extra_data={"segment": "all"},
    )
    orm_insert(
        conn,
        "error_logs",
        timestamp=at,
        category="external_service",
        severity="critical",
        error_message="Job processing failed critically",
        context={"job_id": "job-1"},
        resolved=True,
        resolved_at=at + timedelta(hours=1),
    )
    orm_insert(
        conn,
        "user_activities",
        timestamp=at,
        user_id="admin@example.com",
        activity_type="page_view",
        page_url="/dashboard",
        duration_ms=1500,
    )


def _homepot_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    """HOMEPOT's view of its tables: its model's columns of every row, timestamps in UTC."""
    found: dict[str, list[dict[str, Any]]] = {}
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        for table, columns in MODEL_COLUMNS.items():
            names = ", ".join(f'"{name}"' for name in ("id", *columns))
            cursor.execute(f"SELECT {names} FROM {table} ORDER BY id")
            rows = list(cursor.fetchall())
            for row in rows:
                for name, value in row.items():
                    if isinstance(value, datetime):
                        row[name] = value.replace(tzinfo=UTC) if value.tzinfo is None else value
            found[table] = rows
    return found


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[str, str, dict[str, list[dict[str, Any]]]]]:
    """HOMEPOT's database with rows, adopted by ``create-tables``: its URL, what the command
    printed, and HOMEPOT's rows as they were before."""
    with throwaway_database("homepot_shared") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(HOMEPOT_DDL)
            _old_rows(conn)
        before = _homepot_rows(url)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HOMEPOT_ANALYTICS_DATABASE_URL", url)
            from homepot_foundation.settings import get_settings

            get_settings.cache_clear()
            try:
                result = CliRunner().invoke(app, ["create-tables"])
            finally:
                get_settings.cache_clear()
        assert result.exit_code == 0, result.output
        yield url, result.stdout, before  # printed by the command, not the log lines on stderr


# --- the adoption -------------------------------------------------------------------------------------
def test_create_tables_prints_every_change_to_homepots_tables(
    shared: tuple[str, str, dict[str, list[dict[str, Any]]]],
) -> None:
    _, output, _ = shared
    assert "Changed in the tables that were already there:" in output
    for change in EXPECTED_CHANGES:
        assert change in output, change
    for table in MODEL_COLUMNS:
        assert f'{table}: PRIMARY KEY (id) is now PRIMARY KEY (id, "timestamp")' in output


def test_every_old_row_is_kept_and_homepots_keys_and_indexes_stay(
    shared: tuple[str, str, dict[str, list[dict[str, Any]]]],
) -> None:
    url, _, before = shared
    after = _homepot_rows(url)
    for table, rows in before.items():
        assert len(rows) == 1
        assert after[table][: len(rows)] == rows, table  # later tests only add rows after these
    with psycopg.connect(url) as conn:
        kinds = dict(
            conn.execute(
                "SELECT relname, relkind FROM pg_class WHERE relname = ANY(%s)", (list(MODEL_COLUMNS),)
            ).fetchall()
        )
        foreign_keys = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'device_state_history'::regclass AND contype = 'f'"
        ).fetchall()
        device_id_type = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'device_state_history'::regclass AND attname = 'device_id'"
        ).fetchone()
        indexes = {
            name
            for (name,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = ANY(%s)", (list(MODEL_COLUMNS),)
            ).fetchall()
        }
        defaults = conn.execute(
            "SELECT DISTINCT column_default FROM information_schema.columns "
            "WHERE table_name = ANY(%s) AND column_name = 'event_id'",
            (list(MODEL_COLUMNS),),
        ).fetchall()
    assert set(kinds.values()) == {"p"}  # every table partitioned by month
    assert foreign_keys == [("FOREIGN KEY (device_id) REFERENCES devices(id)",)]
    assert device_id_type == ("integer",)
    assert {"idx_device_timestamp", "idx_timestamp_endpoint", "ix_user_activities_session_id"} <= indexes
    assert defaults == [("gen_random_uuid()",)]


# --- HOMEPOT writing -----------------------------------------------------------------------------------
BINDINGS = {
    "psycopg2": psycopg.ClientCursor,  # values in the SQL text, as HOMEPOT's sync sessions send them
    "asyncpg": psycopg.Cursor,  # typed parameters, as its async sessions send them
}


@pytest.mark.parametrize("binding", list(BINDINGS))
def test_homepot_inserts_into_all_five_tables_still_succeed(
    shared: tuple[str, str, dict[str, list[dict[str, Any]]]], binding: str
) -> None:
    url, _, _ = shared
    device = f"pos-{binding}-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(url, cursor_factory=BINDINGS[binding]) as conn:
        key = provision(conn, device)  # device and its state change in one transaction
        with conn.transaction():  # the request logger (middleware), naive default timestamp
            orm_insert(
                conn,
                "api_request_logs",
                endpoint="/api/v1/agents/provision",
                method="POST",
                status_code=201,
                response_time_ms=35.2,
                user_id="admin@example.com",
                ip_address="10.0.0.7",
                user_agent="pytest",
            )
        with conn.transaction():  # the health check agent: naive utcnow, integer device key
            orm_insert(
                conn,
                "device_state_history",
                timestamp=utc_now(),
                device_id=key,
                previous_state="online",
                new_state="offline",
                changed_by="system",
                reason="Health check: unhealthy",
                provenance="simulated",
                extra_data={"health_status": "unhealthy"},
            )
        with conn.transaction():  # the orchestrator
            orm_insert(
                conn,
                "job_outcomes",
                timestamp=utc_now(),
                job_id=f"job-{device}",
                job_type="restart",
                status="failed",
                duration_ms=0,
                error_code="exception",
                error_message="boom",
                initiated_by="orchestrator",
                extra_data={"exception_type": "RuntimeError"},
            )
        with conn.transaction():  # the analytics endpoints: aware timestamps
            orm_insert(
                conn,
                "error_logs",
                timestamp=datetime.now(UTC),
                category="api",
                severity="error",
                error_message=f"failed for {device}",
                user_id="admin@example.com",
                context={"original_device_id": device},
            )
            orm_insert(
                conn,
                "user_activities",
                timestamp=datetime.now(UTC),
                user_id="admin@example.com",
                session_id=device,
                activity_type="click",
                element_id="button_export",
            )
            orm_insert(
                conn,
                "job_outcomes",
                timestamp=datetime.now(UTC),
                job_id=f"job2-{device}",
                job_type="health_check",
                device_id=device,
                status="success",
                retry_count=None,
            )
        history = conn.execute(
            "SELECT previous_state, new_state, event_id IS NOT NULL FROM device_state_history "
            "WHERE device_id = %s ORDER BY timestamp",
            (key,),
        ).fetchall()
    assert history == [("pending", "active", True), ("online", "offline", True)]


# --- HOMEPOT reading, beside the exporter's rows ---------------------------------------------------------
def test_the_exporter_writes_beside_homepot_and_homepots_readers_still_answer(
    shared: tuple[str, str, dict[str, list[dict[str, Any]]]],
) -> None:
    url, _, _ = shared
    device = f"pos-reader-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(url, cursor_factory=psycopg.ClientCursor) as conn:
        key = provision(conn, device)
    stats = ExportStats()
    writer = RowWriter(url, stats=stats)
    activity = event_log("homepot.user_activity", **{"homepot.activity.type": "page_view"})
    batch = rows_by_table(
        request_span("/api/v1/devices"),
        failing_request_span("/api/v1/jobs"),
        job_span(None, **{"homepot.device.id": device}),
        device_state_log(device),  # HOMEPOT's device id: stored as its key
        device_state_log(str(key)),  # a number that is the device's key
        device_state_log("no-such-device"),  # cannot be stored in HOMEPOT's table
        activity,  # no user: the column HOMEPOT had NOT NULL takes it
    )
    try:
        assert writer.write(batch) == 7  # all but the unknown device's state change
        assert writer.write(batch) == 0  # a replay: each row stored once
    finally:
        writer.close()
    assert stats.get("rejected", "device_state_history") == 2  # once per write
    cutoff = datetime.now(UTC) - timedelta(days=3650)  # the telemetry's rows are from 2025
    with psycopg.connect(url, cursor_factory=psycopg.ClientCursor) as conn:
        # /metrics/device-state-history/{device_id}: the device's key, newest first.
        history = conn.execute(
            "SELECT timestamp, previous_state, new_state, changed_by, reason, extra_data "
            "FROM device_state_history WHERE device_state_history.device_id = %s "
            "AND device_state_history.timestamp >= %s "
            "ORDER BY device_state_history.timestamp DESC LIMIT 1000",
            (key, cutoff),
        ).fetchall()
        # Device.state_history (the ORM relationship), and its KPI export's window with naive bounds.
        related = conn.execute(
            "SELECT count(*) FROM device_state_history WHERE %s = device_state_history.device_id", (key,)
        ).fetchone()
        kpi = conn.execute(
            "SELECT count(*) FROM device_state_history WHERE device_state_history.timestamp >= %s "
            "AND device_state_history.timestamp <= %s AND device_state_history.device_id IN (%s, %s)",
            (cutoff.replace(tzinfo=None), utc_now() + timedelta(minutes=1), key, 1),
        ).fetchone()
        # /analytics/dashboard-metrics: offline events and critical errors.
        conn.execute(
            "SELECT id, device_id, timestamp FROM device_state_history WHERE new_state = 'offline' "
            "ORDER BY timestamp DESC LIMIT 5"
        ).fetchall()
        errors = conn.execute(
            "SELECT id, error_message, timestamp FROM error_logs WHERE severity IN ('critical', 'error') "
            "ORDER BY timestamp DESC LIMIT 5"
        ).fetchall()
        # /metrics/api-performance, /metrics/job-outcomes, /metrics/error-trends.
        performance = conn.execute(
            "SELECT endpoint, count(id), avg(response_time_ms), max(response_time_ms), min(response_time_ms) "
            "FROM api_request_logs WHERE timestamp >= %s GROUP BY endpoint",
            (cutoff,),
        ).fetchall()
        outcomes = conn.execute(
            "SELECT job_type, status, count(id), avg(duration_ms) FROM job_outcomes "
            "WHERE timestamp >= %s GROUP BY job_type, status",
            (cutoff,),
        ).fetchall()
        trends = conn.execute(
            "SELECT category, severity, count(id) FROM error_logs WHERE timestamp >= %s "
            "GROUP BY category, severity",
            (cutoff,),
        ).fetchall()
        # /analytics/user-activities and /analytics/api-requests.
        activities = conn.execute(
            "SELECT id, timestamp, user_id, activity_type FROM user_activities "
            "ORDER BY timestamp DESC LIMIT 100"
        ).fetchall()
        requests = conn.execute(
            "SELECT id, timestamp, method, endpoint, status_code FROM api_request_logs "
            "WHERE endpoint = %s ORDER BY timestamp DESC LIMIT 100",
            ("/api/v1/devices",),
        ).fetchall()
        # Its agent logs: error rows by the device id kept in their JSON context.
        by_context = conn.execute(
            "SELECT count(*) FROM error_logs WHERE CAST((error_logs.context -> %s) AS VARCHAR) = %s",
            ("job_id", '"job-1"'),
        ).fetchone()
        # Purging the device: its state history by key, then the device (the foreign key holds).
        with conn.transaction():
            purge = conn.execute("DELETE FROM device_state_history WHERE device_id IN (%s)", (key,))
            deleted = purge.rowcount
            conn.execute("DELETE FROM devices WHERE id = %s", (key,))
    assert [row[1:3] for row in history] == [("pending", "active"), (None, "online"), (None, "online")]
    assert all(row[0].tzinfo is not None for row in history)
    assert isinstance(history[0][5], dict) and "timestamp" in history[0][5]  # jsonb reads as a dict
    assert related == (3,) and kpi == (4,)
    assert any(message == "Job processing failed critically" for _, message, _ in errors)
    assert ("/api/v1/devices", 1) in [row[:2] for row in performance]
    assert ("restart", "success", 2) in [row[:3] for row in outcomes]  # HOMEPOT's old row and ours
    assert ("external_service", "critical", 1) in trends
    assert None in [user for _, _, user, _ in activities]  # the exporter's row without a user
    assert len(requests) == 1 and by_context == (1,)
    assert deleted == 3


def test_homepots_foreign_key_still_refuses_an_unknown_device(
    shared: tuple[str, str, dict[str, list[dict[str, Any]]]],
) -> None:
    url, _, _ = shared
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.ForeignKeyViolation):
        orm_insert(conn, "device_state_history", device_id=999_999, new_state="online")


# --- this project's readers on HOMEPOT's integer device key ------------------------------------------------
def test_the_query_api_and_the_export_read_homepots_device_key_as_text(
    shared: tuple[str, str, dict[str, list[dict[str, Any]]]], tmp_path: Path
) -> None:
    url, _, _ = shared
    with psycopg.connect(url) as conn:
        key = provision(conn, f"pos-api-{uuid.uuid4().hex[:6]}")
    settings = Settings(database_url=url, data_dir=tmp_path / "data", jwt_secret=JWT_SECRET)
    window = {"start_date": "2025-01-01"}
    with TestClient(create_app(settings)) as client:
        client.headers.update(bearer(settings))
        listed = client.get(f"{PREFIX}/device-states", params={**window, "device_id": str(key)})
        by_text_id = client.get(f"{PREFIX}/device-states", params={**window, "device_id": "pos-terminal-001"})
        summary = client.get(f"{PREFIX}/device-states/summary", params=window)
    assert listed.status_code == 200, listed.text
    assert [(row["device_id"], row["new_state"]) for row in listed.json()["data"]] == [(str(key), "active")]
    assert by_text_id.status_code == 200 and by_text_id.json()["data"] == []  # the key is what is stored
    assert summary.status_code == 200, summary.text
    assert str(key) in [group["device_id"] for group in summary.json()["devices"]]
    out = tmp_path / "states.jsonl"
    export_table(
        url,
        settings,
        "device_state_history",
        OLD_ROWS_AT.replace(tzinfo=UTC),
        datetime.now(UTC) + timedelta(days=1),
        "jsonl",
        out,
    )
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported and all(isinstance(row["device_id"], str) for row in exported)
