"""The main job: `homepot-analytics demo` fills all five tables and says so."""

from __future__ import annotations

import pytest

from homepot_analytics.demo import run_demo
from homepot_foundation.settings import Settings
from tests.conftest import fetch_rows


def test_demo_fills_all_five_tables_and_prints_a_summary(
    settings: Settings, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    counts = run_demo(requests=120, settings=settings)
    assert counts["api_request_logs"] == 120, "every request the demo made is stored"
    assert all(counts[table] > 0 for table in counts), counts
    statuses = {row["status_code"] for row in fetch_rows(db_url, "api_request_logs")}
    assert {200, 404, 500} <= statuses
    job_statuses = {row["status"] for row in fetch_rows(db_url, "job_outcomes")}
    assert {"success", "failed"} <= job_statuses
    output = capsys.readouterr().out
    for table in counts:
        assert f"{table}: {counts[table]} rows" in output
