"""Start and stop an instrumented app under uvicorn in a subprocess; every process is stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


# Bound for the whole test process, never listened on: nobody else can take these ports.
_REFUSING: list[socket.socket] = []


def refused_url() -> str:
    """A PostgreSQL URL whose port refuses every connection, as a stopped database does.

    The port stays bound (not listening) until the process ends, so no server started
    meanwhile by a parallel test run can take it and make "down" mean "up"."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _REFUSING.append(sock)
    return f"postgresql://postgres@127.0.0.1:{sock.getsockname()[1]}/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoggedProcess:
    """A server process on a free loopback port, its output in ``log_path``; always stopped."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [part.replace("{port}", str(self.port)) for part in command],
            cwd=cwd,
            env={**env, "PORT": str(self.port)},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, as a deployment does; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class AppProcess(LoggedProcess):
    """``uvicorn tests.e2e.reliability_app:app`` on a free loopback port, logs in ``log_path``."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        module: str = "tests.e2e.reliability_app:app",
        launcher: tuple[str, ...] = (),
    ):
        """``launcher`` goes before the interpreter (``opentelemetry-instrument ...``)."""
        uvicorn = [sys.executable, "-m", "uvicorn", module, "--host", "127.0.0.1", "--port", "{port}"]
        super().__init__([*launcher, *uvicorn], {**os.environ, **env}, log_path)
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited early ({self.process.returncode}):\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"app did not start:\n{self.log()}")
