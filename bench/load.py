"""Per-request cost: the benchmark service under uvicorn, loaded by ``wrk`` at fixed concurrency.

One server process per variant, all started up front and kept for the whole run; the rounds
then alternate wrk between them, so drift on a shared machine hits every variant alike. At the
end every server gets SIGTERM and its lifespan shutdown flushes what it buffered; for the
instrumented variant the rows in ``api_request_logs`` are then compared with the requests the
app answered (its own counter, so requests wrk cut off at the end of a run count too).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "wrk_summary.lua"
ENDPOINTS = ("trivial", "db")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
# After each load run, wait out the export delay (1 s) before reading the server's CPU time, so
# the exporter's work for that run's requests is charged to that run.
SETTLE_S = 1.2


@dataclass
class WrkRun:
    requests: int
    duration_s: float
    errors: int
    non_2xx: int
    p50_ms: float
    p99_ms: float
    server_cpu_s: float = 0.0
    # CPU of the server's child processes (our export worker): not the service's interpreter,
    # but the machine pays it, so it is printed beside.
    worker_cpu_s: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


@dataclass
class Measurement:
    variant: str
    round: int
    endpoint: str
    run: WrkRun


@dataclass
class ServerOutcome:
    variant: str
    served: int | None
    exit_code: int | None
    spool_files_left: int = 0
    measurements: list[Measurement] = field(default_factory=list)


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed (Debian/Ubuntu: apt-get install -y wrk)")
    return found


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the live child processes of ``pid`` (the export worker)."""
    total = 0.0
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # gone meanwhile
                total += process_cpu_seconds(int(child))
    return total


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark process dies, so no server outlives
    an interrupted run (Linux prctl PR_SET_PDEATHSIG; elsewhere nothing)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_wrk(url: str, seconds: int, connections: int) -> WrkRun:
    """Load ``url`` for whole ``seconds`` (wrk takes no fractions) from one wrk thread."""
    command = [
        wrk_path(),
        "-t1",
        f"-c{connections}",
        f"-d{max(int(seconds), 1)}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    for line in completed.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            data = json.loads(line.removeprefix("WRK_JSON "))
            return WrkRun(
                requests=data["requests"],
                duration_s=data["duration_us"] / 1e6,
                errors=data["errors"],
                non_2xx=data["non_2xx"],
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no summary: {completed.stdout}\n{completed.stderr}")


class Server:
    """One uvicorn process (1 worker) serving the benchmark app as ``variant``."""

    def __init__(self, variant: str, database_url: str, scratch: Path) -> None:
        self.variant = variant
        self.port = _free_port()
        self.directory = scratch / variant
        self.directory.mkdir(parents=True)
        self.served_file = self.directory / "served"
        self._env = {
            **os.environ,
            "BENCH_VARIANT": variant,
            "BENCH_DATABASE_URL": database_url,
            "BENCH_DATA_DIR": str(self.directory / "data"),
            "BENCH_SERVED_FILE": str(self.served_file),
            "PYTHONPATH": str(REPO),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.outcome = ServerOutcome(variant, None, None)

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench.apps.service:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        self.process = subprocess.Popen(command, cwd=REPO, env=self._env, preexec_fn=_die_with_parent)

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.variant} server exited at start with code {self.process.returncode}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/trivial", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.variant} server not ready within {START_TIMEOUT_S:.0f} s")

    def load(self, endpoint: str, seconds: int, connections: int, *, settle_s: float = SETTLE_S) -> WrkRun:
        assert self.process is not None
        cpu_before = process_cpu_seconds(self.process.pid)
        worker_before = children_cpu_seconds(self.process.pid)
        run = run_wrk(f"http://127.0.0.1:{self.port}/{endpoint}", seconds, connections)
        time.sleep(settle_s)
        run.server_cpu_s = process_cpu_seconds(self.process.pid) - cpu_before
        run.worker_cpu_s = children_cpu_seconds(self.process.pid) - worker_before
        return run

    def stop(self) -> ServerOutcome:
        """SIGTERM, wait for the lifespan shutdown (the flush) to finish; what the app answered."""
        if self.process is None:
            return self.outcome
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.outcome.exit_code = self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.outcome.exit_code = self.process.wait()
            logger.error("%s server did not stop within %.0f s; killed", self.variant, STOP_TIMEOUT_S)
        self.process = None
        if self.served_file.exists():
            self.outcome.served = int(self.served_file.read_text())
        spool = self.directory / "data" / "spool"
        self.outcome.spool_files_left = len(list(spool.rglob("*.batch"))) if spool.exists() else 0
        return self.outcome

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass
class LoadResult:
    outcomes: dict[str, ServerOutcome]
    rows_stored: dict[str, int]  # per variant that stores rows, after its server flushed


def run_load(
    database_url: str,
    variants: tuple[str, ...],
    *,
    rounds: int,
    seconds: int,
    warmup_s: int,
    connections: int,
    scratch: Path,
    count_rows: Callable[[str], int | None],
    settle_s: float = SETTLE_S,
) -> LoadResult:
    """Start every variant's server, alternate the load over ``rounds``, stop them all.

    ``count_rows(variant)`` counts what a variant stored (None: it stores nothing), once every
    server has stopped and flushed.
    """
    servers = {variant: Server(variant, database_url, scratch) for variant in variants}
    with ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(server)  # started together: imports overlap
        for server in servers.values():
            server.wait_ready()
            for endpoint in ENDPOINTS:
                server.load(endpoint, warmup_s, connections, settle_s=0)
        for round_index in range(rounds):
            # Rotate the order every round so a slow patch of the machine hits every variant.
            shift = round_index % len(variants)
            order = variants[shift:] + variants[:shift]
            endpoints = ENDPOINTS if round_index % 2 == 0 else ENDPOINTS[::-1]
            for variant in order:
                server = servers[variant]
                for endpoint in endpoints:
                    run = server.load(endpoint, seconds, connections, settle_s=settle_s)
                    server.outcome.measurements.append(Measurement(variant, round_index, endpoint, run))
                    logger.info(
                        "round %d %-18s %-7s %8.0f req/s  p99 %6.1f ms  %6.0f us CPU/req",
                        round_index + 1,
                        variant,
                        endpoint,
                        run.rps,
                        run.p99_ms,
                        run.server_cpu_s / max(run.requests, 1) * 1e6,
                    )
    outcomes = {variant: server.outcome for variant, server in servers.items()}
    stored = {variant: count_rows(variant) for variant in servers}
    return LoadResult(outcomes, {variant: rows for variant, rows in stored.items() if rows is not None})
