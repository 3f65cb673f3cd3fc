"""``job_span``: run a job inside a span that becomes a ``job_outcomes`` row.

    with job_span("job_456", "firmware_update", device_id="dev_001", initiated_by=user.id) as job:
        job.retry_count = attempt
        ...

The outcome follows from how the block ends: normally ``success``; an exception ``failed``
(with its code and message); ``TimeoutError`` ``timeout``; cancellation (asyncio or
``KeyboardInterrupt``) ``cancelled``. ``job.status = ...`` sets it explicitly: an alias such as
``"completed"`` is stored as the spec's status it means (``conventions.JOB_STATUS_ALIASES``), any
other status as given. It works with ``with`` and ``async with``, and re-raises whatever the
block raised.
"""

from __future__ import annotations

import asyncio
import json
import time
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from exporter import conventions as c
from exporter.containment import never_raise
from exporter.own_logging import exporter_logger
from instrumentation import _state
from instrumentation.detached import fresh_start
from instrumentation.log_capture import mark_recorded

logger = exporter_logger(__name__)


class JobRun:
    """What the block can set about its job; read when the block ends."""

    def __init__(self, job_id: str, job_type: str, extra: dict[str, Any]) -> None:
        self.job_id = job_id
        self.job_type = job_type
        self.status: str | None = None
        self.retry_count = 0
        self.duration_ms: int | None = None
        self.error_code: str | None = None
        self.error_message: str | None = None
        self.extra_data: dict[str, Any] = dict(extra)

    def fail(self, error_code: str | None = None, error_message: str | None = None) -> None:
        """Mark the job failed without raising."""
        self.status, self.error_code, self.error_message = "failed", error_code, error_message


def _status_for(exception: BaseException) -> str:
    if isinstance(exception, TimeoutError):  # asyncio.TimeoutError is TimeoutError on 3.11
        return "timeout"
    if isinstance(exception, asyncio.CancelledError | KeyboardInterrupt):
        return "cancelled"
    return "failed"


def _int_or_none(job: JobRun, name: str, value: Any) -> int | None:
    """An integer the block set (``retry_count``, ``duration_ms``); a value that is none is logged
    and left out, never raised into the job's code."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        logger.warning("job_span: job %s set %s=%r, not an integer; not recorded", job.job_id, name, value)
        return None


def _describe_outcome(span: trace.Span, job: JobRun, exception: BaseException | None, started: float) -> None:
    """Put the job's outcome on its span as the block left it."""
    if exception is not None:
        job.status = job.status or _status_for(exception)
        job.error_code = job.error_code or getattr(exception, "error_code", None) or type(exception).__name__
        job.error_message = job.error_message or str(exception) or type(exception).__name__
        span.record_exception(exception)
        mark_recorded(exception)
    # An alias is stored as the spec's status ("completed" -> "success"); an unknown status as given.
    status = c.job_status(job.status) or "success"
    duration = job.duration_ms
    if duration is None:
        duration = round((time.perf_counter() - started) * 1000)
    attributes: dict[str, Any] = {c.JOB_STATUS: status}
    for key, name, value in (
        (c.JOB_DURATION_MS, "duration_ms", duration),
        (c.JOB_RETRY_COUNT, "retry_count", job.retry_count),
    ):
        number = _int_or_none(job, name, value)
        if number is not None:
            attributes[key] = number
    if job.error_code:
        attributes[c.JOB_ERROR_CODE] = str(job.error_code)
    if job.error_message:
        attributes[c.JOB_ERROR_MESSAGE] = str(job.error_message)
    if job.extra_data:
        attributes[c.EXTRA] = json.dumps(job.extra_data, default=str)
    span.set_attributes(attributes)
    # An unknown status ("pending") says nothing of an error: the span's status stays unset then.
    if status != "success" and (status in c.JOB_STATUSES or exception is not None):
        span.set_status(Status(StatusCode.ERROR, f"{status}: {job.error_message or ''}".strip(": ")))


class job_span:
    def __init__(
        self,
        job_id: str,
        job_type: str,
        device_id: str | None = None,
        initiated_by: str | None = None,
        **extra: Any,
    ) -> None:
        self._attributes: dict[str, Any] = {c.JOB_ID: str(job_id), c.JOB_TYPE: job_type}
        if device_id is not None:
            self._attributes[c.DEVICE_ID] = str(device_id)
        if initiated_by is not None:
            self._attributes[c.JOB_INITIATED_BY] = str(initiated_by)
        self.job = JobRun(str(job_id), job_type, extra)
        self._span: trace.Span | None = None  # None: no span could be started
        self._token: object | None = None
        self._started = 0.0

    def __enter__(self) -> JobRun:
        self._started = time.perf_counter()
        with never_raise(
            "job_span could not start a span for job %s; job not recorded", self.job.job_id, logger=logger
        ):
            parent, links = fresh_start()  # a new trace when the request that started us has ended
            span = _state.tracer().start_span(
                f"job {self.job.job_type}",
                context=parent,
                kind=SpanKind.INTERNAL,
                attributes=self._attributes,
                links=links,
            )
            self._token = otel_context.attach(trace.set_span_in_context(span, parent))
            self._span = span
        return self.job

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        span = self._span
        if span is None:
            return
        try:
            with never_raise(
                "job_span could not describe job %s; recorded as it is", self.job.job_id, logger=logger
            ):
                _describe_outcome(span, self.job, exception, self._started)
        finally:
            with never_raise("job_span could not end its span", logger=logger):
                span.end()
                if self._token is not None:
                    otel_context.detach(self._token)  # type: ignore[arg-type]

    async def __aenter__(self) -> JobRun:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exception, traceback)
