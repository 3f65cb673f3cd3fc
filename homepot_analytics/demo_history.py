"""The demo's past: hours of traffic before now, so its dashboard has trends to show.

Live traffic can only be recorded at the moment it happens. The past is recorded the way an
instrumented service would have recorded it, with the times it would have had: server and job
spans with explicit start and end times and log records with explicit timestamps, through the
demo service's own OpenTelemetry providers, hence the same exporter, mapping and writer (and
rollups) as every other row. A daily rhythm, a slow and failing hour of the daily report five
hours ago, one device that fails its jobs more than the others.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from exporter import conventions as c
from exporter.events import Event, device_state_event, error_event, user_activity_event
from homepot_foundation.database import libpq_url
from instrumentation import Telemetry

SLOT = timedelta(minutes=5)
DEVICES = [f"dev_{n:03d}" for n in range(1, 13)]
FLAKY_DEVICE = "dev_007"
STATES = ["online", "offline", "maintenance", "online", "error", "online"]
JOB_TYPES = ["firmware_update", "restart", "config_change", "health_check"]
PAGES = ["/devices", "/sites", "/jobs", "/reports"]
SEARCHES = ["temperature", "gateway", "offline", "pos terminal"]
# (method, route, how often, typical ms)
ROUTES = [
    ("GET", "/api/v1/devices", 30, 4.0),
    ("GET", "/api/v1/devices/{device_id}", 15, 2.0),
    ("GET", "/api/v1/sites/{site_id}", 8, 2.5),
    ("PUT", "/api/v1/devices/{device_id}/state", 14, 6.0),
    ("POST", "/api/v1/devices/{device_id}/jobs", 18, 9.0),
    ("POST", "/api/v1/auth/login", 5, 30.0),
    ("GET", "/api/v1/reports/daily", 4, 40.0),
]


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)


def _at(event: Event, moment: datetime) -> Event:
    return replace(event, timestamp_ns=_ns(moment))


class _History:
    def __init__(
        self, telemetry: Telemetry, users: tuple[str, ...], now: datetime, rng: random.Random
    ) -> None:
        self.tracer = telemetry.tracer_provider.get_tracer(c.INSTRUMENTATION_NAME)
        self.events = telemetry.logger_provider.get_logger(c.INSTRUMENTATION_NAME)
        self.users = users
        self.now = now
        self.rng = rng
        self.state = dict.fromkeys(DEVICES, "online")
        self.counts = {"requests": 0, "jobs": 0, "state changes": 0, "frontend events": 0}

    def request(self, moment: datetime, incident: bool) -> None:
        rng = self.rng
        method, route, _, typical = rng.choices(ROUTES, [r[2] for r in ROUTES])[0]
        device = FLAKY_DEVICE if rng.random() < 0.15 else rng.choice(DEVICES)
        site = f"site-00{rng.randint(1, 4)}"
        path = route.replace("{device_id}", device).replace("{site_id}", site)
        status, exception = 200, None
        slow = 8.0 if incident and route.endswith("daily") else 1.0
        if route.endswith("{site_id}") and site == "site-004":
            status = 404
        elif route.endswith("login"):
            status = 401 if rng.random() < 0.4 else 200
        elif route.endswith("daily") and rng.random() < (0.6 if incident else 0.08):
            status, exception = 500, KeyError("sales")
        elif route.endswith("state") and rng.random() < 0.05:
            status = 422
        elif route.endswith("jobs"):
            status = 202  # the job runs after the answer (below)
        duration = timedelta(milliseconds=typical * slow * rng.lognormvariate(0, 0.5))
        attributes: dict[str, str | int] = {
            c.HTTP_METHOD[0]: method,
            c.HTTP_ROUTE: route,
            c.HTTP_PATH[0]: path,
            c.HTTP_STATUS_CODE[0]: status,
            c.USER_ID[0]: rng.choice(self.users),
            c.CLIENT_ADDRESS[0]: "127.0.0.1",
            c.USER_AGENT[0]: "homepot-demo/1.0",
            c.RESPONSE_BODY_SIZE[0]: rng.randint(80, 1200),
        }
        span = self.tracer.start_span(
            f"{method} {route}", kind=SpanKind.SERVER, attributes=attributes, start_time=_ns(moment)
        )
        if exception is not None:
            try:
                raise exception
            except KeyError as error:
                span.record_exception(error, timestamp=_ns(moment + duration))
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=_ns(moment + duration))
        self.counts["requests"] += 1
        if route.endswith("jobs"):
            self.job(moment + duration, device, trace.set_span_in_context(span))
        if route.endswith("state") and status == 200:
            self.state_change(moment, device)

    def job(self, moment: datetime, device: str, parent: Context) -> None:
        rng = self.rng
        failing = 0.45 if device == FLAKY_DEVICE else 0.08
        status = rng.choices(
            ["success", "failed", "timeout", "cancelled"], [1 - failing, failing * 0.6, failing * 0.4, 0.03]
        )[0]
        job_type = rng.choice(JOB_TYPES)
        duration = timedelta(milliseconds=(30_000 if status == "timeout" else rng.lognormvariate(7, 0.6)))
        attributes: dict[str, str | int] = {
            c.JOB_ID: f"job_{uuid.uuid4().hex[:8]}",
            c.JOB_TYPE: job_type,
            c.JOB_STATUS: status,
            c.DEVICE_ID: device,
            c.JOB_INITIATED_BY: rng.choice(self.users),
            c.JOB_RETRY_COUNT: rng.choice([0, 0, 0, 1, 2]),
        }
        if status == "failed":
            attributes[c.JOB_ERROR_CODE] = "E_FW_CHECKSUM"
            attributes[c.JOB_ERROR_MESSAGE] = "checksum mismatch after download"
        elif status == "timeout":
            attributes[c.JOB_ERROR_CODE] = "TimeoutError"
        span = self.tracer.start_span(
            f"job {job_type}", context=parent, attributes=attributes, start_time=_ns(moment)
        )
        span.end(end_time=_ns(moment + duration))
        self.counts["jobs"] += 1
        if status == "failed":
            event = error_event(
                "external_service",
                "error",
                "E_FW_CHECKSUM",
                "checksum mismatch after download",
                exception_type=None,
                stack_trace=None,
                endpoint=None,
                user_id=None,
                device_id=device,
                context={"job_type": job_type},
            )
            _at(event, moment + duration).emit(self.events, trace.set_span_in_context(span))

    def state_change(self, moment: datetime, device: str) -> None:
        previous = self.state[device]
        new = self.rng.choice([state for state in STATES if state != previous])
        self.state[device] = new
        reason = self.rng.choice(["Maintenance", "Auto-recovery", "Heartbeat lost", None])
        _at(device_state_event(device, previous, new, "system", reason, {}), moment).emit(self.events)
        self.counts["state changes"] += 1

    def session(self, moment: datetime) -> None:
        rng = self.rng
        user, session = rng.choice(self.users), uuid.uuid4().hex
        for step in range(rng.randint(3, 9)):
            at = moment + timedelta(seconds=20 * step)
            page = rng.choice(PAGES)
            kind = rng.choices(["page_view", "click", "search", "form_submit"], [4, 4, 1, 1])[0]
            event = user_activity_event(
                kind,
                user_id=user,
                session_id=session,
                page_url=page,
                element_id={
                    "click": rng.choice(["add-device-button", "refresh", "nav-sites", "export-csv"])
                }.get(kind),
                search_query=rng.choice(SEARCHES) if kind == "search" else None,
                duration_ms=rng.randint(500, 20_000) if kind == "page_view" else None,
                timestamp_ns=_ns(at),
            )
            event.emit(self.events)
            self.counts["frontend events"] += 1


def record_history(
    telemetry: Telemetry, users: tuple[str, ...], hours: int, seed: int = 17
) -> dict[str, int]:
    """``hours`` of traffic before now through ``telemetry``; what was recorded, counted."""
    now = datetime.now(UTC)
    history = _History(telemetry, users, now, random.Random(seed))
    slots = int(timedelta(hours=hours) / SLOT)
    for index in range(slots):
        start = now - timedelta(hours=hours) + index * SLOT
        # Busier by day (UTC), quiet at night.
        rhythm = 1 + 0.8 * math.sin((start.hour + start.minute / 60 - 8) / 24 * 2 * math.pi)
        incident = timedelta(hours=6) >= now - start > timedelta(hours=5)
        for _ in range(max(1, round(6 * rhythm + history.rng.random() * 2))):
            history.request(start + timedelta(seconds=history.rng.uniform(0, SLOT.total_seconds())), incident)
        if history.rng.random() < 0.35 * rhythm:
            history.session(start + timedelta(seconds=history.rng.uniform(0, 120)))
    telemetry.force_flush()
    return history.counts


def resolve_past(database_url: str, service_name: str, error_code: str) -> int:
    """Mark the stored occurrences of one kind of error resolved, as someone fixing it would: the
    next occurrence makes its group regressed. The number of occurrences resolved."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        cursor = conn.execute(
            "UPDATE error_logs SET resolved = true, resolved_at = now() "
            "WHERE service_name = %s AND error_code = %s AND NOT resolved",
            (service_name, error_code),
        )
        return cursor.rowcount
