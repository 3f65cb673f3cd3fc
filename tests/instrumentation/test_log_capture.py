"""Python logging into error_logs: the developer's message, the exception in its own places, the
request's endpoint and trace, breadcrumbs; never our own messages, never twice, masked."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from homepot_foundation.settings import Settings
from instrumentation import Telemetry, setup_telemetry
from instrumentation.log_capture import mark_recorded
from tests.conftest import fetch_rows

app_logger = logging.getLogger("homepot_app.devices")


def build(db_url: str, tmp_path: Path, **options: Any) -> tuple[FastAPI, Telemetry]:
    app = FastAPI()

    @app.get("/devices/{device_id}")
    def device(device_id: str) -> dict[str, str]:
        app_logger.info("looking up %s", device_id)
        app_logger.warning("cache cold for %s", device_id)
        app_logger.error("device %s unreachable", device_id)
        return {"device_id": device_id}

    @app.get("/lookup")
    def lookup() -> dict[str, str]:
        try:
            return {"value": {}["absent"]}
        except KeyError:
            app_logger.exception("lookup failed")
        return {"value": "default"}

    @app.get("/login")
    def login() -> dict[str, str]:
        app_logger.error("login failed for bob password=hunter2secret")
        return {}

    settings = Settings(database_url=db_url, data_dir=tmp_path / "data", export_delay_ms=50, **options)
    return app, setup_telemetry(app, service_name="logging-app", settings=settings)


@pytest.fixture()
def info_logging() -> Iterator[None]:
    """An app that logs at INFO (breadcrumbs come from what the app lets through)."""
    app_logger.setLevel(logging.INFO)
    yield
    app_logger.setLevel(logging.NOTSET)


def call(app: FastAPI, telemetry: Telemetry, *paths: str) -> None:
    try:
        with TestClient(app) as client:
            for path in paths:
                assert client.get(path).status_code == 200
    finally:
        telemetry.shutdown()


def errors(db_url: str) -> list[dict[str, Any]]:
    rows = fetch_rows(db_url, "error_logs")
    for row in rows:
        row["context"] = json.loads(row["context"]) if isinstance(row["context"], str) else row["context"]
    return rows


def test_a_logged_error_becomes_a_row_of_its_request(db_url: str, tmp_path: Path, info_logging: None) -> None:
    app, telemetry = build(db_url, tmp_path)
    call(app, telemetry, "/devices/dev-9")
    (row,) = errors(db_url)
    (request,) = fetch_rows(db_url, "api_request_logs")
    assert row["error_message"] == "device dev-9 unreachable"  # the developer's message
    assert (row["severity"], row["category"], row["error_code"]) == ("error", "other", None)
    assert row["endpoint"] == "/devices/dev-9"
    assert row["trace_id"] == request["trace_id"]
    assert row["context"]["logger"] == "homepot_app.devices"
    assert row["context"]["breadcrumbs"] == [
        "INFO homepot_app.devices: looking up dev-9",
        "WARNING homepot_app.devices: cache cold for dev-9",
    ]


def test_a_logged_error_carries_the_user_of_its_request(db_url: str, tmp_path: Path) -> None:
    """The user is known only once the request is done (the resolver runs at its end); the row
    takes it from its request row when that is written (exporter/trace_links.py)."""
    import jwt

    app, telemetry = build(db_url, tmp_path)
    token = jwt.encode({"sub": "operator-4"}, "an-app-secret-long-enough-for-hs256!", "HS256")
    try:
        with TestClient(app) as client:
            headers = {"Authorization": f"Bearer {token}"}
            assert client.get("/devices/dev-3", headers=headers).status_code == 200
    finally:
        telemetry.shutdown()
    (row,) = errors(db_url)
    (request,) = fetch_rows(db_url, "api_request_logs")
    assert request["user_id"] is not None
    assert row["user_id"] == request["user_id"]


def test_an_exception_logged_keeps_message_type_and_stack_apart(db_url: str, tmp_path: Path) -> None:
    app, telemetry = build(db_url, tmp_path)
    call(app, telemetry, "/lookup")
    (row,) = errors(db_url)
    assert row["error_message"] == "lookup failed"
    assert row["error_code"] == "KeyError"
    assert row["context"]["exception_message"] == "'absent'"
    assert "Traceback" in row["stack_trace"] and "KeyError: 'absent'" in row["stack_trace"]


def test_secrets_in_logged_text_are_masked(db_url: str, tmp_path: Path) -> None:
    app, telemetry = build(db_url, tmp_path)
    call(app, telemetry, "/login")
    (row,) = errors(db_url)
    assert "hunter2secret" not in row["error_message"] and "[REDACTED]" in row["error_message"]


def test_off_records_nothing_and_warning_records_more(db_url: str, tmp_path: Path) -> None:
    app, telemetry = build(db_url, tmp_path, log_capture_level="OFF")
    call(app, telemetry, "/devices/a")
    assert errors(db_url) == []
    app, telemetry = build(db_url, tmp_path, log_capture_level="warning")
    call(app, telemetry, "/devices/b")
    assert sorted(row["severity"] for row in errors(db_url)) == ["error", "warning"]


def test_our_own_messages_and_exceptions_already_on_a_span_make_no_row(db_url: str, tmp_path: Path) -> None:
    app = FastAPI()

    @app.get("/twice")
    def twice() -> dict[str, str]:
        logging.getLogger("exporter.delivery").error("the exporter talking about itself")
        error = RuntimeError("already on the request span")
        mark_recorded(error)  # as the middleware does when it records an exception
        try:
            raise error
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        return {}

    settings = Settings(database_url=db_url, data_dir=tmp_path / "data", export_delay_ms=50)
    call(app, setup_telemetry(app, service_name="logging-app", settings=settings), "/twice")
    assert errors(db_url) == []


def test_a_wrong_level_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="use CRITICAL, ERROR, WARNING or OFF"):
        Settings(log_capture_level="LOUD")
