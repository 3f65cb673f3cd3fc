"""A throwaway pgbouncer (Debian's package) in transaction mode in front of the tests' server.

Two server connections to the database, both opened before the tests start and handed out in
turn (``server_round_robin``): consecutive transactions of one client land on different server
connections, so anything that leans on session state (a prepared statement, a session advisory
lock, a plain SET) shows up at once."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tests.support.processes import free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@contextmanager
def pgbouncer_in_front_of(database_url: str) -> Iterator[str]:
    """Yields the URL of ``database_url``'s database through the pooler."""
    target = conninfo_to_dict(database_url)
    user = str(target.get("user") or "postgres")
    host = str(target.get("host") or "127.0.0.1")
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="homepot-pgbouncer-"))
    (root / "userlist.txt").write_text(f'"{user}" ""\n')
    (root / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={host} port={target.get('port') or 5432} user={user}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {root / 'userlist.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nserver_round_robin = 1\n"
        "max_client_conn = 200\n"
        f"logfile = {root / 'pgbouncer.log'}\npidfile = {root / 'pgbouncer.pid'}\n"
    )
    command = [PGBOUNCER, str(root / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        owner = pwd.getpwnam("postgres")
        for path in (root, *root.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        command[1:1] = ["-u", "postgres"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    pooled_url = f"postgresql://{user}@127.0.0.1:{port}/{target.get('dbname') or 'postgres'}"
    try:
        _wait_ready(pooled_url, process, root)
        _open_both_server_connections(pooled_url)
        yield pooled_url
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(url: str, process: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited:\n{(root / 'pgbouncer.log').read_text(errors='replace')}")
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise RuntimeError("pgbouncer did not start")


def _open_both_server_connections(url: str) -> None:
    """Two transactions at once make the pool open its second server connection (else one
    client's transactions would all run on the first, and session state would seem to work)."""
    with psycopg.connect(url) as first, psycopg.connect(url) as second:
        pids = {conn.execute("SELECT pg_backend_pid()").fetchone() for conn in (first, second)}
        assert len(pids) == 2
