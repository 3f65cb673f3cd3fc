"""An app whose lifespan runs more than once in a process (HOMEPOT's test suite: one
``with TestClient(app)`` per test): each end flushes, the next start records on."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from exporter.stats import STATS
from homepot_foundation.settings import Settings
from instrumentation import record_device_state, setup_telemetry
from tests.conftest import fetch_rows


def test_three_lifespans_record_every_request_and_drop_nothing(db_url: str, tmp_path: Path) -> None:
    app = FastAPI()

    @app.get("/ping/{n}")
    def ping(n: int) -> dict[str, int]:
        record_device_state(f"dev-{n}", "online", "maintenance")
        return {"n": n}

    settings = Settings(database_url=db_url, data_dir=tmp_path / "data", export_delay_ms=50)
    telemetry = setup_telemetry(app, service_name="lifespans", settings=settings)
    dropped_before = STATS.total("dropped")
    try:
        for round_ in range(3):
            with TestClient(app) as client:
                for n in range(4):
                    assert client.get(f"/ping/{round_ * 10 + n}").status_code == 200
            # The lifespan's end flushed: this round's rows are there before the next start.
            assert len(fetch_rows(db_url, "api_request_logs")) == 4 * (round_ + 1)
            assert not telemetry.is_shut_down
    finally:
        telemetry.shutdown()
    paths = sorted(row["endpoint"] for row in fetch_rows(db_url, "api_request_logs"))
    assert paths == sorted(f"/ping/{r * 10 + n}" for r in range(3) for n in range(4))
    assert len(fetch_rows(db_url, "device_state_history")) == 12
    assert STATS.total("dropped") == dropped_before  # no after_shutdown drop, nor any other
