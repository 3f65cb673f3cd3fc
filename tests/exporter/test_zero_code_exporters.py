"""The zero-code exporters as the SDK's configurator builds them: no arguments, one shared
pipeline, drops counted by our processor, the pipeline shut down with the last exporter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource

from exporter import zero_code
from exporter.zero_code import ZeroCodeLogExporter, ZeroCodeSpanExporter
from homepot_foundation.settings import get_settings
from tests.conftest import fetch_rows
from tests.support.telemetry import device_state_log, request_span


@pytest.fixture()
def process_settings(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HOMEPOT_ANALYTICS_DATABASE_URL", db_url)
    monkeypatch.setenv("HOMEPOT_ANALYTICS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OTEL_SERVICE_NAME", "zero-code-unit")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_both_exporters_share_one_pipeline_that_ends_with_the_last(
    db_url: str, process_settings: None
) -> None:
    spans, logs = ZeroCodeSpanExporter(), ZeroCodeLogExporter()
    # One export worker for both (the default HOMEPOT_ANALYTICS_EXPORT_WORKER=process).
    assert spans._processor.link is logs._processor.link  # type: ignore[union-attr]
    assert spans.export([request_span("/zero", 200, **{"enduser.id": "bob"})]).name == "SUCCESS"
    assert logs.export([device_state_log()]).name == "SUCCESS"
    assert spans.force_flush() and logs.force_flush()
    spans.shutdown()
    assert zero_code._SHARED._pipeline is not None  # still running for the log exporter
    logs.shutdown()
    assert zero_code._SHARED._pipeline is None  # shut down with the last exporter
    (row,) = fetch_rows(db_url, "api_request_logs")
    assert row["endpoint"] == "/zero" and row["user_id"].startswith("u_")  # the privacy default
    assert len(fetch_rows(db_url, "device_state_history")) == 1
    assert spans.export([request_span()]).name == "FAILURE"  # after shutdown: refused, not lost silently


def _plain_log(severity: SeverityNumber, body: str) -> ReadableLogRecord:
    record = LogRecord(timestamp=time.time_ns(), severity_number=severity, body=body)
    return ReadableLogRecord(log_record=record, resource=Resource.create({}))


@pytest.mark.parametrize(
    ("level", "stored"),
    [
        ("ERROR", ["disk full", "db gone"]),
        ("WARNING", ["cache cold", "disk full", "db gone"]),
        ("CRITICAL", ["db gone"]),
        ("OFF", []),
    ],
)
def test_plain_logging_records_become_errors_from_the_capture_level(
    db_url: str, process_settings: None, monkeypatch: pytest.MonkeyPatch, level: str, stored: list[str]
) -> None:
    monkeypatch.setenv("HOMEPOT_ANALYTICS_LOG_CAPTURE_LEVEL", level)
    get_settings.cache_clear()
    logs = ZeroCodeLogExporter()
    records = [
        _plain_log(SeverityNumber.INFO, "started"),
        _plain_log(SeverityNumber.WARN, "cache cold"),
        _plain_log(SeverityNumber.ERROR, "disk full"),
        _plain_log(SeverityNumber.FATAL, "db gone"),
        device_state_log(),  # an event of ours: kept at every level
    ]
    assert logs.export(records).name == "SUCCESS"
    logs.shutdown()
    assert sorted(row["error_message"] for row in fetch_rows(db_url, "error_logs")) == sorted(stored)
    assert len(fetch_rows(db_url, "device_state_history")) == 1
