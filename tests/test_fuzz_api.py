"""Bad input: a property-based run over the whole OpenAPI schema, and malformed, truncated,
oversized and non-UTF-8 bodies at the OTLP sink and the activity intake. No 5xx, ever; every
refusal is a 4xx, the service stays healthy, and one bad record never costs the rest."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans

from exporter.delivery import Delivery
from exporter.exporters import PostgresSpanExporter
from exporter.stats import ExportStats
from exporter.writer import RowWriter
from homepot_foundation.settings import Settings
from query_api.app import create_app
from query_api.auth import issue_token
from tests.conftest import JWT_SECRET, fetch_rows
from tests.support.telemetry import device_state_log, failing_request_span, request_span

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("fuzz"),
        jwt_secret=JWT_SECRET,
        ingest_max_body_bytes=256 * 1024,
        intake_max_body_bytes=64 * 1024,
        export_delay_ms=50,
    )


@pytest.fixture(scope="module")
def api_schema(fuzz_settings: Settings) -> Iterator[schemathesis.schemas.BaseSchema]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(fuzz_settings))
    yield schema
    shutdown_lifespans()  # the app's lifespan (engine, delivery) ends with this module


@pytest.fixture(scope="module")
def admin(fuzz_settings: Settings) -> dict[str, str]:
    token = issue_token(fuzz_settings, subject="fuzzer", role="admin", expires_in=3600)
    return {"Authorization": f"Bearer {token}"}


def _operation_labels() -> list[str]:
    # Building the app reads no settings that matter here and starts nothing: its schema is static.
    openapi = create_app(Settings(jwt_secret=JWT_SECRET)).openapi()
    return sorted(f"{method.upper()} {path}" for path, item in openapi["paths"].items() for method in item)


@pytest.mark.parametrize("label", _operation_labels())
def test_no_input_makes_the_service_fail(
    label: str, api_schema: schemathesis.schemas.BaseSchema, admin: dict[str, str]
) -> None:
    """Valid and invalid (negative mode) inputs alike: a 4xx at worst, never a 5xx."""
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label

    @hypothesis_settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
        database=None,
    )
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=admin, checks=[not_a_server_error])

    run()


def _edge_values(name: str, schema: dict[str, Any]) -> list[object]:
    """Values at the edges of what a query parameter's declared type admits."""
    variants = schema.get("anyOf", [schema])
    types = {variant.get("type") for variant in variants}
    unbounded = any(
        "maximum" not in variant for variant in variants if variant.get("type") in ("integer", "number")
    )
    values: list[object] = []
    if "string" in types and not any("pattern" in variant for variant in variants):
        values += ["\x00", "a\x00b", "'; SELECT pg_sleep(5); --", "%", "\u202e\U0001f600"]
        if name.endswith("_date"):
            values += ["0001-01-01", "9999-12-31T23:59:59.999999+14:00", "294277-01-01", "2025-02-30"]
        if name == "cursor":
            values += ["x" * 8192, "eyJ0IjoiMjAyNS0xMi0wNSIsImkiOi0xfQ"]
    if "integer" in types and unbounded:
        values += [2**31, 2**63, -(2**63) - 1, 10**30]
    if "number" in types and unbounded:
        values += [1e308, "1e309", "nan", "inf"]
    return values


def _get_operations() -> list[str]:
    openapi = create_app(Settings(jwt_secret=JWT_SECRET)).openapi()
    return sorted(path for path, item in openapi["paths"].items() if "get" in item and "{" not in path)


@pytest.mark.parametrize("path", _get_operations())
def test_edge_values_of_every_query_parameter_are_never_a_server_error(
    path: str, service: TestClient, admin: dict[str, str]
) -> None:
    """Deterministic companion of the property-based run: NUL bytes, injection text, dates at
    the ends of the calendar, integers past 32 and 64 bits, in every parameter that admits them."""
    operation = service.app.openapi()["paths"][path]["get"]  # type: ignore[attr-defined]
    failures = []
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "query":
            continue
        for value in _edge_values(parameter["name"], parameter["schema"]):
            response = service.get(path, params={parameter["name"]: str(value)}, headers=admin)
            if response.status_code >= 500:
                failures.append(f"{parameter['name']}={value!r}: {response.status_code}")
    assert failures == [], f"{path}: " + "; ".join(failures)


