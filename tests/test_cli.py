"""CLI error paths a user meets first."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from homepot_analytics.cli import app
from homepot_foundation.settings import get_settings


def test_token_without_a_secret_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOMEPOT_ANALYTICS_JWT_SECRET", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["token", "--subject", "someone"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "HOMEPOT_ANALYTICS_JWT_SECRET" in result.output
