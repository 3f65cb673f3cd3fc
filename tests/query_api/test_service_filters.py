"""Many services in one set of tables: service_name (repeatable), service_version and
deployment_environment filter every list and summary; every summary groups per service; an unknown
parameter is a 422 naming it."""

from __future__ import annotations

from typing import Any

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


# Each list of each summary: the table, the list, the values its rows share (the group's key
# beside the service) and the field that counts them.
GROUPED: list[tuple[str, str, dict[str, Any], str]] = [
    ("api_request_logs", "routes", {"route": "/devices/{id}", "method": "GET"}, "count"),
    ("job_outcomes", "job_types", {"job_type": "restart"}, "count"),
    ("error_logs", "groups", {"fingerprint": "f" * 32}, "count"),
    ("device_state_history", "transitions", {"previous_state": "online", "new_state": "offline"}, "count"),
    ("device_state_history", "devices", {"device_id": "dev_1"}, "changes"),
    ("user_activities", "activity_types", {"activity_type": "search"}, "count"),
    ("user_activities", "top_pages", {"page_url": "/devices"}, "count"),
    ("user_activities", "top_searches", {"search_query": "berlin"}, "count"),
]


def _summary(client: TestClient, table: str, **params: object) -> dict[str, Any]:
    response = client.get(f"{PREFIX}/{PATHS[table]}/summary", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(("table", "key", "values", "counted"), GROUPED, ids=[g[1] for g in GROUPED])
def test_every_summary_groups_per_service(
    client: TestClient, engine: Engine, table: str, key: str, values: dict[str, Any], counted: str
) -> None:
    model = TABLES[table]
    insert_rows(engine, model, [row(model, service_name=name, **values) for name in ("api", "api", "edge")])

    def groups(summary: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(g["service_name"], *(g[name] for name in values), g[counted]) for g in summary[key]]

    shared = tuple(values.values())
    everything = _summary(client, table)
    assert groups(everything) == [("api", *shared, 2), ("edge", *shared, 1)]
    if "total" in everything:  # requests and jobs: the total stays over every service
        assert everything["total"]["count"] == 3
    assert groups(_summary(client, table, service_name="edge")) == [("edge", *shared, 1)]


def test_top_error_codes_are_per_service_and_job_type(client: TestClient, engine: Engine) -> None:
    model = TABLES["job_outcomes"]
    failures = [("api", "E_FLASH"), ("api", "E_FLASH"), ("edge", "E_TIMEOUT"), (None, "E_USER")]
    rows = [row(model, service_name=name, status="failed", error_code=code) for name, code in failures]
    insert_rows(engine, model, rows)
    job_types = _summary(client, "job_outcomes")["job_types"]
    # A job without a service keeps its codes too (NULL is a group of its own, not a lost match).
    assert [(g["service_name"], g["job_type"], g["top_error_codes"]) for g in job_types] == [
        ("api", "restart", [{"error_code": "E_FLASH", "count": 2}]),
        ("edge", "restart", [{"error_code": "E_TIMEOUT", "count": 1}]),
        (None, "restart", [{"error_code": "E_USER", "count": 1}]),
    ]


def test_each_service_error_group_names_its_own_latest_occurrence(client: TestClient, engine: Engine) -> None:
    model = TABLES["error_logs"]
    occurrences = [("api", 0, "first"), ("edge", 10, "edge"), ("api", 20, "latest")]
    rows = [
        row(model, minutes, service_name=name, fingerprint="f" * 32, error_message=message)
        for name, minutes, message in occurrences
    ]
    ids = insert_rows(engine, model, rows)
    groups = _summary(client, "error_logs")["groups"]
    assert [(g["service_name"], g["latest_id"], g["error_message"]) for g in groups] == [
        ("api", ids[2], "latest"),
        ("edge", ids[1], "edge"),
    ]
