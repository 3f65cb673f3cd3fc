"""The tests' own choice of server: the configured one, the local one, else a throwaway embedded
cluster (so ``make test`` passes on a machine without PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.support import postgres_server
from tests.support.postgres_server import ServerForTests, answers
from tests.support.processes import free_port

ENV = (
    postgres_server.ADMIN_URL_VARIABLE,
    postgres_server.MODE_VARIABLE,
    postgres_server.BENCH_ADMIN_URL_VARIABLE,
)


@pytest.fixture()
def no_server(monkeypatch: pytest.MonkeyPatch) -> str:
    """The default server moved to a port where nothing listens; the test's environment restored after."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    monkeypatch.setattr(postgres_server, "DEFAULT_ADMIN_URL", nowhere)
    return nowhere


def test_without_a_server_the_tests_get_a_throwaway_embedded_cluster(no_server: str) -> None:
    assert not answers(no_server)
    server = ServerForTests()
    try:
        assert server.cluster_dir is not None and server.admin_url != no_server
        assert answers(server.admin_url)
    finally:
        directory = server.cluster_dir
        server.stop()
    assert directory is not None and not directory.exists()


def test_a_configured_server_is_used_as_it_is(no_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(postgres_server.ADMIN_URL_VARIABLE, "postgresql://postgres@db.example/postgres")
    server = ServerForTests()
    assert server.admin_url == "postgresql://postgres@db.example/postgres" and server.cluster_dir is None


def test_server_mode_fails_clearly_without_one(no_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(postgres_server.MODE_VARIABLE, "server")
    with pytest.raises(SystemExit, match="no PostgreSQL server answers"):
        ServerForTests()
