"""Zero-code: ``opentelemetry-instrument --traces_exporter homepot_analytics --logs_exporter
homepot_analytics uvicorn app:app`` on an app without a line of ours lands rows, through the
normal pipeline (privacy, spool, counted drops)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import fetch_rows
from tests.support.processes import AppProcess

INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")

pytestmark = pytest.mark.slow


NOT_SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
SAMPLERS = {
    "default": {},
    # One trace in ten goes to a collector; the tables still get every request.
    "traceidratio-0.1": {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    "parentbased-always-off": {"OTEL_TRACES_SAMPLER": "parentbased_always_off"},
}


@pytest.mark.skipif(not INSTRUMENT.exists() and not shutil.which("opentelemetry-instrument"), reason="no CLI")
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_opentelemetry_instrument_with_our_exporters_lands_rows(
    db_url: str, tmp_path: Path, sampler: str
) -> None:
    env = {
        **SAMPLERS[sampler],
        "HOMEPOT_ANALYTICS_DATABASE_URL": db_url,
        "HOMEPOT_ANALYTICS_DATA_DIR": str(tmp_path / "data"),
        "HOMEPOT_ANALYTICS_EXPORT_DELAY_MS": "100",
        "OTEL_SERVICE_NAME": "zero-code-app",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "health",
    }
    launcher = (
        str(INSTRUMENT),
        "--traces_exporter",
        "homepot_analytics",
        "--logs_exporter",
        "homepot_analytics",
        "--metrics_exporter",
        "none",
    )
    app = AppProcess(env, tmp_path / "app.log", module="tests.e2e.zero_code_app:app", launcher=launcher)
    try:
        with httpx.Client(base_url=app.base_url, timeout=10) as client:
            assert client.get("/devices/dev-7", headers={"X-Forwarded-For": "10.1.2.3"}).status_code == 200
            assert client.get("/devices/missing").status_code == 404
            assert client.get("/lookup").status_code == 200
            assert client.get("/logged", headers={"traceparent": NOT_SAMPLED}).status_code == 200
            # Last: the exception reaches uvicorn, which closes the connection after the 500.
            assert client.get("/crash").status_code == 500
    finally:
        app.terminate()  # SIGTERM: uvicorn stops, the SDK shuts down, our pipeline writes what it holds
    log = app.log()
    requests = {row["endpoint"]: row for row in fetch_rows(db_url, "api_request_logs")}
    assert set(requests) == {"/devices/dev-7", "/devices/missing", "/crash", "/lookup", "/logged"}, (
        set(requests),
        log[-3000:],
    )
    assert {row["service_name"] for row in requests.values()} == {"zero-code-app"}
    assert requests["/devices/dev-7"]["route"] == "/devices/{device_id}"
    assert requests["/devices/missing"]["status_code"] == 404
    assert requests["/crash"]["status_code"] == 500
    assert "division by zero" in requests["/crash"]["error_message"]
    # uvicorn believes X-Forwarded-For from loopback; stored as its /24 (the privacy default).
    assert requests["/devices/dev-7"]["ip_address"] == "10.1.2.0"
    errors = fetch_rows(db_url, "error_logs")
    # On the stock server span and in uvicorn's "Exception in ASGI application" line: stored once.
    (crash,) = [row for row in errors if row["error_code"] == "ZeroDivisionError"]
    assert (crash["trace_id"], crash["endpoint"]) == (requests["/crash"]["trace_id"], "/crash")
    # logger.exception("lookup failed"): the developer's message, the exception beside it, and
    # the request it was logged in (joined through the record's trace).
    (lookup,) = [row for row in errors if row["error_code"] == "KeyError"]
    assert lookup["error_message"] == "lookup failed"
    assert lookup["context"]["exception_message"] == "absent"
    assert lookup["context"]["logger"] == "zero_code_app"
    assert "Traceback" in (lookup["stack_trace"] or "")
    assert (lookup["endpoint"], lookup["trace_id"]) == ("/lookup", requests["/lookup"]["trace_id"])
    # logger.error("...") without an exception, in a request whose caller said "not sampled".
    (logged,) = [row for row in errors if row["error_message"] == "cache refresh failed for dev-7"]
    assert (logged["error_code"], logged["endpoint"]) == (None, "/logged")
    assert logged["trace_id"] == requests["/logged"]["trace_id"] == NOT_SAMPLED.split("-")[1]
