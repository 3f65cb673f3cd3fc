"""Query API latency at scale: generate rows in the five tables, then time one-day queries.

Rows are generated inside PostgreSQL (``INSERT ... SELECT generate_series``) in time order, as a
live system writes them, with the indexes of ``exporter.schema`` built after the load. The
service runs under uvicorn on 127.0.0.1 and is queried over HTTP with an admin token; each query
picks a random day and random filter values, and p50/p95 per endpoint are printed.

    .venv/bin/python -m bench.query_bench                       # quick: 200k rows per table
    .venv/bin/python -m bench.query_bench --rows 10000000 --database homepot_query_bench --keep
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from sqlalchemy.pool import NullPool

from exporter.migrations import migrate
from exporter.partitions import add_months, create_month_partition, month_start, partition_name, partitions
from exporter.schema import TABLES, WRITE_COLUMNS
from homepot_foundation.database import create_engine
from homepot_foundation.settings import Settings
from query_api.auth import issue_token

logger = logging.getLogger("bench.query_bench")

ADMIN_URL = os.environ.get(
    "HOMEPOT_ANALYTICS_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
LAST_DAY = date(2025, 12, 31)
CHUNK = 1_000_000
USERS = 5000
DEVICES = 2000

ROUTES = [
    ("GET", "/api/v1/devices"),
    ("GET", "/api/v1/devices/{device_id}"),
    ("PUT", "/api/v1/devices/{device_id}"),
    ("POST", "/api/v1/devices"),
    ("GET", "/api/v1/sites"),
    ("GET", "/api/v1/sites/{site_id}"),
    ("GET", "/api/v1/jobs"),
    ("POST", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/{job_id}"),
    ("POST", "/api/v1/auth/login"),
    ("GET", "/api/v1/users/me"),
    ("GET", "/api/v1/health"),
    ("GET", "/api/v1/metrics/devices"),
    ("GET", "/api/v1/analytics/dashboard"),
    ("DELETE", "/api/v1/devices/{device_id}"),
    ("PATCH", "/api/v1/sites/{site_id}"),
    ("GET", "/api/v1/firmware"),
    ("POST", "/api/v1/firmware/{firmware_id}/rollout"),
    ("GET", "/api/v1/alerts"),
    ("POST", "/api/v1/alerts/{alert_id}/ack"),
]
JOB_TYPES = ["firmware_update", "restart", "config_change", "health_check"]
STATES = ["online", "offline", "maintenance", "error", "unknown"]
CATEGORIES = ["api", "database", "external_service", "validation", "job", "frontend"]
SEVERITIES = ["critical", "error", "warning", "info"]
ACTIVITIES = ["page_view", "click", "search", "form_submit", "modal_open", "input_change"]
PAGES = ["/dashboard", "/devices", "/devices/detail", "/sites", "/jobs", "/alerts", "/settings", "/firmware"]


def _array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join("'" + value.replace("'", "''") + "'" for value in values) + "]"


def _pick(values: list[str], expression: str) -> str:
    """SQL choosing one of ``values`` by an integer expression."""
    return f"({_array(values)})[1 + ({expression}) % {len(values)}]"


_ROUTE = _pick([route for _, route in ROUTES], "i")
_USER = f"'u_' || md5('user' || (hashint8(i) % {USERS} + {USERS}) % {USERS})"
_DEVICE = f"'dev_' || lpad(((hashint8(i * 7) % {DEVICES} + {DEVICES}) % {DEVICES})::text, 4, '0')"
_CONTEXT = {
    "trace_id": "md5(i::text || 't')",
    "span_id": "left(md5(i::text || 's'), 16)",
    "service_name": "'homepot-backend'",
    "event_id": "gen_random_uuid()",
}

# Per table: an SQL expression per written column, over i (row number) and ts (its time).
GENERATORS: dict[str, dict[str, str]] = {
    "api_request_logs": {
        "route": _ROUTE,
        # /api/v1/devices/{device_id} -> /api/v1/devices/42
        "endpoint": f"regexp_replace({_ROUTE}, '[{{][a-z_]+[}}]', (i % 997)::text)",
        "method": _pick([method for method, _ in ROUTES], "i"),
        "status_code": "CASE WHEN r < 0.01 THEN 500 + (i % 4) WHEN r < 0.05 THEN 400 + (i % 5) ELSE 200 END",
        # 1 to 150 ms, skewed to the fast end, and a slow tail of 0.2% over 2 s.
        "response_time_ms": "exp(random() * 5) + CASE WHEN r < 0.002 THEN 2000 ELSE 0 END",
        "user_id": _USER,
        "ip_address": "'10.0.' || (i % 256) || '.0'",
        "user_agent": "'Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0'",
        "error_message": "CASE WHEN r < 0.05 THEN 'request failed' END",
        "request_size_bytes": "(i % 2048)",
        "response_size_bytes": "(i % 65536)",
        **_CONTEXT,
    },
    "device_state_history": {
        "device_id": _DEVICE,
        "previous_state": _pick(STATES, "i"),
        "new_state": _pick(STATES, "i + 1 + (i / 5)"),
        "changed_by": f"CASE WHEN r < 0.7 THEN 'system' ELSE {_USER} END",
        "reason": "CASE WHEN r < 0.5 THEN 'Auto-recovery' ELSE 'Maintenance' END",
        "extra_data": """jsonb_build_object('firmware', '2.' || (i % 9))""",
        **_CONTEXT,
    },
    "job_outcomes": {
        "job_id": "'job_' || i",
        "job_type": _pick(JOB_TYPES, "i"),
        "device_id": _DEVICE,
        "status": "CASE WHEN r < 0.06 THEN 'failed' WHEN r < 0.08 THEN 'timeout' "
        "WHEN r < 0.09 THEN 'cancelled' ELSE 'success' END",
        "duration_ms": "(500 + random() * 5000)::int",
        "error_code": "CASE WHEN r < 0.09 THEN "
        + _pick(["E_TIMEOUT", "E_FLASH", "E_OFFLINE", "E_AUTH"], "i")
        + " END",
        "error_message": "CASE WHEN r < 0.09 THEN 'job failed' END",
        "retry_count": "CASE WHEN r < 0.09 THEN i % 4 ELSE 0 END",
        "initiated_by": f"CASE WHEN r < 0.5 THEN 'system' ELSE {_USER} END",
        "extra_data": """jsonb_build_object('attempt', i % 4)""",
        **_CONTEXT,
    },
    "error_logs": {
        # One category per fingerprint, as the mapping makes them (the type is in both).
        "category": _pick(CATEGORIES, "i % 200"),
        "severity": _pick(SEVERITIES, "i / 7"),
        "error_code": "'E_' || (i % 50)",
        "error_message": "'Error ' || (i % 200) || ' on request ' || i",
        "stack_trace": "'Traceback (most recent call last): ...'",
        "endpoint": _pick([route for _, route in ROUTES], "i"),
        "user_id": _USER,
        "device_id": _DEVICE,
        "context": """jsonb_build_object('attempt', i % 3)""",
        "fingerprint": "md5('fp' || (i % 200))",
        **_CONTEXT,
    },
    "user_activities": {
        "user_id": _USER,
        "session_id": "'s_' || (i / 40)",
        "activity_type": _pick(ACTIVITIES, "i"),
        "page_url": _pick(PAGES, "i / 3"),
        "element_id": "'button-' || (i % 30)",
        "search_query": "CASE WHEN i % 6 = 2 THEN "
        + _pick(["temperature", "offline", "berlin", "pos"], "i")
        + " END",
        "extra_data": """jsonb_build_object('viewport', 1280)""",
        "duration_ms": "(random() * 30000)::int",
        **_CONTEXT,
    },
}


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def _database_url(name: str) -> str:
    return ADMIN_URL.rpartition("/")[0] + "/" + name


@contextmanager
def bench_database(name: str | None, keep: bool) -> Iterator[str]:
    """A database with the five tables: ``name`` (created when missing) or a throwaway one."""
    throwaway = name is None
    name = name or f"homepot_query_bench_{os.getpid()}"
    with _connect(ADMIN_URL) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _database_url(name)
    engine = create_engine(url, poolclass=NullPool)
    migrate(engine)
    engine.dispose()
    try:
        yield url
    finally:
        if throwaway and not keep:
            with _connect(ADMIN_URL) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _monthly_partitions(url: str, table: str, start: datetime, days: int) -> None:
    """The month partitions the rows fall in, as a live deployment has them (not the default one)."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        existing = {partition.name for partition in partitions(conn, table)}
        month, last = month_start(start), start + timedelta(days=days)
        while month < last:
            if partition_name(table, month) not in existing:
                create_month_partition(conn, table, month, add_months(month, 1))
            month = add_months(month, 1)
    engine.dispose()


