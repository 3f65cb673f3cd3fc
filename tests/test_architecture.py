"""The house rules a check can hold: the layers (import-linter, as ``make lint`` runs it) and
light public modules (no database driver, SQLAlchemy or OpenTelemetry SDK behind a constant)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("homepot_foundation", "exporter", "instrumentation", "query_api", "homepot_analytics")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# Modules a producer in any language (or a quick script) may import for their constants or pure
# functions: they must not drag in the writer's or the SDK's dependencies.
LIGHT_MODULES = (
    "exporter",
    "exporter.conventions",
    "exporter.columns",
    "exporter.routing",
    "exporter.mapping",
    "exporter.events",
    "exporter.containment",
    "exporter.privacy",
    "homepot_foundation.tokens",
)
HEAVY = ("psycopg", "sqlalchemy", "opentelemetry.sdk")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_layers_are_kept() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward"),
    [
        ("exporter/conventions.py", "homepot_analytics.cli"),  # the core reaching for the CLI
        ("homepot_foundation/settings.py", "exporter.schema"),  # the floor reaching up
        ("query_api/intake.py", "instrumentation.records"),  # siblings stay independent
    ],
)
def test_an_upward_import_fails_the_check(tmp_path: Path, module: str, upward: str) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / module).open("a") as source:
        source.write(f"\nimport {upward}  # noqa: E402, F401\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    importer = module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {upward}" in result.stdout


def test_public_constant_and_pure_modules_are_light() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {LIGHT_MODULES!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
