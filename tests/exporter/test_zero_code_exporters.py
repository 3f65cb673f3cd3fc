"""The zero-code exporters as the SDK's configurator builds them: no arguments, one shared
pipeline, drops counted by our processor, the pipeline shut down with the last exporter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
    delivery = spans._processor._batch_processor._exporter._delivery  # type: ignore[attr-defined]
    assert logs._processor._batch_processor._exporter._delivery is delivery  # type: ignore[attr-defined]
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