def generate(url: str, rows: int, days: int) -> None:
    """Fill each table with ``rows`` rows over ``days`` days ending LAST_DAY (skips tables that have them)."""
    start = datetime.combine(LAST_DAY - timedelta(days=days - 1), datetime.min.time(), tzinfo=UTC)
    step_ms = days * 86_400_000 / rows
    with _connect(url) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        for table_name, expressions in GENERATORS.items():
            table = TABLES[table_name]
            assert set(expressions) == set(WRITE_COLUMNS[table_name]) - {"timestamp"}, table_name
            existing = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table_name))
            ).fetchone()
            if existing and existing[0] == rows:
                logger.info("%s already holds %d rows", table_name, rows)
                continue
            began = time.perf_counter()
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(sql.Identifier(table_name)))
            _monthly_partitions(url, table_name, start, days)
            # Building the indexes once after the load is far quicker than maintaining them per row.
            for index in table.indexes:
                conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(str(index.name))))
            columns = ", ".join(f'"{column}"' for column in ["timestamp", *expressions])
            select_list = ", ".join(
                [
                    f"'{start.isoformat()}'::timestamptz + (i - 1 + random()) * {step_ms} * interval '1 ms'",
                    *expressions.values(),
                ]
            )
            for low in range(1, rows + 1, CHUNK):
                high = min(rows, low + CHUNK - 1)
                # No bound parameters: the expressions use %, and every value here is ours.
                # "0 * i" ties r to the row, so PostgreSQL draws it per row, not once.
                statement = (
                    f"INSERT INTO {table_name} ({columns}) SELECT {select_list} "
                    f"FROM generate_series({low}::bigint, {high}::bigint) AS i, "
                    "LATERAL (SELECT random() + 0 * i AS r) AS x"
                )
                conn.execute(statement.encode())
                logger.info("%s: %d / %d rows", table_name, high, rows)
            engine = create_engine(url, poolclass=NullPool)
            with engine.begin() as sa_conn:
                for index in table.indexes:
                    index.create(sa_conn, checkfirst=True)
            engine.dispose()
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table_name)))
            logger.info("%s: %d rows and indexes in %.0f s", table_name, rows, time.perf_counter() - began)


