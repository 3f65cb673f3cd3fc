"""CPU cost per request of each variant's middleware stack, without network or load generator.

Drives the benchmark app's ASGI callable directly, one request after another, and divides the
process CPU time (all threads: the exporter's too, after a final flush) by the request count.
Far less noisy than wrk on a shared machine, so it is the tool for finding where our
microseconds go (``--profile`` prints a cProfile of the run).

    .venv/bin/python -m bench.asgi_cost --database-url postgresql://... [--variant instrumented]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.apps.service import DIAGNOSTIC_VARIANTS, VARIANTS

REQUEST_HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"wrk"),
    (b"accept", b"*/*"),
]


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": REQUEST_HEADERS,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _drive(app: Any, path: str, requests: int) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    lifespan_messages = iter([{"type": "lifespan.startup"}])

    async def lifespan_receive() -> dict[str, Any]:
        try:
            return next(lifespan_messages)
        except StopIteration:
            await asyncio.Event().wait()  # never: the lifespan task is cancelled below
            raise

    started = asyncio.Event()

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, lifespan_receive, lifespan_send)
    )
    await asyncio.wait_for(started.wait(), 30)
    for _ in range(requests):
        await app(_scope(path), receive, send)
    lifespan.cancel()


def measure(variant: str, path: str, requests: int, profile: bool, reps: int = 1) -> list[float]:
    """CPU µs per request of ``variant`` in this process (set BENCH_* before calling), per rep.

    With several reps the lowest figures are the least disturbed by other load on the machine.
    """
    os.environ["BENCH_VARIANT"] = variant
    from bench.apps.service import create_app

    app = create_app()
    asyncio.run(_drive(app, path, 200))  # warm caches, open pools
    _flush()
    costs = []
    for _ in range(reps):
        profiler = cProfile.Profile() if profile else None
        cpu = time.process_time()
        if profiler:
            profiler.enable()
        asyncio.run(_drive(app, path, requests))
        _flush()
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(60)
        costs.append((time.process_time() - cpu) / requests * 1e6)
    return costs


def _flush() -> None:
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if hasattr(provider, "force_flush"):
        provider.force_flush()
    from opentelemetry import _logs

    logger_provider = _logs.get_logger_provider()
    if hasattr(logger_provider, "force_flush"):
        logger_provider.force_flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument(
        "--variant",
        choices=VARIANTS + DIAGNOSTIC_VARIANTS,
        help="one variant in this process",
    )
    parser.add_argument("--endpoint", default="trivial", choices=("trivial", "db"))
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=1, help="repeat; the lowest figures are the cleanest")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    os.environ["BENCH_DATABASE_URL"] = args.database_url
    if args.variant:
        with tempfile.TemporaryDirectory() as data_dir:
            os.environ["BENCH_DATA_DIR"] = data_dir
            costs = sorted(measure(args.variant, f"/{args.endpoint}", args.requests, args.profile, args.reps))
        print(
            f"{args.variant:26} {args.endpoint:8} min {costs[0]:7.1f}  p25 {costs[len(costs) // 4]:7.1f}"
            f"  median {costs[len(costs) // 2]:7.1f} us CPU/request"
        )
        return
    # Each in its own process: OpenTelemetry providers are global.
    for variant in (*VARIANTS[:4], *DIAGNOSTIC_VARIANTS):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.asgi_cost",
                "--database-url",
                args.database_url,
                "--variant",
                variant,
                "--endpoint",
                args.endpoint,
                "--requests",
                str(args.requests),
                "--reps",
                str(args.reps),
            ],
            check=True,
        )


if __name__ == "__main__":
    main()
