"""The PostgreSQL exporters as a user wires them by hand: the privacy policy applies by default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.delivery import Delivery
from exporter.exporters import PostgresLogExporter, PostgresSpanExporter
from exporter.writer import RowWriter
from homepot_foundation.settings import get_settings
from tests.conftest import fetch_rows
from tests.support.telemetry import event_log, request_span


@pytest.fixture()
def process_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process settings of a deployment that configured nothing about privacy."""
    monkeypatch.setenv("HOMEPOT_ANALYTICS_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_hand_wired_exporters_store_pseudonyms_and_truncated_ips(db_url: str, process_settings: None) -> None:
    delivery = Delivery(RowWriter(db_url), None)
    spans = PostgresSpanExporter(delivery)  # no privacy argument: the process's policy
    logs = PostgresLogExporter(delivery)
    span = request_span("/p", 200, **{"enduser.id": "alice@example.com", "client.address": "203.0.113.77"})
    record = event_log("homepot.user_activity", **{"enduser.id": "alice@example.com"})
    try:
        spans.export([span])
        logs.export([record])
        assert spans.force_flush() and logs.force_flush()
    finally:
        delivery.shutdown()
    (request,) = fetch_rows(db_url, "api_request_logs")
    (activity,) = fetch_rows(db_url, "user_activities")
    assert request["user_id"].startswith("u_") and "alice" not in request["user_id"]
    assert request["ip_address"] == "203.0.113.0"
    assert activity["user_id"] == request["user_id"]  # one pseudonym for one user, in every table
