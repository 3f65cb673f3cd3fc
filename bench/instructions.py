"""Instructions per request of each variant's middleware stack: the request-path cost without
the machine's noise.

``bench/asgi_cost.py`` measures CPU time, which moves by several microseconds between runs of
the same code on a shared machine; a change worth 2 µs cannot be seen there. Here each variant
runs under ``valgrind --tool=callgrind`` twice, with a short and a long stream of requests, and
the difference of the instruction counts divided by the difference of the request counts is
what one request costs: start-up, imports and the warm-up cancel out. The counts repeat to a
fraction of a percent. Instructions are not time (our code's memory traffic is not counted), so
this ranks changes; ``bench/run.py`` still says what a service pays under load.

    .venv/bin/python -m bench.instructions [--variant plain --variant instrumented] [--requests 2000]

Needs valgrind (Debian's package); a throwaway database is created and dropped, as in run.py.
Each pair of runs takes about two minutes; two run at a time.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bench.apps.service import DIAGNOSTIC_VARIANTS, VARIANTS
from bench.database import throwaway_database

_COLLECTED = re.compile(r"Collected : (\d+)")
# The short stream: as long as asgi_cost's warm-up, so both runs have their caches filled.
_BASE_REQUESTS = 200


@dataclass(frozen=True)
class Count:
    variant: str
    requests: int
    instructions: int


def _count(url: str, variant: str, requests: int) -> Count:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.asgi_cost",
        "--database-url",
        url,
        "--variant",
        variant,
        "--requests",
        str(requests),
    ]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    found = _COLLECTED.search(finished.stderr)
    if finished.returncode != 0 or found is None:
        raise RuntimeError(f"{variant} under callgrind failed:\n{finished.stderr[-2000:]}")
    return Count(variant, requests, int(found.group(1)))


def per_request(short: Count, long: Count) -> float:
    return (long.instructions - short.instructions) / (long.requests - short.requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variant",
        action="append",
        choices=VARIANTS + DIAGNOSTIC_VARIANTS,
        help="repeatable (default: plain and instrumented)",
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests more in the long run")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    variants = args.variant or ["plain", "instrumented"]
    runs = [(variant, n) for variant in variants for n in (_BASE_REQUESTS, _BASE_REQUESTS + args.requests)]
    with throwaway_database() as url, ThreadPoolExecutor(max_workers=2) as pool:
        print(f"{len(runs)} runs under callgrind, two at a time (about a minute each)...", flush=True)
        counts = list(pool.map(lambda run: _count(url, *run), runs))
    by_variant = {variant: per_request(*(c for c in counts if c.variant == variant)) for variant in variants}
    baseline = by_variant.get("plain")
    print(f"{'variant':28} instructions/request  added to plain")
    for variant, cost in by_variant.items():
        added = "" if baseline is None or variant == "plain" else f"{cost - baseline:>14,.0f}"
        print(f"{variant:28} {cost:>20,.0f}  {added}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
