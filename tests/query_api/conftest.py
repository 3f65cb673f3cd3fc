"""Fixtures for the query API: the service on the test database, and admin credentials."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from exporter.privacy import privacy_from_settings
from homepot_foundation.settings import Settings
from query_api.app import create_app
from query_api.auth import issue_token
from tests.conftest import JWT_SECRET

PREFIX = "/api/v1/analytics"

Stored = Callable[[str], str | None]


def bearer(settings: Settings, role: str = "admin", expires_in: int = 600) -> dict[str, str]:
    token = issue_token(settings, subject="tester", role=role, expires_in=expires_in)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture()
def anonymous(settings: Settings) -> Iterator[TestClient]:
    """The service on emptied tables, without credentials."""
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture()
def client(anonymous: TestClient, settings: Settings) -> TestClient:
    """The service on emptied tables, every request carrying an admin token."""
    anonymous.headers.update(bearer(settings))
    return anonymous


@pytest.fixture(scope="module")
def shared_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir: Path = tmp_path_factory.mktemp("shared")
    return Settings(database_url=database_url, data_dir=data_dir, jwt_secret=JWT_SECRET, export_delay_ms=50)


@pytest.fixture(scope="module")
def shared(shared_settings: Settings) -> Iterator[TestClient]:
    """One service for a module's tests that never look at rows (auth, validation): no headers set."""
    with TestClient(create_app(shared_settings)) as client:
        yield client


@pytest.fixture()
def stored(settings: Settings) -> Stored:
    """A user id as the mapping stores it under the test settings (a pseudonym by default)."""
    return privacy_from_settings(settings).user
