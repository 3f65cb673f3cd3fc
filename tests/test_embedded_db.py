"""The embedded PostgreSQL: real initdb/pg_ctl processes in a temporary data directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from homepot_foundation.embedded_db import ensure_embedded_postgres, stop_embedded_postgres


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "share" / "postgres"
    yield path
    stop_embedded_postgres(path)  # the server outlives its starter by design: never leak one


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def test_lifecycle_reuse_stop_and_restart_keeps_data(data_dir: Path) -> None:
    url = ensure_embedded_postgres(data_dir)
    assert url == f"postgresql://postgres@127.0.0.1:{_port(url)}/postgres"
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        conn.execute("create table kept (v text)")
        conn.execute("insert into kept values ('still here')")

    pg_version = (data_dir / "pgdata" / "PG_VERSION").stat()
    started = time.monotonic()
    assert ensure_embedded_postgres(data_dir) == url  # already running: just its URL
    assert time.monotonic() - started < 1.0
    assert (data_dir / "pgdata" / "PG_VERSION").stat().st_mtime_ns == pg_version.st_mtime_ns  # no initdb

    assert stop_embedded_postgres(data_dir) is True
    assert stop_embedded_postgres(data_dir) is False
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)

    assert ensure_embedded_postgres(data_dir) == url  # same remembered port, same cluster
    with psycopg.connect(url) as conn:
        assert conn.execute("select v from kept").fetchall() == [("still here",)]


def test_remembered_port_taken_by_someone_else_picks_another(data_dir: Path) -> None:
    first = ensure_embedded_postgres(data_dir)
    assert stop_embedded_postgres(data_dir)
    with socket.socket() as squatter:
        # The server just stopped: its port may be in TIME_WAIT, which only a listener with
        # SO_REUSEADDR may take (PostgreSQL sets it too, yet cannot listen beside this one).
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", _port(first)))
        squatter.listen()
        second = ensure_embedded_postgres(data_dir)
    assert _port(second) != _port(first)
    assert (data_dir / "port").read_text().strip() == str(_port(second))
    with psycopg.connect(second) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_concurrent_processes_share_one_server(data_dir: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from homepot_foundation.embedded_db import *; "
        "print(ensure_embedded_postgres(Path(sys.argv[1])))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    results = [proc.communicate(timeout=60) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), results
    urls = {out.strip() for out, _ in results}
    assert len(urls) == 1
    with psycopg.connect(urls.pop()) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_stop_without_cluster_is_false(tmp_path: Path) -> None:
    assert stop_embedded_postgres(tmp_path / "never-started") is False