@dataclass(frozen=True)
class Query:
    label: str
    path: str
    params: Callable[[random.Random], dict[str, Any]]
    follow_cursor: bool = False


def _queries(days: int, rows: int) -> list[Query]:
    def day(rng: random.Random) -> dict[str, Any]:
        chosen = LAST_DAY - timedelta(days=rng.randrange(days))
        return {"start_date": chosen.isoformat(), "end_date": chosen.isoformat()}

    def user(rng: random.Random) -> str:
        import hashlib

        return "u_" + hashlib.md5(f"user{rng.randrange(USERS)}".encode()).hexdigest()

    def device(rng: random.Random) -> str:
        return f"dev_{rng.randrange(DEVICES):04d}"

    def session_on(params: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        # Sessions are 40 consecutive rows: pick one that falls on the chosen day.
        index = days - 1 - (LAST_DAY - date.fromisoformat(params["start_date"])).days
        per_day = rows / days
        first, last = int(index * per_day) // 40, int((index + 1) * per_day) // 40 - 1
        return params | {"session_id": f"s_{rng.randint(first, max(first, last))}"}

    return [
        Query("requests, one day", "requests", day),
        Query("requests, one day, page 2 (cursor)", "requests", day, follow_cursor=True),
        Query("requests, one day, route", "requests", lambda r: day(r) | {"route": r.choice(ROUTES)[1]}),
        Query("requests, one day, user_id", "requests", lambda r: day(r) | {"user_id": user(r)}),
        Query("requests, one day, status 500-599", "requests", lambda r: day(r) | {"min_status_code": 500}),
        Query(
            "requests, one day, method+status 400-499",
            "requests",
            lambda r: day(r) | {"method": "GET", "min_status_code": 400, "max_status_code": 499},
        ),
        Query("requests, one day, >= 1000 ms", "requests", lambda r: day(r) | {"min_response_time_ms": 1000}),
        Query("requests, one day, limit 1000", "requests", lambda r: day(r) | {"limit": 1000}),
        Query(
            "device-states, one day, device_id", "device-states", lambda r: day(r) | {"device_id": device(r)}
        ),
        Query(
            "device-states, one day, new_state", "device-states", lambda r: day(r) | {"new_state": "error"}
        ),
        Query(
            "jobs, one day, job_type+status",
            "jobs",
            lambda r: day(r) | {"job_type": r.choice(JOB_TYPES), "status": "failed"},
        ),
        Query("jobs, one day, device_id", "jobs", lambda r: day(r) | {"device_id": device(r)}),
        Query(
            "errors, one day, category+severity",
            "errors",
            lambda r: day(r) | {"category": r.choice(CATEGORIES), "severity": "critical"},
        ),
        Query("errors, one day, unresolved", "errors", lambda r: day(r) | {"resolved": False}),
        Query(
            "user-activities, one day, user_id", "user-activities", lambda r: day(r) | {"user_id": user(r)}
        ),
        Query(
            "user-activities, one day, session_id",
            "user-activities",
            lambda r: session_on(day(r), r),
        ),
        Query("requests/summary, one day", "requests/summary", day),
        Query("jobs/summary, one day", "jobs/summary", day),
        Query("errors/summary, one day", "errors/summary", day),
        Query("device-states/summary, one day", "device-states/summary", day),
        Query("user-activities/summary, one day", "user-activities/summary", day),
    ]


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The service under uvicorn in its own process on a loopback port, stopped on exit.

    Its own process: a client in the same interpreter would compete with it for the GIL.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = os.environ | {
        "HOMEPOT_ANALYTICS_DATABASE_URL": str(settings.database_url),
        "HOMEPOT_ANALYTICS_DATA_DIR": str(settings.data_dir),
        "HOMEPOT_ANALYTICS_JWT_SECRET": str(settings.jwt_secret),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "query_api.app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    server = subprocess.Popen(command, env=environment)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # bounded: ~30 s
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            if server.poll() is not None:
                raise RuntimeError("the service exited on start")
            time.sleep(0.1)
        else:
            raise RuntimeError("the service did not start")
        yield f"{base}/api/v1/analytics"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def measure(
    base: str, token: str, queries: list[Query], repeat: int, seed: int
) -> list[tuple[str, list[float], float]]:
    rng = random.Random(seed)
    results = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        for query in queries:
            times: list[float] = []
            returned = 0
            for attempt in range(repeat + 2):  # the first two warm caches and are not counted
                params = query.params(rng)
                if query.follow_cursor:
                    first = client.get(f"/{query.path}", params=params)
                    first.raise_for_status()
                    params["cursor"] = first.json()["next_cursor"] or ""
                began = time.perf_counter()
                response = client.get(f"/{query.path}", params=params)
                elapsed = (time.perf_counter() - began) * 1000
                response.raise_for_status()
                if attempt >= 2:
                    times.append(elapsed)
                    body = response.json()
                    returned += len(body.get("data", [])) if "data" in body else 1
            results.append((query.label, times, returned / repeat))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="Rows per table (default 200000).")
    parser.add_argument("--days", type=int, default=30, help="Days the rows spread over (default 30).")
    parser.add_argument("--repeat", type=int, default=30, help="Timed requests per query (default 30).")
    parser.add_argument(
        "--database", help="Use (and reuse the rows of) this database instead of a throwaway one."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the throwaway database.")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    with bench_database(args.database, args.keep) as url, tempfile.TemporaryDirectory() as data_dir:
        generate(url, args.rows, args.days)
        settings = Settings(database_url=url, data_dir=Path(data_dir), jwt_secret=secrets.token_hex(32))
        token = issue_token(settings, subject="query-bench", role="admin", expires_in=3600)
        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        with serve(settings) as base:
            results = measure(base, token, _queries(args.days, args.rows), args.repeat, args.seed)

    server = version[0] if version else "?"
    print(
        f"\n{args.rows:,} rows per table over {args.days} days (~{args.rows // args.days:,} rows/day), "
        f"PostgreSQL {server}, {os.cpu_count()} CPUs, {args.repeat} requests per line; "
        "one-day window, limit 100 unless stated\n"
    )
    print(f"{'query':<46} {'p50 ms':>8} {'p95 ms':>8} {'rows/resp':>10}")
    for label, times, returned in results:
        p95 = statistics.quantiles(times, n=20, method="inclusive")[18] if len(times) > 1 else times[0]
        print(f"{label:<46} {statistics.median(times):>8.1f} {p95:>8.1f} {returned:>10.1f}")


if __name__ == "__main__":
    main()
