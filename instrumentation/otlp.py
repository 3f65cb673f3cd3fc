"""OTLP export for instrumented services: span and log record processors that send to a collector.

Configured only by the standard OpenTelemetry variables, which the OTLP exporters read themselves:
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT`` / ``..._LOGS_ENDPOINT``), ``..._HEADERS``,
``..._COMPRESSION``, ``..._TIMEOUT``, ``..._CERTIFICATE``; ``OTEL_EXPORTER_OTLP_PROTOCOL`` (or the
per-signal ``..._TRACES_PROTOCOL`` / ``..._LOGS_PROTOCOL``) picks ``http/protobuf`` (the default)
or ``grpc``; batching follows ``OTEL_BSP_*`` / ``OTEL_BLRP_*``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.trace.export import SpanExporter

from exporter.own_logging import exporter_logger
from exporter.processor import CountingBatchLogRecordProcessor, CountingBatchSpanProcessor
from homepot_foundation.extras import MissingExtraError

logger = exporter_logger(__name__)

HTTP_PROTOBUF = "http/protobuf"
GRPC = "grpc"
_KNOWN = (HTTP_PROTOBUF, GRPC)


def otlp_protocol(signal: str, environ: Mapping[str, str] | None = None) -> str:
    """The protocol for ``signal`` ("TRACES" or "LOGS"): the per-signal variable, else the
    general one, else http/protobuf. A protocol the Python exporters lack falls back, with a warning."""
    environ = os.environ if environ is None else environ
    for name in (f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = environ.get(name, "").strip().lower()
        if not value:
            continue
        if value in _KNOWN:
            return value
        # http/json is in the specification, but opentelemetry-exporter-otlp only ships protobuf.
        logger.warning("%s=%s is not supported here; using %s", name, value, HTTP_PROTOBUF)
        return HTTP_PROTOBUF
    return HTTP_PROTOBUF


# The exporter of the chosen protocol is imported only when chosen: the gRPC one loads grpcio
# (tens of MB, native threads) into a service that may never use it, and comes with the extra
# `grpc` only. Without it, grpc is refused with what to install: falling back to http/protobuf
# would send to the gRPC port (4317) and lose everything.
def _missing_grpc(error: ModuleNotFoundError) -> MissingExtraError:
    return MissingExtraError(
        f"OTLP export over gRPC (OTEL_EXPORTER_OTLP_PROTOCOL=grpc; {error.name} is missing)",
        "grpc",
        "use http/protobuf (port 4318)",
    )


def otlp_span_exporter(protocol: str) -> SpanExporter:
    if protocol == GRPC:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
        except ModuleNotFoundError as error:
            raise _missing_grpc(error) from None

        return GrpcSpans()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

    return HttpSpans()


def otlp_log_exporter(protocol: str) -> LogRecordExporter:
    if protocol == GRPC:
        try:
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
        except ModuleNotFoundError as error:
            raise _missing_grpc(error) from None

        return GrpcLogs()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs

    return HttpLogs()


def otlp_processors() -> tuple[CountingBatchSpanProcessor, CountingBatchLogRecordProcessor]:
    """A batching span processor and log record processor exporting over OTLP; records their
    full queues drop are counted (reason ``otlp_queue_full``), as for the PostgreSQL path."""
    trace_protocol = otlp_protocol("TRACES")
    log_protocol = otlp_protocol("LOGS")
    logger.info("exporting spans over OTLP %s and log records over OTLP %s", trace_protocol, log_protocol)
    return (
        CountingBatchSpanProcessor(otlp_span_exporter(trace_protocol), via="otlp"),
        CountingBatchLogRecordProcessor(otlp_log_exporter(log_protocol), via="otlp"),
    )
