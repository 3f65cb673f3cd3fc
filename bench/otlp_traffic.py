"""OTLP/JSON trace requests of many server spans, each in a trace of its own: the traffic of the
sink benchmark (`bench/sinks.py`) and of the tests that send to one or more sinks and count rows."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

MS = 1_000_000
# A few routes and many durations, in random order: concurrent writers meet the same rollup groups
# and latency bins, each batch in an order of its own.
ROUTES = ("/api/v1/devices/{device_id}", "/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/sites")


def _attr(key: str, value: str | int) -> dict[str, Any]:
    typed = {"intValue": str(value)} if isinstance(value, int) else {"stringValue": value}
    return {"key": key, "value": typed}


def _span(trace_id: str, start_ns: int, status: int, route: str, duration_ms: int) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": trace_id[:16],
        "name": f"GET {route}",
        "kind": 2,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + duration_ms * MS),
        "attributes": [
            _attr("http.request.method", "GET"),
            _attr("url.path", route.replace("{device_id}", "42").replace("{job_id}", "7")),
            _attr("http.route", route),
            _attr("http.response.status_code", status),
        ],
        "status": {},
    }
    if status >= 500:
        span["status"] = {"code": 2, "message": "device store timed out"}
        span["events"] = [
            {
                "timeUnixNano": str(start_ns + MS // 2),
                "name": "exception",
                "attributes": [
                    _attr("exception.type", "TimeoutError"),
                    _attr("exception.message", "device store timed out"),
                    _attr("exception.stacktrace", "Traceback: ..."),
                ],
            }
        ]
    return span


def request_traces(
    count: int, *, service: str = "scale-test", failing_every: int = 0, start_ns: int | None = None
) -> tuple[dict[str, Any], list[str]]:
    """One ExportTraceServiceRequest (as JSON) of ``count`` SERVER spans and their trace ids.

    Every ``failing_every``-th span is a 500 with an exception event: an ``error_logs`` row too."""
    # Within the last hour, a second apart: a request's spans fall into several 5-minute buckets.
    start = start_ns if start_ns is not None else time.time_ns() - random.randint(30, 60) * 60_000 * MS
    trace_ids = [uuid.uuid4().hex for _ in range(count)]
    spans = [
        _span(
            trace_id,
            start + n * 1000 * MS,
            500 if failing_every and n % failing_every == 0 else 200,
            ROUTES[n % len(ROUTES)],
            1 + (n * 7) % 90,
        )
        for n, trace_id in enumerate(trace_ids)
    ]
    random.shuffle(spans)
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr("service.name", service)]},
                "scopeSpans": [{"scope": {"name": "scale-test"}, "spans": spans}],
            }
        ]
    }
    return body, trace_ids
