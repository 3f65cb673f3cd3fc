"""OTLP export from instrumented services: the protocol the standard variables choose, and where
``setup_telemetry`` sends telemetry for each ``export`` setting."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from pydantic import ValidationError

from exporter.exporters import PostgresLogExporter, PostgresSpanExporter
from exporter.linked_processors import LinkedLogRecordProcessor, LinkedSpanProcessor
from homepot_foundation.extras import MissingExtraError
from homepot_foundation.settings import Settings
from instrumentation import setup_telemetry
from instrumentation.otlp import otlp_log_exporter, otlp_protocol, otlp_span_exporter


@pytest.mark.parametrize(
    ("environ", "traces", "logs"),
    [
        ({}, "http/protobuf", "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc", "grpc"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": " GRPC "}, "grpc", "grpc"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf"},
            "grpc",
            "http/protobuf",
        ),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "grpc", "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": ""}, "http/protobuf", "http/protobuf"),
    ],
)
def test_the_protocol_follows_the_standard_variables(environ: dict[str, str], traces: str, logs: str) -> None:
    assert otlp_protocol("TRACES", environ) == traces
    assert otlp_protocol("LOGS", environ) == logs


def test_an_unsupported_protocol_falls_back_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    # Our own messages go to stderr themselves (seen even where the root logger's only handler
    # is OpenTelemetry's, as under opentelemetry-instrument).
    assert otlp_protocol("TRACES", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}) == "http/protobuf"
    assert "http/json" in capsys.readouterr().err


def test_exporter_classes_per_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert isinstance(otlp_span_exporter("http/protobuf"), HttpSpans)
    assert isinstance(otlp_log_exporter("http/protobuf"), HttpLogs)
    assert isinstance(otlp_span_exporter("grpc"), GrpcSpans)
    assert isinstance(otlp_log_exporter("grpc"), GrpcLogs)


@pytest.mark.parametrize(
    ("make", "module"),
    [
        (otlp_span_exporter, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
        (otlp_log_exporter, "opentelemetry.exporter.otlp.proto.grpc._log_exporter"),
    ],
)
def test_grpc_without_its_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[str], object], module: str
) -> None:
    # The gRPC exporter comes with the extra grpc only; not installed, its import fails.
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'homepot-analytics[grpc]'")):
        make("grpc")


def _exporters(telemetry: object) -> set[type]:
    """The exporter classes behind the batch processors setup_telemetry installed; the tables'
    processors hand their records to the export worker (``LinkedSpanProcessor``...)."""
    processors = telemetry._processors  # type: ignore[attr-defined]
    return {
        type(processor._batch_processor._exporter)
        if hasattr(processor, "_batch_processor")
        else type(processor)
        for processor in processors
    }


@pytest.mark.parametrize(
    ("export", "worker", "expected"),
    [
        (["otlp"], "process", {HttpSpans, HttpLogs}),
        (["postgres"], "process", {LinkedSpanProcessor, LinkedLogRecordProcessor}),
        (["postgres"], "thread", {PostgresSpanExporter, PostgresLogExporter}),
        (
            ["postgres", "otlp"],
            "process",
            {HttpSpans, HttpLogs, LinkedSpanProcessor, LinkedLogRecordProcessor},
        ),
    ],
)
def test_setup_telemetry_exports_where_the_setting_says(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    export: list[str],
    worker: str,
    expected: set[type],
) -> None:
    monkeypatch.setenv("HOMEPOT_ANALYTICS_EXPORT_WORKER", worker)
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"
    )  # never reached: nothing is recorded
    monkeypatch.setenv("HOMEPOT_ANALYTICS_EXPORT", ",".join(export))
    settings = Settings(database_url=database_url, data_dir=tmp_path)
    assert settings.export == export
    telemetry = setup_telemetry(FastAPI(), service_name="otlp-export-test", settings=settings)
    try:
        assert _exporters(telemetry) == expected
        assert (telemetry.pipeline is not None) == ("postgres" in export)
    finally:
        telemetry.shutdown()


def test_an_unknown_export_target_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMEPOT_ANALYTICS_EXPORT", "postgres,kafka")
    with pytest.raises(ValidationError, match="kafka"):
        Settings()
