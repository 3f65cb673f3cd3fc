"""Throwaway PostgreSQL 15 clusters of the machine's own binaries: a primary and its streaming
replica (``pg_basebackup -R``, started as a hot standby), for the read-replica tests.

initdb refuses to run as root, so as root every command runs as the ``postgres`` user, in a
directory that user owns."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.processes import free_port

BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run(*command: str | Path) -> None:
    completed = subprocess.run(
        _as_postgres([str(part) for part in command]), capture_output=True, text=True, timeout=120
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{command[0]} failed:\n{completed.stdout}\n{completed.stderr}")


@dataclass
class Cluster:
    data_dir: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        log = self.data_dir / "server.log"
        _run(BIN / "pg_ctl", "-D", self.data_dir, "-l", log, "-w", "-t", "60", "start")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            _run(BIN / "pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop")

    def configure(self, **options: str | int) -> None:
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            for name, value in options.items():
                conf.write(f"{name} = '{value}'\n")


@contextmanager
def primary_and_replica() -> Iterator[tuple[Cluster, Cluster]]:
    """A primary (wal_level replica) and a hot standby streaming from it, both started; removed after."""
    root = Path(tempfile.mkdtemp(prefix="homepot-replication-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    primary = Cluster(root / "primary", free_port())
    replica = Cluster(root / "replica", free_port())
    try:
        # initdb's pg_hba.conf trusts replication connections from 127.0.0.1 with -A trust.
        _run(BIN / "initdb", "-D", primary.data_dir, "-U", "postgres", "-A", "trust", "--no-sync")
        primary.configure(
            port=primary.port,
            listen_addresses="127.0.0.1",
            unix_socket_directories=root,
            wal_level="replica",
            max_wal_senders=4,
            fsync="off",
            shared_buffers="32MB",
        )
        primary.start()
        _run(
            BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
            "-D", replica.data_dir, "-R", "-X", "stream", "--no-sync",
        )  # fmt: skip
        replica.configure(port=replica.port, hot_standby="on")
        replica.start()
        yield primary, replica
    finally:
        for cluster in (replica, primary):
            with suppress(RuntimeError):
                cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def wait_replayed(primary: Cluster, replica: Cluster, database: str = "postgres") -> None:
    """Return once the replica has replayed everything the primary has written so far."""
    with psycopg.connect(primary.url(database), autocommit=True) as conn:
        target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    deadline = time.monotonic() + 30
    with psycopg.connect(replica.url(database), autocommit=True) as conn:
        while time.monotonic() < deadline:
            done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()
            if done and done[0]:
                return
            time.sleep(0.05)
    raise TimeoutError("the replica did not catch up")
