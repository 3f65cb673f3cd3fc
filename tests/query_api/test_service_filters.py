"""Many services in one set of tables: service_name (repeatable), service_version and
deployment_environment filter every list and summary; an unknown parameter is a 422 naming it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from exporter.schema import TABLES
from tests.query_api.conftest import PREFIX
from tests.query_api.rows import insert_rows, row
from tests.query_api.test_paging import PATHS

SERVICES = [("api", "1.4.0", "production"), ("api", "1.5.0", "staging"), ("worker", "1.4.0", "production")]


@pytest.mark.parametrize("table", list(PATHS))
def test_every_list_and_summary_filters_by_service_release_and_environment(
    client: TestClient, engine: Engine, table: str
) -> None:
    model = TABLES[table]
    rows = [
        row(model, service_name=name, service_version=version, deployment_environment=environment)
        for name, version, environment in SERVICES
    ]
    ids = insert_rows(engine, model, rows)
    url = f"{PREFIX}/{PATHS[table]}"

    def listed(**params: object) -> set[int]:
        response = client.get(url, params=params)
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["data"]}

    assert listed(service_name="api") == {ids[0], ids[1]}
    assert listed(service_name=["api", "worker"]) == set(ids)
    assert listed(service_version="1.4.0") == {ids[0], ids[2]}
    assert listed(deployment_environment="staging") == {ids[1]}
    assert listed(service_name="worker", deployment_environment="staging") == set()
    summary = client.get(f"{url}/summary", params={"service_name": "worker"})
    assert summary.status_code == 200, summary.text
    everything = client.get(f"{url}/summary")
    assert summary.json() != everything.json()  # the filter reaches the summary too


def test_an_unknown_parameter_is_refused_naming_it(client: TestClient) -> None:
    response = client.get(f"{PREFIX}/requests", params={"servce_name": "api"})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "servce_name"]
    assert "unknown query parameter" in error["msg"] and "service_name" in error["msg"]
    assert client.get(f"{PREFIX}/requests/summary", params={"bogus": "1"}).status_code == 422


def test_the_request_summary_groups_per_service(client: TestClient, engine: Engine) -> None:
    model = TABLES["api_request_logs"]
    rows = [
        row(model, service_name=name, route="/devices/{id}", method="GET") for name in ("api", "api", "edge")
    ]
    insert_rows(engine, model, rows)
    summary = client.get(f"{PREFIX}/requests/summary").json()
    groups = [(group["service_name"], group["route"], group["count"]) for group in summary["routes"]]
    assert groups == [("api", "/devices/{id}", 2), ("edge", "/devices/{id}", 1)]
    assert summary["total"]["count"] == 3
