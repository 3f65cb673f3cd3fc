"""The README is the front door: its settings table and commands must stay true."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from homepot_analytics.cli import app
from homepot_foundation.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_documented_in_the_settings_table() -> None:
    documented = set(re.findall(r"`(HOMEPOT_ANALYTICS_[A-Z0-9_]+)`", README))
    expected = {f"HOMEPOT_ANALYTICS_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set(), "settings missing from the README table"


def test_every_cli_command_the_readme_names_exists() -> None:
    named = set(re.findall(r"homepot-analytics ([a-z][a-z-]+)", README))
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    missing = {command for command in named if command not in result.output}
    assert missing == set()
