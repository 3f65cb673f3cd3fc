"""Reads on a streaming replica: a real primary and hot standby of this machine's PostgreSQL 15.

The service writes (OTLP sink, resolve) to the primary and reads through the replica; a replica
that is behind or down answers reads with 503 and ``Retry-After``, while writes go on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from bench.otlp_traffic import request_traces
from homepot_foundation.settings import Settings
from query_api.app import create_app
from query_api.replica_lag import CHECK_INTERVAL_S
from tests.conftest import JWT_SECRET
from tests.query_api.conftest import PREFIX, bearer
from tests.support.local_clusters import Cluster, primary_and_replica, wait_replayed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[Cluster, Cluster]]:
    with primary_and_replica() as pair:
        yield pair


def _service(clusters: tuple[Cluster, Cluster], tmp_path: Path, max_lag_ms: int) -> TestClient:
    primary, replica = clusters
    settings = Settings(
        database_url=primary.url("postgres"),
        read_database_url=replica.url("postgres"),
        read_max_lag_ms=max_lag_ms,
        data_dir=tmp_path / "data",
        jwt_secret=JWT_SECRET,
        export_delay_ms=50,
    )
    client = TestClient(create_app(settings))
    client.headers.update(bearer(settings))
    return client


def _send(client: TestClient, count: int = 3) -> list[str]:
    body, trace_ids = request_traces(count, failing_every=count)
    response = client.post("/v1/traces", json=body)
    assert response.status_code == 200, response.text
    return trace_ids


def _requests_of(client: TestClient, trace_id: str) -> list[dict[str, object]]:
    response = client.get(f"{PREFIX}/requests", params={"trace_id": trace_id})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _on_primary(primary: Cluster, trace_id: str) -> int:
    with psycopg.connect(primary.url("postgres")) as conn:
        query = "SELECT count(*) FROM api_request_logs WHERE trace_id = %s"
        row = conn.execute(query, (trace_id,)).fetchone()
    return int(row[0]) if row else 0


def _pause_replay(replica: Cluster, paused: bool) -> None:
    with psycopg.connect(replica.admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")


def test_writes_go_to_the_primary_and_reads_come_from_the_replica(
    clusters: tuple[Cluster, Cluster], tmp_path: Path
) -> None:
    primary, replica = clusters
    with _service(clusters, tmp_path, max_lag_ms=3_600_000) as client:
        first, *_ = _send(client)
        wait_replayed(primary, replica)
        (row,) = _requests_of(client, first)
        assert row["status_code"] == 500

        # Replay paused: a row the sink has just stored on the primary is not seen yet, so the
        # read really came from the replica (lag under the bound: it may answer).
        _pause_replay(replica, True)
        try:
            later, *_ = _send(client)
            assert _on_primary(primary, later) == 1
            assert _requests_of(client, later) == []

            # Resolving an error is a write: it goes to the primary, whatever the replica does.
            (error,) = client.get(f"{PREFIX}/errors", params={"trace_id": first}).json()["data"]
            patched = client.patch(f"{PREFIX}/errors/{error['id']}", json={"resolved": True})
            assert patched.status_code == 200, patched.text
        finally:
            _pause_replay(replica, False)
        wait_replayed(primary, replica)
        assert len(_requests_of(client, later)) == 1
        (error,) = client.get(f"{PREFIX}/errors", params={"trace_id": first}).json()["data"]
        assert error["resolved"] is True


def test_a_replica_too_far_behind_answers_503_with_retry_after(
    clusters: tuple[Cluster, Cluster], tmp_path: Path
) -> None:
    primary, replica = clusters
    with _service(clusters, tmp_path, max_lag_ms=300) as client:
        _send(client)
        wait_replayed(primary, replica)
        assert client.get(f"{PREFIX}/requests").status_code == 200
        _pause_replay(replica, True)
        try:
            # The primary goes on taking writes the replica does not replay.
            trace_id, *_ = _send(client)
            time.sleep(CHECK_INTERVAL_S + 0.5)
            _send(client)
            for path in ("/requests", "/requests/summary", "/errors", "/requests/timeseries"):
                response = client.get(PREFIX + path)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["Retry-After"] == "5"
                assert "behind the primary" in response.json()["detail"]
            assert _on_primary(primary, trace_id) == 1
        finally:
            _pause_replay(replica, False)
        wait_replayed(primary, replica)
        time.sleep(CHECK_INTERVAL_S)
        assert len(_requests_of(client, trace_id)) == 1


def test_a_replica_that_is_down_answers_503_while_the_sink_goes_on_writing(
    clusters: tuple[Cluster, Cluster], tmp_path: Path
) -> None:
    primary, replica = clusters
    replica.stop()
    try:
        with _service(clusters, tmp_path, max_lag_ms=30_000) as client:
            response = client.get(f"{PREFIX}/jobs")
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "5"
            assert response.json()["detail"] == "The analytics read replica is unavailable."
            trace_id, *_ = _send(client)
            assert _on_primary(primary, trace_id) == 1
    finally:
        replica.start()
