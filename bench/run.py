"""Run the benchmarks: ingest throughput, per-request cost, completeness under load.

    .venv/bin/python bench/run.py            # full run (about 12 minutes), the README's figures
    .venv/bin/python bench/run.py --quick    # under two minutes: CI runs it so the bench never rots

Prints a table and writes ``bench/results/latest.json``. Needs the PostgreSQL server on
127.0.0.1:5432 (a throwaway database is created and dropped) and ``wrk`` on PATH. Timing
figures are reported, never asserted: the exit status is non-zero only when the run itself
fails or when rows were lost, which is a correctness fault, not a timing one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report
from bench.apps.service import SERVICE_NAMES
from bench.database import count_service_rows, server_version, throwaway_database
from bench.ingest import run_ingest
from bench.load import run_load, wrk_path
from bench.sinks import describe as describe_sinks
from bench.sinks import sink_figures
from bench.workload import generate

logger = logging.getLogger("bench")

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.json"
FULL = {
    "records": 60_000,
    "ingest_rounds": 3,
    "rounds": 5,
    "seconds": 10,
    "warmup_s": 2,
    "settle_s": 1.2,
}
# Quick: enough to prove every part still runs and to print figures, not to trust them.
QUICK = {
    "records": 8_000,
    "ingest_rounds": 1,
    "rounds": 2,
    "seconds": 2,
    "warmup_s": 1,
    "settle_s": 0.5,
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short run (under two minutes)")
    parser.add_argument("--rounds", type=int, help="alternating rounds of the per-request benchmark")
    parser.add_argument("--seconds", type=int, help="load duration per endpoint and round")
    parser.add_argument("--connections", type=int, default=16, help="wrk concurrency (default 16)")
    parser.add_argument("--records", type=int, help="spans + log records in the ingest stream")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument(
        "--sinks",
        type=int,
        metavar="REQUESTS",
        help="also: OTLP sink rows/s with 1 and 2 serve processes, REQUESTS of 200 spans each (e.g. 40)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where the JSON goes")
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds the with-blocks: servers are stopped and the database is dropped.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    plan = dict(QUICK if args.quick else FULL)
    for key in ("rounds", "seconds", "records"):
        if getattr(args, key) is not None:
            plan[key] = getattr(args, key)
    if not args.skip_load:
        wrk_path()  # fail before spending minutes on the ingest part
    started = time.monotonic()
    figures: dict[str, object] = {
        "mode": "quick" if args.quick else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": report.machine(),
        "config": {**plan, "connections": args.connections, "uvicorn_workers": 1},
        "loadavg_at_start": list(os.getloadavg()),
    }
    phases: dict[str, float] = {}
    with throwaway_database() as url:
        phases["database"] = time.monotonic() - started
        figures["machine"]["postgresql"] = server_version(url)  # type: ignore[index]
        if not args.skip_ingest:
            logger.info("ingest: generating %d records", plan["records"])
            stream = generate(int(plan["records"]))
            figures.update(report.ingest_figures(run_ingest(url, stream, int(plan["ingest_rounds"]))))
            del stream
            phases["ingest"] = time.monotonic() - started - sum(phases.values())
        if not args.skip_load:
            with tempfile.TemporaryDirectory(prefix="homepot-bench-") as scratch:
                result = run_load(
                    url,
                    report.VARIANTS,
                    rounds=int(plan["rounds"]),
                    seconds=int(plan["seconds"]),
                    warmup_s=int(plan["warmup_s"]),
                    connections=args.connections,
                    scratch=Path(scratch),
                    count_rows=lambda variant: (
                        count_service_rows(url, SERVICE_NAMES[variant]) if variant in SERVICE_NAMES else None
                    ),
                    settle_s=float(plan["settle_s"]),
                )
            figures.update(report.load_figures(result))
            phases["load"] = time.monotonic() - started - sum(phases.values())
        if args.sinks:
            logger.info("sinks: %d OTLP requests to 1, then 2 serve processes", args.sinks)
            figures.update(sink_figures(url, requests=args.sinks))
            phases["sinks"] = time.monotonic() - started - sum(phases.values())
    figures["phase_seconds"] = {name: round(seconds, 1) for name, seconds in phases.items()}
    figures["loadavg_at_end"] = list(os.getloadavg())
    figures["duration_s"] = round(time.monotonic() - started, 1)
    figures["targets"] = report.targets(figures)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=2) + "\n")
    print(report.table(figures))
    if "sink_rows_per_s" in figures:
        print(describe_sinks(figures))
    print(f"\nwritten to {args.output} in {figures['duration_s']} s")
    return 1 if figures.get("rows_lost") or figures.get("sink_rows_lost") else 0


if __name__ == "__main__":
    sys.exit(main())
