"""The service columns every row carries, read from the resource (stable and older keys)."""

from __future__ import annotations

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource

from exporter.mapping import log_record_to_rows, span_to_rows
from tests.support.telemetry import device_state_log, request_span


def test_name_release_and_environment_come_from_the_resource() -> None:
    span = request_span("/v")
    span._resource = Resource(
        {"service.name": "api", "service.version": "1.5.0", "deployment.environment.name": "staging"}
    )
    ((_, row),) = span_to_rows(span)
    assert (row["service_name"], row["service_version"], row["deployment_environment"]) == (
        "api",
        "1.5.0",
        "staging",
    )


def test_the_older_environment_key_and_absent_values() -> None:
    record = device_state_log()
    resource = Resource({"service.name": "worker", "deployment.environment": "production"})
    record = ReadableLogRecord(record.log_record, resource, record.instrumentation_scope)
    ((_, row),) = log_record_to_rows(record)
    assert (row["service_version"], row["deployment_environment"]) == (None, "production")
    ((_, bare),) = span_to_rows(request_span("/bare"))
    assert bare["service_version"] is None and bare["deployment_environment"] is None
