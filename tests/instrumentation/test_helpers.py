"""job_span and the record_* helpers, observed through an in-memory exporter and the mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from exporter import conventions as c
from exporter.mapping import log_record_to_rows, span_to_rows
from instrumentation import _state, job_span, record_device_state, record_error


@pytest.fixture()
def captured() -> Iterator[tuple[InMemorySpanExporter, InMemoryLogRecordExporter]]:
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    tracer_provider, logger_provider = TracerProvider(), LoggerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    _state.configure(tracer_provider.get_tracer("t"), logger_provider.get_logger("t"))
    yield spans, logs
    _state.configure(None, None)


def job_rows(spans: InMemorySpanExporter) -> list[dict[str, Any]]:
    return [
        row
        for span in spans.get_finished_spans()
        for table, row in span_to_rows(span)
        if table == "job_outcomes"
    ]


def test_sync_job_outcomes(captured: tuple[InMemorySpanExporter, InMemoryLogRecordExporter]) -> None:
    spans, _ = captured
    with job_span("j-ok", "restart", device_id="dev_1", initiated_by="u1", site="s1") as job:
        job.retry_count = 2
        job.duration_ms = 1234
    with pytest.raises(ValueError), job_span("j-fail", "config_change"):
        raise ValueError("bad config")
    with pytest.raises(TimeoutError), job_span("j-timeout", "firmware_update"):
        raise TimeoutError("device silent")
    with job_span("j-cancel", "restart") as job:
        job.status = "cancelled"
    with job_span("j-marked", "restart") as job:
        job.fail("E_BUSY", "device busy")
    rows = {row["job_id"]: row for row in job_rows(spans)}
    assert rows["j-ok"]["status"] == "success"
    assert (rows["j-ok"]["retry_count"], rows["j-ok"]["duration_ms"]) == (2, 1234)
    assert (rows["j-ok"]["device_id"], rows["j-ok"]["initiated_by"]) == ("dev_1", "u1")
    assert rows["j-ok"]["extra_data"] == '{"site": "s1"}'
    assert (rows["j-fail"]["status"], rows["j-fail"]["error_code"]) == ("failed", "ValueError")
    assert rows["j-fail"]["error_message"] == "bad config"
    assert rows["j-timeout"]["status"] == "timeout"
    assert rows["j-cancel"]["status"] == "cancelled"
    assert (rows["j-marked"]["status"], rows["j-marked"]["error_code"]) == ("failed", "E_BUSY")


def test_a_job_status_set_in_another_vocabulary(
    captured: tuple[InMemorySpanExporter, InMemoryLogRecordExporter],
) -> None:
    spans, _ = captured
    for job_id, status in (("j-completed", "completed"), ("j-error", "error"), ("j-pending", "pending")):
        with job_span(job_id, "restart", initiated_by="orchestrator") as job:
            job.status = status
    rows = {row["job_id"]: row for row in job_rows(spans)}
    assert {job_id: row["status"] for job_id, row in rows.items()} == {
        "j-completed": "success",
        "j-error": "failed",
        "j-pending": "pending",  # unknown: as given, not "failed"
    }
    assert rows["j-completed"]["initiated_by"] == "orchestrator"
    codes = {span.attributes[c.JOB_ID]: span.status.status_code for span in spans.get_finished_spans()}
    assert codes == {
        "j-completed": StatusCode.UNSET,
        "j-error": StatusCode.ERROR,
        "j-pending": StatusCode.UNSET,
    }


def test_async_job_outcomes_including_cancellation(
    captured: tuple[InMemorySpanExporter, InMemoryLogRecordExporter],
) -> None:
    spans, _ = captured

    async def work(job_id: str, seconds: float) -> None:
        async with job_span(job_id, "health_check"):
            await asyncio.sleep(seconds)

    async def main() -> None:
        await work("a-ok", 0)
        task = asyncio.create_task(work("a-cancel", 10))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(work("a-timeout", 10), 0.01)

    asyncio.run(main())
    statuses = {row["job_id"]: row["status"] for row in job_rows(spans)}
    # wait_for cancels the inner block: from inside, a timeout looks like a cancellation.
    assert statuses == {"a-ok": "success", "a-cancel": "cancelled", "a-timeout": "cancelled"}


def test_an_exception_carrying_error_code_keeps_it(
    captured: tuple[InMemorySpanExporter, InMemoryLogRecordExporter],
) -> None:
    spans, _ = captured

    class DeviceError(Exception):
        error_code = "E_FW_CHECKSUM"

    with pytest.raises(DeviceError), job_span("j", "firmware_update"):
        raise DeviceError("checksum mismatch")
    (row,) = job_rows(spans)
    assert (row["error_code"], row["error_message"]) == ("E_FW_CHECKSUM", "checksum mismatch")


def test_record_helpers_emit_log_records_that_map_to_rows(
    captured: tuple[InMemorySpanExporter, InMemoryLogRecordExporter],
) -> None:
    _, logs = captured
    record_device_state("dev_1", "online", "offline", reason="Maintenance", site="s1")
    try:
        raise RuntimeError("db down")
    except RuntimeError:
        record_error("database", "error", "E_DB", "database unavailable", endpoint="/api/v1/x", user_id="u9")
    rows = [row for record in logs.get_finished_logs() for row in log_record_to_rows(record)]
    (state_table, state), (error_table, error) = rows
    assert state_table == "device_state_history"
    assert (state["changed_by"], state["reason"], state["extra_data"]) == (
        "system",
        "Maintenance",
        '{"site": "s1"}',
    )
    assert error_table == "error_logs"
    assert (error["category"], error["error_code"], error["user_id"]) == ("database", "E_DB", "u9")
    assert error["endpoint"] == "/api/v1/x"
    assert "RuntimeError: db down" in error["stack_trace"], "the exception being handled is kept"
    assert state["event_id"] != error["event_id"]


def test_helpers_never_raise_without_setup() -> None:
    _state.configure(None, None)
    record_device_state("dev", None, "online")
    record_error("api", "info", None, "hello")
    with job_span("j", "restart"):
        pass


def test_a_job_that_sets_a_wrong_retry_count_is_recorded_and_never_raises(
    captured: tuple[InMemorySpanExporter, InMemoryLogRecordExporter], capsys: pytest.CaptureFixture[str]
) -> None:
    spans, _ = captured
    with job_span("j-two", "restart") as job:
        job.retry_count = "two"  # type: ignore[assignment]
        job.duration_ms = "long"  # type: ignore[assignment]
    rows = {row["job_id"]: row for row in job_rows(spans)}
    assert rows["j-two"]["status"] == "success"
    assert rows["j-two"]["retry_count"] == 0
    assert isinstance(rows["j-two"]["duration_ms"], int)  # measured, since the one set was no number
    logged = capsys.readouterr().err
    assert "retry_count='two', not an integer" in logged and "duration_ms='long'" in logged


def test_a_job_whose_tracer_fails_still_runs_its_block(
    captured: tuple[InMemorySpanExporter, InMemoryLogRecordExporter], capsys: pytest.CaptureFixture[str]
) -> None:
    class BrokenTracer:
        def start_span(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("tracer gone")

    _state.configure(BrokenTracer(), None)  # type: ignore[arg-type]
    ran = []
    with job_span("j-untraced", "restart"):
        ran.append(True)
    assert ran == [True]
    assert "could not start a span for job j-untraced" in capsys.readouterr().err
