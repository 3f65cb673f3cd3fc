"""Summaries from the rollups against the exact raw-row queries, in one run on the same data.

Rows are generated inside PostgreSQL (``bench.query_bench.generate``: ``INSERT ... SELECT
generate_series``) straight into the raw tables, N per table over 30 days; their triggers mark
the buckets stale and ``exporter.rollups.refresh`` builds them, as ``serve`` would (the write
path's share, the triggers, is measured by ``bench/run.py``'s ingest). Each summary, and the
30-day hourly time series of requests, jobs and errors, is run twice, from the rollups and from
raw rows only (``use_rollups=False`` / ``raw=True``, the exact path), 10 times each,
alternated; p50/p95 printed, with the worst relative error of a percentile against the exact
one and of a distinct count (affected users, sessions: estimated from sketches), and the size
of the rollup tables against the raw ones. A throwaway database is created and dropped.

    .venv/bin/python -m bench.rollup_bench                      # 1M rows per table, a few minutes
    .venv/bin/python -m bench.rollup_bench --rows 10000000      # the full figure
    .venv/bin/python -m bench.rollup_bench --rows 10000000 --tables api_request_logs job_outcomes error_logs
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.pool import NullPool

from bench.query_bench import CHUNK, GENERATORS, LAST_DAY, _monthly_partitions, bench_database
from exporter.rollups.refresh import refresh
from exporter.rollups.schema import ROLLUP_TABLES
from exporter.schema import TABLES, WRITE_COLUMNS
from homepot_foundation.database import create_engine
from query_api import summaries
from query_api import timeseries as ts
from query_api.filters import TimeWindow
from query_api.reading import SUMMARY_WORK_MEM
from query_api.routes.timeseries import read_series

logger = logging.getLogger("bench.rollup_bench")

PERCENTILES = {"p50_ms", "p95_ms", "p99_ms", "max_ms", "p50_duration_ms", "p95_duration_ms"}
DISTINCT = {"users", "sessions"}  # estimated from distinct sketches (``exporter.distinct_sketch``)

Run = Callable[[Connection, bool], Any]


# The summaries' names and the tables they read.
SUMMARY_TABLES = {
    "requests": "api_request_logs",
    "jobs": "job_outcomes",
    "errors": "error_logs",
    "device states": "device_state_history",
    "user activities": "user_activities",
}


def generate(url: str, rows: int, days: int, tables: list[str]) -> None:
    """``rows`` rows in each of ``tables`` over ``days`` days ending LAST_DAY, by
    ``bench.query_bench``'s expressions (columns it does not know, such as service_version, left
    NULL), indexes after."""
    start = datetime.combine(LAST_DAY - timedelta(days=days - 1), datetime.min.time(), tzinfo=UTC)
    step_ms = days * 86_400_000 / rows
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("SET maintenance_work_mem = '512MB'"))
        raw = conn.connection.driver_connection
        assert raw is not None
        for name in tables:
            expressions = GENERATORS[name]
            table = TABLES[name]
            known = {column: expressions[column] for column in WRITE_COLUMNS[name] if column in expressions}
            _monthly_partitions(url, name, start, days)
            for index in table.indexes:
                conn.execute(text(f'DROP INDEX IF EXISTS "{index.name}"'))
            columns = ", ".join(f'"{column}"' for column in ["timestamp", *known])
            select_list = ", ".join(
                [
                    f"'{start.isoformat()}'::timestamptz + (i - 1 + random()) * {step_ms} * interval '1 ms'",
                    *known.values(),
                ]
            )
            for low in range(1, rows + 1, CHUNK):
                high = min(rows, low + CHUNK - 1)
                # No bound parameters: the expressions use %, and every value here is ours.
                raw.execute(
                    f"INSERT INTO {name} ({columns}) SELECT {select_list} "
                    f"FROM generate_series({low}::bigint, {high}::bigint) AS i, "
                    "LATERAL (SELECT random() + 0 * i AS r) AS x".encode()
                )
                logger.info("%s: %d of %d rows", name, high, rows)
            for index in table.indexes:
                index.create(conn, checkfirst=True)
            conn.execute(text(f"VACUUM ANALYZE {name}"))
            logger.info("%s: %d rows", name, rows)
    engine.dispose()


def _summaries(window: TimeWindow, tables: list[str]) -> dict[str, Run]:
    every: dict[str, Run] = {
        "requests": lambda c, r: summaries.request_summary(c, [], window, 100, use_rollups=r),
        "jobs": lambda c, r: summaries.job_summary(c, [], window, 100, 10, use_rollups=r),
        "errors": lambda c, r: summaries.error_summary(c, [], window, 100, use_rollups=r),
        "device states": lambda c, r: summaries.device_state_summary(c, [], window, 100, 10, use_rollups=r),
        "user activities": lambda c, r: summaries.user_activity_summary(
            c, [], window, 100, 10, use_rollups=r
        ),
    }
    return {name: run for name, run in every.items() if SUMMARY_TABLES[name] in tables}


def _hourly_series(window: TimeWindow, spec: ts.TableSeries, group_by: str) -> Run:
    """The 30-day hourly time series of the endpoint, top 10 groups and "other" (720 x 11 points)."""

    def run(conn: Connection, rollups: bool) -> Any:
        plan = ts.plan(window, "1h", series=11, raw=not rollups)
        return read_series(conn, spec, plan, group_by, 10, raw_filters=[], names=())

    return run


def _worst_error(from_rollups: Any, exact: Any, fields: set[str]) -> float:
    """The largest relative difference of one of ``fields`` between the two answers."""
    if isinstance(exact, dict):
        worst = 0.0
        for key, value in exact.items():
            if key in fields and value:
                worst = max(worst, abs(from_rollups[key] - value) / abs(value))
            elif isinstance(value, dict | list):
                worst = max(worst, _worst_error(from_rollups[key], value, fields))
        return worst
    if isinstance(exact, list):
        pairs = zip(from_rollups, exact, strict=True)
        return max((_worst_error(a, b, fields) for a, b in pairs), default=0.0)
    return 0.0


def _time(conn: Connection, run: Run, rollups: bool) -> tuple[float, Any]:
    began = time.perf_counter()
    with conn.begin():
        conn.execute(text("SELECT set_config('work_mem', :m, true)"), {"m": SUMMARY_WORK_MEM})
        answer = run(conn, rollups)
    return (time.perf_counter() - began) * 1000, answer


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _sizes(conn: Connection) -> tuple[int, int]:
    raw = sum(
        int(
            conn.execute(
                text("SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree(:t)"),
                {"t": name},
            ).scalar_one()
        )
        for name in TABLES
    )
    rolled = sum(
        int(conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": table.name}).scalar_one())
        for parts in ROLLUP_TABLES.values()
        for table in parts.values()
    )
    return raw, rolled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per table (default 1M)")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--database", help="use (and keep) this database instead of a throwaway one")
    parser.add_argument(
        "--tables",
        nargs="+",
        choices=list(GENERATORS),
        default=list(GENERATORS),
        help="generate and time these tables only (default all five)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="with --database: time the rows a previous run left there"
    )
    args = parser.parse_args(argv)
    if args.reuse and not args.database:
        parser.error("--reuse needs --database")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    first = datetime.combine(LAST_DAY - timedelta(days=args.days - 1), datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(LAST_DAY + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    month = TimeWindow(first, end)
    middle = first + timedelta(days=args.days // 2)
    day = TimeWindow(
        middle + timedelta(minutes=3, seconds=17), middle + timedelta(days=1, minutes=1, seconds=2)
    )
    with bench_database(args.database, keep=args.database is not None) as url:
        began = time.perf_counter()
        if args.reuse:
            logger.info("reusing the rows already in %s", args.database)
        else:
            generate(url, args.rows, args.days, args.tables)
        loaded = time.perf_counter() - began
        engine = create_engine(url, poolclass=NullPool)
        began = time.perf_counter()
        with engine.connect() as conn:
            # the generated rows' stale buckets, as ``serve`` would
            refreshed = refresh(conn, lambda done, total: logger.info("refresh: %d of %d", done, total))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for parts in ROLLUP_TABLES.values():
                for table in parts.values():
                    conn.execute(text(f"VACUUM ANALYZE {table.name}"))
        built = time.perf_counter() - began
        series = [
            ("requests by route", ts.REQUEST_SERIES, "route"),
            ("jobs by type", ts.JOB_SERIES, "job_type"),
            ("errors by fingerprint", ts.ERROR_SERIES, "fingerprint"),
        ]
        cases: list[tuple[str, Run]] = [
            *((f"30-day summary: {name}", run) for name, run in _summaries(month, args.tables).items()),
            *(
                (f"30-day hourly series: {label}", _hourly_series(month, spec, group_by))
                for label, spec, group_by in series
                if spec.rollup.source.name in args.tables
            ),
            *(
                (f"one-day summary (ragged): {name}", run)
                for name, run in _summaries(day, args.tables).items()
            ),
        ]
        print(
            f"\n{args.rows:,} rows in each of {', '.join(args.tables)} over {args.days} days; "
            f"load {loaded:.0f} s, "
            f"rollups refreshed ({refreshed.buckets:,} 5-minute buckets) in {built:.0f} s"
        )
        print(
            f"{'query':<46} {'rollups p50/p95 ms':>20} {'raw p50/p95 ms':>18} "
            f"{'speed-up':>9} {'worst pct err':>14} {'distinct err':>13}"
        )
        with engine.connect() as conn:
            for label, run in cases:
                timings: dict[bool, list[float]] = {True: [], False: []}
                answers: dict[bool, Any] = {}
                for _ in range(args.runs):
                    for rollups in (True, False):
                        elapsed, answers[rollups] = _time(conn, run, rollups)
                        timings[rollups].append(elapsed)
                error = _worst_error(answers[True], answers[False], PERCENTILES)
                distinct = _worst_error(answers[True], answers[False], DISTINCT)
                fast, slow = timings[True], timings[False]
                print(
                    f"{label:<46} {_p(fast, 0.5):>9.1f} / {_p(fast, 0.95):<8.1f} "
                    f"{_p(slow, 0.5):>8.1f} / {_p(slow, 0.95):<8.1f} "
                    f"{statistics.median(slow) / statistics.median(fast):>8.1f}x "
                    f"{error * 100:>12.3f} % {distinct * 100:>11.3f} %"
                )
            raw, rolled = _sizes(conn)
        print(
            f"size: raw tables {raw / 2**20:,.0f} MB, "
            f"rollup tables {rolled / 2**20:,.0f} MB ({rolled / raw:.1%})"
        )
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
