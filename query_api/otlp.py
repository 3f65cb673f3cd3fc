"""The OTLP/HTTP sink: ``POST /v1/traces`` and ``POST /v1/logs`` from an OpenTelemetry Collector.

Whatever arrives (protobuf or JSON, plain or gzip, from any SDK) is decoded into SDK spans and log
records and mapped by the same ``span_to_rows`` / ``log_record_to_rows`` as the in-process exporter,
then written through the service's ``Delivery``: a 200 means the rows are stored or safely spooled.
Answers follow the OTLP/HTTP specification: ``partial_success`` for rejected records, 400 for an
undecodable body, 413 too large, 415 unsupported media type or encoding, 503 + Retry-After when
the rows could not be kept (the collector retries), all in the request's own encoding.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response, status
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from exporter.delivery import Delivery
from exporter.mapping import TableRow, log_record_to_rows, span_to_rows
from exporter.otlp_decode import Decoded, Encoding, OtlpDecodeError, decode_logs, decode_traces, serialize
from exporter.privacy import Privacy
from exporter.rows import RowBatch
from homepot_foundation.settings import Settings
from homepot_foundation.tokens import bearer_token
from query_api.deps import DeliveryDep, PrivacyDep, SettingsDep
from query_api.otlp_body import BadCompression, content_coding, decompress
from query_api.request_body import BodyTooLarge, read_limited

logger = logging.getLogger(__name__)

router = APIRouter(tags=["otlp"])

_MEDIA_TYPES: dict[str, Encoding] = {"application/x-protobuf": "protobuf", "application/json": "json"}
_CONTENT_TYPES: dict[Encoding, str] = {"protobuf": "application/x-protobuf", "json": "application/json"}
RETRY_AFTER_S = 30
# Writes serialise on the one writer connection anyway; a few threads keep decoding going
# without letting a burst of collector requests take every worker thread from the query API.
_INGEST_THREADS = 4
_GRPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    503: code_pb2.UNAVAILABLE,
}


@dataclass
class _Refusal(Exception):
    status_code: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Signal:
    noun: str
    decode: Callable[[bytes, Encoding], Decoded[Any]]
    to_rows: Callable[[Any, Privacy], list[TableRow]]
    respond: Callable[[int, str], Message]


def _trace_response(rejected: int, message: str) -> Message:
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return response


def _logs_response(rejected: int, message: str) -> Message:
    response = ExportLogsServiceResponse()
    if rejected:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = message
    return response


_TRACES = _Signal("spans", decode_traces, span_to_rows, _trace_response)
_LOGS = _Signal("log records", decode_logs, log_record_to_rows, _logs_response)


def _encoding_of(content_type: str | None) -> Encoding | None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return _MEDIA_TYPES.get(media_type)


def _authorized(header: str | None, token: str) -> bool:
    given = bearer_token(header)
    # compare_digest: the time taken must not tell how much of a guessed token was right.
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _ingest(
    raw: bytes,
    coding: str,
    encoding: Encoding,
    signal: _Signal,
    delivery: Delivery,
    privacy: Privacy,
    settings: Settings,
) -> Message:
    """Decompress, decode, map and write one request (in a worker thread); the OTLP response."""
    limit = settings.ingest_max_body_bytes
    try:
        decoded = signal.decode(decompress(raw, coding, limit), encoding)
    except BodyTooLarge as error:
        raise _Refusal(status.HTTP_413_CONTENT_TOO_LARGE, str(error)) from None
    except (BadCompression, OtlpDecodeError) as error:
        raise _Refusal(status.HTTP_400_BAD_REQUEST, str(error)) from None
    # Records the decoder refused; RowBatch counts those the mapping refuses itself.
    delivery.stats.add("rejected", "unmapped", decoded.rejected)
    batch = RowBatch(delivery.stats)
    for record in decoded.records:
        if not batch.add_from(signal.to_rows, record, privacy):
            decoded.reject("could not be mapped to a row")
    if decoded.rejected:
        logger.info("OTLP %s: %d rejected (%s)", signal.noun, decoded.rejected, decoded.error_message)
    if not delivery.deliver(batch.rows):
        raise _Refusal(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "analytics storage cannot keep these rows right now (database away and spool full)",
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    rejected_message = f"{decoded.rejected} {signal.noun} rejected: {decoded.error_message}"
    return signal.respond(decoded.rejected, rejected_message if decoded.rejected else "")


def _error(refusal: _Refusal, encoding: Encoding) -> Response:
    body = status_pb2.Status(
        code=_GRPC_CODES.get(refusal.status_code, code_pb2.UNKNOWN), message=refusal.message
    )
    return Response(
        serialize(body, encoding),
        status_code=refusal.status_code,
        media_type=_CONTENT_TYPES[encoding],
        headers=refusal.headers,
    )


def _limiter(request: Request) -> anyio.CapacityLimiter:
    limiter = getattr(request.app.state, "otlp_ingest_limiter", None)
    if limiter is None:
        limiter = anyio.CapacityLimiter(_INGEST_THREADS)
        request.app.state.otlp_ingest_limiter = limiter
    return limiter


async def _receive(
    request: Request, settings: Settings, delivery: Delivery, privacy: Privacy, signal: _Signal
) -> Response:
    encoding = _encoding_of(request.headers.get("content-type"))
    # Errors before the media type is known are answered in JSON, the readable one.
    reply_encoding: Encoding = encoding or "json"
    try:
        if settings.ingest_token and not _authorized(
            request.headers.get("authorization"), settings.ingest_token
        ):
            raise _Refusal(
                status.HTTP_401_UNAUTHORIZED,
                "a valid ingest token is required",
                {"WWW-Authenticate": "Bearer"},
            )
        if encoding is None:
            raise _Refusal(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/x-protobuf or application/json",
            )
        coding = content_coding(request.headers.get("content-encoding"))
        if coding is None:
            raise _Refusal(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Content-Encoding must be gzip, deflate or identity"
            )
        try:
            raw = await read_limited(request, settings.ingest_max_body_bytes)
        except BodyTooLarge as error:
            raise _Refusal(status.HTTP_413_CONTENT_TOO_LARGE, str(error)) from None
        work = partial(_ingest, raw, coding, encoding, signal, delivery, privacy, settings)
        response = await anyio.to_thread.run_sync(work, limiter=_limiter(request))
    except _Refusal as refusal:
        if refusal.status_code >= 500:
            logger.warning("OTLP %s refused: %s", signal.noun, refusal.message)
        return _error(refusal, reply_encoding)
    return Response(serialize(response, encoding), media_type=_CONTENT_TYPES[encoding])


_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Undecodable body"},
    401: {"description": "Missing or wrong ingest token"},
    413: {"description": "Body (or its decompressed form) too large"},
    415: {"description": "Unsupported Content-Type or Content-Encoding"},
    503: {"description": "Rows could not be kept right now; retry after Retry-After seconds"},
}


@router.post("/v1/traces", openapi_extra=_OPENAPI, responses=_RESPONSES)
async def receive_traces(
    request: Request, settings: SettingsDep, delivery: DeliveryDep, privacy: PrivacyDep
) -> Response:
    """OTLP/HTTP trace export: store the requests, jobs and exceptions the spans describe."""
    return await _receive(request, settings, delivery, privacy, _TRACES)


@router.post("/v1/logs", openapi_extra=_OPENAPI, responses=_RESPONSES)
async def receive_logs(
    request: Request, settings: SettingsDep, delivery: DeliveryDep, privacy: PrivacyDep
) -> Response:
    """OTLP/HTTP logs export: store the device states, errors and activities the records describe."""
    return await _receive(request, settings, delivery, privacy, _LOGS)
