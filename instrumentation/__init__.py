"""Instrument a FastAPI service: requests, exceptions, jobs, device states and errors become
OpenTelemetry spans and log records that land in the analytics tables."""

from instrumentation.jobs import JobRun, job_span
from instrumentation.records import record_device_state, record_error, record_user_activity
from instrumentation.setup import Telemetry, setup_telemetry
from instrumentation.stock import StockSpanDetails
from instrumentation.users import default_user_resolver, user_resolver_for

__all__ = [
    "JobRun",
    "StockSpanDetails",
    "Telemetry",
    "default_user_resolver",
    "job_span",
    "record_device_state",
    "record_error",
    "record_user_activity",
    "setup_telemetry",
    "user_resolver_for",
]
