"""A realistic mixed telemetry stream for the ingest benchmark, made by the real SDK.

Request spans carry the attributes our request middleware sets, as it sets them (stable HTTP
semantic conventions, ``instrumentation/middleware.py``); jobs, device state changes, recorded
errors and user activity come from the project's own helpers (``job_span``, ``record_*``). Every table gets
rows, in the proportions of a busy HOMEPOT backend: mostly requests, a few percent of each
of the rest. The objects are exactly what the batch processors hand to our exporters.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from exporter.conventions import INSTRUMENTATION_NAME
from instrumentation import _state, job_span, record_device_state, record_error, record_user_activity

ROUTES = (
    ("GET", "/api/v1/devices", "/api/v1/devices"),
    ("GET", "/api/v1/devices/{device_id}", "/api/v1/devices/dev_{n:03d}"),
    ("PUT", "/api/v1/devices/{device_id}", "/api/v1/devices/dev_{n:03d}"),
    ("GET", "/api/v1/sites", "/api/v1/sites"),
    ("POST", "/api/v1/jobs", "/api/v1/jobs"),
    ("POST", "/api/v1/auth/login", "/api/v1/auth/login"),
)
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
)
JOB_TYPES = ("firmware_update", "restart", "config_change", "health_check")
STATES = ("online", "offline", "maintenance", "error")
ACTIVITIES = ("page_view", "click", "search", "form_submit", "modal_open")

# Out of every 100 records: 84 requests (3 of them 4xx, 1 an unhandled 500 with its exception
# event, which adds an error_logs row), 4 jobs, 4 device state changes, 2 recorded errors,
# 6 user activities.
MIX = (
    ("request", 80),
    ("request_4xx", 3),
    ("request_500", 1),
    ("job", 4),
    ("device", 4),
    ("error", 2),
    ("activity", 6),
)


@dataclass
class Stream:
    spans: list[ReadableSpan]
    logs: list[ReadableLogRecord]


def _failing_call(device: str) -> None:
    raise ConnectionError(f"device {device} did not answer within 5000 ms (10.0.3.17:1883)")


def _request_span(tracer: Tracer, rng: random.Random, start_ns: int, status: int) -> None:
    method, route, path_template = rng.choice(ROUTES)
    path = path_template.format(n=rng.randrange(500))
    peer_ip = f"10.0.{rng.randrange(4)}.{rng.randrange(1, 250)}"
    # What instrumentation/middleware.py sets: three attributes at the start, the rest at the end.
    span = tracer.start_span(
        method,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path, "url.scheme": "http"},
        start_time=start_ns,
    )
    if status == 500:  # ExceptionRecorder: the exception goes on the span before the 500
        try:
            _failing_call("dev_001")
        except ConnectionError as error:
            span.record_exception(error, escaped=True)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    attributes: dict[str, str | int] = {
        "http.response.status_code": status,
        "http.request.body.size": 0 if method == "GET" else rng.randrange(40, 900),
        "http.response.body.size": rng.randrange(20, 4000),
        "user_agent.original": USER_AGENT,
        "client.address": peer_ip,
    }
    if status >= 400:
        message = "Internal Server Error" if status == 500 else "Device not found"
        attributes["homepot.http.error_message"] = message
    attributes["enduser.id"] = f"user{rng.randrange(200)}"
    attributes["http.route"] = route
    span.update_name(f"{method} {route}")
    span.set_attributes(attributes)
    span.end(end_time=start_ns + rng.randrange(2, 80) * 1_000_000)


def generate(records: int, seed: int = 8) -> Stream:
    """``records`` spans and log records in the proportions of ``MIX`` (deterministic per seed)."""
    resource = Resource.create({"service.name": "homepot-api"})
    tracer_provider = TracerProvider(resource=resource)
    spans_out = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans_out))
    logger_provider = LoggerProvider(resource=resource)
    logs_out = InMemoryLogRecordExporter()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs_out))
    tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME)
    # The record_* helpers and job_span find their tracer and logger here, as after setup_telemetry.
    _state.configure(tracer, logger_provider.get_logger(INSTRUMENTATION_NAME))
    rng = random.Random(seed)
    kinds = [kind for kind, weight in MIX for _ in range(weight)]
    # Requests end about now, where the SDK puts the jobs' and log records' own timestamps:
    # one timeline, as a live service makes it (a batch's rows within seconds of each other).
    start_ns = time.time_ns() - records * 1_050_000
    try:
        for index in range(records):
            kind = kinds[index % len(kinds)]
            start_ns += rng.randrange(100_000, 2_000_000)
            device = f"dev_{rng.randrange(500):03d}"
            user = f"user{rng.randrange(200)}"
            if kind.startswith("request"):
                status = {"request": rng.choice((200, 200, 200, 201, 204)), "request_4xx": 404}.get(kind, 500)
                _request_span(tracer, rng, start_ns, status)
            elif kind == "job":
                with job_span(
                    f"job_{index}",
                    rng.choice(JOB_TYPES),
                    device_id=device,
                    initiated_by=user,
                    firmware="2.4.1",
                ) as job:
                    job.retry_count = rng.randrange(3)
                    if rng.random() < 0.2:
                        job.fail("E_TIMEOUT", "device did not confirm within 30 s")
            elif kind == "device":
                previous, new = rng.sample(STATES, 2)
                record_device_state(
                    device,
                    previous,
                    new,
                    changed_by=rng.choice((user, "system")),
                    reason="scheduled maintenance window",
                    site="site_12",
                )
            elif kind == "error":
                try:
                    _failing_call(device)
                except ConnectionError as error:
                    record_error(
                        "external_service",
                        "error",
                        "E_MQTT_TIMEOUT",
                        str(error),
                        exception=error,
                        endpoint="/api/v1/devices/{device_id}",
                        user_id=user,
                        device_id=device,
                    )
            else:
                activity = rng.choice(ACTIVITIES)
                record_user_activity(
                    activity,
                    user_id=user,
                    session_id=f"s-{rng.randrange(1000):04d}",
                    page_url="/devices?site=site_12",
                    element_id="add-device-button" if activity == "click" else None,
                    search_query="temperature" if activity == "search" else None,
                    duration_ms=rng.randrange(50, 30000),
                )
    finally:
        _state.configure(None, None)
    return Stream(list(spans_out.get_finished_spans()), list(logs_out.get_finished_logs()))
