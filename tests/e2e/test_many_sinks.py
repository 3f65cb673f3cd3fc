"""Many sinks, one database: two ``homepot-analytics serve`` processes and a third with
``--workers 2``, started at once on a new database (their starts migrate and create partitions
concurrently), take OTLP and frontend intake traffic for the same tables at once, every request
also replayed to another sink (a collector retrying elsewhere). Every row is stored exactly once,
the time series (rollups) count each once, and no process meets a deadlock."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from bench.otlp_traffic import request_traces
from bench.sinks import Sink, start_sinks, stop_sinks
from homepot_foundation.settings import Settings
from query_api.app import create_app
from tests.conftest import JWT_SECRET
from tests.query_api.conftest import PREFIX, bearer
from tests.support.throwaway import throwaway_database

pytestmark = pytest.mark.slow

OTLP_REQUESTS = 24
SPANS_PER_REQUEST = 50
FAILING_EVERY = 5
INTAKE_BATCHES = 12
EVENTS_PER_BATCH = 40


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with throwaway_database("homepot_sinks") as url:
        yield url


@pytest.fixture(scope="module")
def sinks(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Sink]]:
    started = start_sinks(database_url, [1, 1, 2], tmp_path_factory.mktemp("sinks"))
    yield started
    stop_sinks(started)


def _activity_batch() -> list[dict[str, object]]:
    session = uuid.uuid4().hex
    moment = datetime.now(UTC) - timedelta(minutes=5)
    return [
        {
            "activity_type": "click" if n % 2 else "page_view",
            "page_url": f"/devices/{n % 7}",
            "session_id": session,
            "event_id": str(uuid.uuid4()),
            "timestamp": (moment + timedelta(seconds=n)).isoformat(),
        }
        for n in range(EVENTS_PER_BATCH)
    ]


def _count(database_url: str, query: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def test_sinks_store_every_row_once_under_concurrent_traffic(
    sinks: list[Sink], database_url: str, tmp_path: Path
) -> None:
    urls = [sink.base_url for sink in sinks]
    work: list[tuple[str, str, bytes]] = []  # (sink, path, body): every body twice, to two sinks
    for index in range(OTLP_REQUESTS):
        body, _ = request_traces(SPANS_PER_REQUEST, failing_every=FAILING_EVERY)
        raw = json.dumps(body).encode()
        work += [(urls[index % 3], "/v1/traces", raw), (urls[(index + 1) % 3], "/v1/traces", raw)]
    for index in range(INTAKE_BATCHES):
        raw = json.dumps(_activity_batch()).encode()
        path = "/api/v1/analytics/user-activities"
        work += [(urls[index % 3], path, raw), (urls[(index + 2) % 3], path, raw)]
    work.sort(key=lambda item: hash(item[2]) % 97)  # replays interleaved with first sends

    with httpx.Client(timeout=60, headers={"Content-Type": "application/json"}) as client:

        def send(item: tuple[str, str, bytes]) -> int:
            base_url, path, raw = item
            return client.post(base_url + path, content=raw).status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(send, work))
    assert sorted(set(statuses)) == [200, 202], statuses
    # The intake writes in the background: SIGTERM makes each process write what it holds
    # (uvicorn ends a single process with the signal once shut down, the supervisor with 0).
    assert stop_sinks(sinks) == [-signal.SIGTERM, -signal.SIGTERM, 0]
    logs = [Path(sink.log.name).read_text(errors="replace") for sink in sinks]
    assert [log.count("Application shutdown complete") for log in logs] == [1, 1, 2]

    spans = OTLP_REQUESTS * SPANS_PER_REQUEST
    assert _count(database_url, "SELECT count(*) FROM api_request_logs") == spans
    assert _count(database_url, "SELECT count(DISTINCT trace_id) FROM api_request_logs") == spans
    assert _count(database_url, "SELECT count(*) FROM error_logs") == spans // FAILING_EVERY
    assert _count(database_url, "SELECT count(*) FROM user_activities") == INTAKE_BATCHES * EVENTS_PER_BATCH
    # Each stored row counted once in what the time series read (the rollups), however the
    # writers raced: summed over the window at both rollup grains.
    settings = Settings(database_url=database_url, data_dir=tmp_path / "reader", jwt_secret=JWT_SECRET)
    window = {"start_date": (datetime.now(UTC) - timedelta(hours=2)).isoformat()}
    with TestClient(create_app(settings)) as reader:
        reader.headers.update(bearer(settings))
        for interval, source in (("5m", "rollup_5m"), ("1h", "rollup_1h")):
            for table, expected in (("requests", spans), ("errors", spans // FAILING_EVERY)):
                answer = reader.get(f"{PREFIX}/{table}/timeseries", params={**window, "interval": interval})
                assert answer.status_code == 200, answer.text
                assert answer.json()["source"] == source
                assert sum(point["count"] for point in answer.json()["series"][0]["points"]) == expected
    assert _count(database_url, "SELECT max(version) FROM homepot_analytics_schema_migrations") > 0
    assert not any("deadlock" in log.lower() or "Traceback" in log for log in logs)
