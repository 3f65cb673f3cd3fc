"""Sink throughput with one and with two ``homepot-analytics serve`` processes on one database.

The same OTLP/HTTP traffic (requests of server spans, a fifth of them 500s with an exception,
so two tables fill) is sent by a few threads, round robin over the processes; the sink answers
200 only once the rows are stored, so rows/s is rows sent over the time until the last answer.
Every row is counted afterwards: ``rows_lost`` must be 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import psycopg

from bench.otlp_traffic import request_traces

ROOT = Path(__file__).resolve().parent.parent
# One fixed key: every process must pseudonymise alike (the README's advice for several sinks).
PSEUDONYM_KEY = "bench-sinks-pseudonym-key-0123456789"


@dataclass
class SinkRun:
    processes: int
    rows: int
    seconds: float
    rows_stored: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


@dataclass
class Sink:
    process: subprocess.Popen[bytes]
    base_url: str
    log: IO[bytes]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sinks(database_url: str, workers: Sequence[int], scratch: Path) -> list[Sink]:
    """A serve process per entry of ``workers`` (its ``--workers``), on free ports, each with its
    own data dir, started at once; returned once all answer (their starts migrate and create
    partitions concurrently)."""
    started: list[Sink] = []
    for index, worker_count in enumerate(workers):
        port = _free_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "HOMEPOT_ANALYTICS_DATABASE_URL": database_url,
            "HOMEPOT_ANALYTICS_DATA_DIR": str(scratch / f"sink-{index}-{port}"),
            "HOMEPOT_ANALYTICS_PSEUDONYM_KEY": PSEUDONYM_KEY,
        }
        log = open(scratch / f"sink-{index}-{port}.log", "ab")  # noqa: SIM115 - closed in stop_sinks
        command = [sys.executable, "-m", "homepot_analytics", "serve", "--port", str(port)]
        if worker_count > 1:
            command += ["--workers", str(worker_count)]
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append(Sink(process, f"http://127.0.0.1:{port}", log))
    try:
        for sink in started:
            _wait_ready(sink.process, sink.base_url)
    except RuntimeError:
        stop_sinks(started)
        raise
    return started


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sink at {base_url} exited ({process.returncode})")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"sink at {base_url} did not start")


def stop_sinks(started: list[Sink]) -> list[int]:
    """SIGTERM each (the lifespan writes what it holds); their exit codes."""
    for sink in started:
        if sink.process.poll() is None:
            sink.process.send_signal(signal.SIGTERM)
    codes = []
    for sink in started:
        try:
            codes.append(sink.process.wait(60))
        except subprocess.TimeoutExpired:
            sink.process.kill()
            codes.append(sink.process.wait(10))
        sink.log.close()
    return codes


def _stored(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        counts = "SELECT (SELECT count(*) FROM api_request_logs) + (SELECT count(*) FROM error_logs)"
        return int(conn.execute(counts).fetchone()[0])  # type: ignore[index]


def run_sinks(
    database_url: str, *, processes: int, requests: int, spans_per_request: int = 200, senders: int = 4
) -> SinkRun:
    """Send ``requests`` OTLP requests to ``processes`` sinks; the rows/s they stored them at."""
    bodies = []
    rows = 0
    for _ in range(requests):
        body, trace_ids = request_traces(spans_per_request, failing_every=5)
        bodies.append(json.dumps(body).encode())
        rows += len(trace_ids) + len(trace_ids) // 5  # a request row each, an error row per 500
    before = _stored(database_url)
    with tempfile.TemporaryDirectory(prefix="homepot-bench-sinks-") as scratch:
        started = start_sinks(database_url, [1] * processes, Path(scratch))
        try:
            urls = [f"{sink.base_url}/v1/traces" for sink in started]
            with httpx.Client(timeout=60, headers={"Content-Type": "application/json"}) as client:

                def send(index: int) -> int:
                    return client.post(urls[index % len(urls)], content=bodies[index]).status_code

                begin = time.perf_counter()
                with ThreadPoolExecutor(senders) as pool:
                    statuses = list(pool.map(send, range(len(bodies))))
                seconds = time.perf_counter() - begin
        finally:
            stop_sinks(started)
    refused = [status for status in statuses if status != 200]
    if refused:
        raise RuntimeError(f"{len(refused)} OTLP requests were refused: {sorted(set(refused))}")
    return SinkRun(processes, rows, seconds, _stored(database_url) - before)


def sink_latencies(database_url: str, *, requests: int, spans_per_request: int = 1000) -> list[float]:
    """Milliseconds one sink process takes to answer each of ``requests`` OTLP requests of
    ``spans_per_request`` spans, sent one after the other (the answer comes once stored)."""
    bodies = [
        json.dumps(request_traces(spans_per_request, failing_every=5)[0]).encode() for _ in range(requests)
    ]
    latencies = []
    with tempfile.TemporaryDirectory(prefix="homepot-bench-sinks-") as scratch:
        started = start_sinks(database_url, [1], Path(scratch))
        try:
            url = f"{started[0].base_url}/v1/traces"
            with httpx.Client(timeout=60, headers={"Content-Type": "application/json"}) as client:
                for body in bodies:
                    begin = time.perf_counter()
                    status = client.post(url, content=body).status_code
                    latencies.append((time.perf_counter() - begin) * 1000)
                    if status != 200:
                        raise RuntimeError(
                            f"an OTLP request of {spans_per_request} spans was refused: {status}"
                        )
        finally:
            stop_sinks(started)
    return latencies


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


def sink_figures(database_url: str, *, requests: int, spans_per_request: int = 200) -> dict[str, object]:
    """Rows/s with 1 and with 2 sink processes, in that order, on the same database; then one
    process's own latency for requests of 1,000 spans."""
    runs = [
        run_sinks(database_url, processes=count, requests=requests, spans_per_request=spans_per_request)
        for count in (1, 2)
    ]
    latencies = sink_latencies(database_url, requests=max(requests // 2, 10))
    return {
        "sink_rows_per_s": {str(run.processes): round(run.rows_per_s) for run in runs},
        "sink_rows_lost": sum(run.rows - run.rows_stored for run in runs),
        "sink_rows_per_run": runs[0].rows,
        "sink_1000_span_request_ms": {
            "requests": len(latencies),
            "p50": round(_percentile(latencies, 0.5), 1),
            "p99": round(_percentile(latencies, 0.99), 1),
            "max": round(max(latencies), 1),
        },
    }


def describe(figures: dict[str, object]) -> str:
    rates = figures["sink_rows_per_s"]
    latency = figures["sink_1000_span_request_ms"]
    assert isinstance(rates, dict) and isinstance(latency, dict)
    return (
        f"sinks: {rates['1']:,} rows/s with 1 serve process, {rates['2']:,} with 2 "
        f"({rates['2'] / rates['1']:.2f}x; {figures['sink_rows_per_run']:,} rows each, "
        f"rows lost {figures['sink_rows_lost']})\n"
        f"sink latency, requests of 1,000 spans one at a time: p50 {latency['p50']:,} ms, "
        f"p99 {latency['p99']:,} ms over {latency['requests']} requests"
    )