# --- the OTLP sink and the intake, body by body -------------------------------------------------


@pytest.fixture(scope="module")
def service(fuzz_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(fuzz_settings), raise_server_exceptions=False) as client:
        yield client


def traces_body(*spans: ReadableSpan) -> bytes:
    return encode_spans(list(spans)).SerializeToString()


def logs_body(*records: ReadableLogRecord) -> bytes:
    return encode_logs(list(records)).SerializeToString()


def rows_where(url: str, table: str, column: str, value: object) -> list[dict[str, object]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE {column} = %s", (value,))
        return list(cursor.fetchall())


def assert_healthy(service: TestClient, database_url: str) -> None:
    """The service still answers and still stores what it is sent."""
    assert service.get("/health").status_code == 200
    path = f"/healthy/{uuid.uuid4()}"
    response = service.post("/v1/traces", content=traces_body(request_span(path)), headers=PROTOBUF)
    assert response.status_code == 200
    assert len(rows_where(database_url, "api_request_logs", "endpoint", path)) == 1


PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
GZIP_PROTOBUF = {**PROTOBUF, "Content-Encoding": "gzip"}
VALID_TRACES = traces_body(request_span("/valid"), failing_request_span("/valid-error"))
VALID_LOGS = logs_body(device_state_log("dev-valid"))

BAD_OTLP_BODIES = {
    "random bytes": (PROTOBUF, b"\xff\xff\xff\xff\xff\xff", 400),
    "truncated protobuf": (PROTOBUF, VALID_TRACES[:-3], 400),
    "truncated JSON": (JSON, b'{"resourceSpans": [{"resource": {"attri', 400),
    "not UTF-8 JSON": (JSON, b'{"resourceSpans": [{"scopeSpans": "\xff\xfe\xfd"}]}', 400),
    "JSON of the wrong shape": (JSON, b'{"resourceSpans": "none", "resourceLogs": "none"}', 400),
    "JSON array": (JSON, b"[1, 2, 3]", 400),
    "deeply nested JSON": (JSON, b"[" * 100_000 + b"]" * 100_000, 400),
    "gzip that is not gzip": (GZIP_PROTOBUF, b"plain bytes", 400),
    "truncated gzip": (GZIP_PROTOBUF, gzip.compress(VALID_TRACES)[:-8], 400),
    "oversized": (PROTOBUF, b"\x00" * (256 * 1024 + 1), 413),
    "gzip bomb": (GZIP_PROTOBUF, gzip.compress(b"\x00" * (64 * 1024 * 1024)), 413),
    "unknown media type": ({"Content-Type": "text/plain"}, VALID_TRACES, 415),
    "unknown encoding": ({**PROTOBUF, "Content-Encoding": "br"}, VALID_TRACES, 415),
}


@pytest.mark.parametrize("path", ["/v1/traces", "/v1/logs"])
@pytest.mark.parametrize("case", BAD_OTLP_BODIES, ids=list(BAD_OTLP_BODIES))
def test_bad_otlp_bodies_are_refused_with_a_4xx(
    service: TestClient, database_url: str, path: str, case: str
) -> None:
    headers, body, expected = BAD_OTLP_BODIES[case]
    response = service.post(path, content=body, headers=headers)
    assert response.status_code == expected, response.text
    assert_healthy(service, database_url)


INTAKE = ("/api/v1/analytics/user-activities", "/api/v1/analytics/user-activity")
BAD_INTAKE_BODIES = {
    "empty": (b"", 400),
    "truncated JSON": (b'[{"activity_type": "cli', 400),
    "not UTF-8": (b'[{"activity_type": "\xff\xfe"}]', 400),
    "deeply nested": (b"[" * 30_000 + b"]" * 30_000, 400),
    "oversized": (b'["' + b"x" * (64 * 1024) + b'"]', 413),
}


@pytest.mark.parametrize("path", INTAKE)
@pytest.mark.parametrize("case", BAD_INTAKE_BODIES, ids=list(BAD_INTAKE_BODIES))
def test_bad_intake_bodies_are_refused_with_a_4xx(
    service: TestClient, database_url: str, path: str, case: str
) -> None:
    body, expected = BAD_INTAKE_BODIES[case]
    response = service.post(path, content=body, headers=JSON)
    assert response.status_code == expected, response.text
    assert_healthy(service, database_url)


def _mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """A valid body cut short, with bytes flipped, or with garbage spliced in."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        body = bytearray(valid[: draw(st.integers(0, len(valid)))])
        for _ in range(draw(st.integers(0, 4))):
            if body:
                body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
        return bytes(body) + draw(st.binary(max_size=16))

    return mutate()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=20,
)
FUZZ = hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


def test_mangled_otlp_never_makes_the_sink_fail(service: TestClient, database_url: str) -> None:
    @FUZZ
    @given(
        target=st.sampled_from([("/v1/traces", VALID_TRACES), ("/v1/logs", VALID_LOGS)]),
        data=st.data(),
    )
    def run(target: tuple[str, bytes], data: st.DataObject) -> None:
        path, valid = target
        body = data.draw(_mutations(valid))
        response = service.post(path, content=body, headers=PROTOBUF)
        assert response.status_code in (200, 400), (body, response.text)

    run()
    assert_healthy(service, database_url)


def test_any_json_at_the_intake_is_taken_or_refused_never_a_failure(
    service: TestClient, database_url: str
) -> None:
    @FUZZ
    @given(path=st.sampled_from(INTAKE), payload=JSON_VALUES)
    def run(path: str, payload: object) -> None:
        response = service.post(path, content=json.dumps(payload), headers=JSON)
        assert response.status_code < 500 and response.status_code != 200, response.text

    run()
    assert_healthy(service, database_url)


# --- what gets through is stored as well as the columns allow ------------------------------------


def test_oversized_attribute_values_over_otlp_are_truncated_not_refused(
    service: TestClient, database_url: str
) -> None:
    path = f"/huge/{uuid.uuid4()}"
    span = request_span(
        path + "/" + "é" * 30_000,
        **{
            "http.route": path,
            "http.user_agent": "ua\x00" + "x" * 50_000,
            "enduser.id": "u" * 20_000,
            "http.status_code": 2**62,
            "http.response.body.size": -(2**63),
        },
    )
    response = service.post("/v1/traces", content=traces_body(span), headers=PROTOBUF)
    assert response.status_code == 200
    (row,) = rows_where(database_url, "api_request_logs", "route", path)
    assert len(str(row["endpoint"])) == 2048
    assert len(str(row["user_agent"])) == 1024 and "\x00" not in str(row["user_agent"])
    assert len(str(row["user_id"])) <= 255
    assert row["status_code"] == 2**31 - 1
    assert row["response_size_bytes"] == -(2**63 - 1)


def test_one_bad_span_never_costs_the_rest_of_its_batch(service: TestClient, database_url: str) -> None:
    route = f"/batch/{uuid.uuid4()}"
    spans = [request_span(route, **{"http.route": route}) for _ in range(5)]
    request = encode_spans(spans)
    request.resource_spans[0].scope_spans[0].spans[2].trace_id = b"\x01\x02"  # not 16 bytes
    response = service.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert len(rows_where(database_url, "api_request_logs", "route", route)) == 4


def test_one_unmappable_span_never_costs_the_rest_in_process(db_url: str, tmp_path: Path) -> None:
    class Unreadable:
        def __int__(self) -> int:
            raise RuntimeError("an attribute value nobody can read")

        def __str__(self) -> str:
            raise RuntimeError("an attribute value nobody can read")

    stats = ExportStats()
    delivery = Delivery(RowWriter(db_url, stats=stats), None, stats=stats)
    exporter = PostgresSpanExporter(delivery)
    bad = request_span("/bad", **{"http.status_code": Unreadable()})
    try:
        assert (
            exporter.export([request_span("/good-1"), bad, request_span("/good-2")])
            == SpanExportResult.SUCCESS
        )
    finally:
        delivery.shutdown()
    assert sorted(str(r["endpoint"]) for r in fetch_rows(db_url, "api_request_logs")) == [
        "/good-1",
        "/good-2",
    ]
    assert stats.get("rejected", "unmapped") == 1
