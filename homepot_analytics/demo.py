"""``homepot-analytics demo``: run the instrumented demo service, drive traffic, summarise the tables.

The traffic is real HTTP against uvicorn, so every row takes the path a production request
takes: instrumentation → OpenTelemetry SDK → exporter → PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx
import jwt
import psycopg
import typer
import uvicorn

from homepot_analytics.demo_history import record_history, resolve_past
from homepot_analytics.demo_service import create_demo_app
from homepot_foundation.database import libpq_url, resolve_database_url
from homepot_foundation.settings import Settings, get_settings
from instrumentation import record_user_activity
from query_api.auth import issue_token

SERVICE_NAME = "homepot-demo"
USERS = ("alice@homepot.example", "bob@homepot.example", "carol@homepot.example")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def _token(user: str) -> str:
    # The demo service trusts its gateway; the instrumentation only reads the subject.
    return jwt.encode({"sub": user, "role": "operator"}, "demo-only-secret-of-sufficient-length", "HS256")


def _traffic_plan(requests: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    """A mix of reads, state changes and jobs, with 4xx, 5xx and failing jobs among them."""
    rng = random.Random(7)
    devices = [f"dev_{n:03d}" for n in range(1, 13)]
    states = ["offline", "maintenance", "online", "error", "online"]
    plan: list[tuple[str, str, dict[str, Any] | None]] = []
    for index in range(requests):
        roll = rng.random()
        device = rng.choice(devices)
        if roll < 0.30:
            plan.append(("GET", "/api/v1/devices", None))
        elif roll < 0.45:
            plan.append(("GET", f"/api/v1/devices/{device}", None))
        elif roll < 0.52:
            plan.append(("GET", f"/api/v1/sites/site-00{rng.randint(1, 4)}", None))  # site-004: 404
        elif roll < 0.67:
            body = {"state": rng.choice(states), "reason": rng.choice(["Maintenance", "Auto-recovery", None])}
            plan.append(("PUT", f"/api/v1/devices/{device}/state", body))
        elif roll < 0.85:
            simulate = rng.choices(["success", "failure", "timeout", "cancel"], [70, 15, 10, 5])[0]
            job_type = rng.choice(["firmware_update", "restart", "config_change", "health_check"])
            plan.append(
                ("POST", f"/api/v1/devices/{device}/jobs", {"job_type": job_type, "simulate": simulate})
            )
        elif roll < 0.90:
            plan.append(("POST", "/api/v1/auth/login", {"username": "mallory", "password": "guess"}))
        elif roll < 0.94:
            plan.append(("PUT", f"/api/v1/devices/{device}/state", {"state": "exploded"}))  # 422
        elif roll < 0.97:
            plan.append(("GET", "/api/v1/reports/daily", None))  # 500
        else:
            plan.append(("GET", f"/api/v1/devices/dev_9{index % 10}", None))  # 404
    return plan


def _frontend_sessions() -> int:
    """What a browser session reports through the tracker, recorded here without a browser."""
    events = 0
    for user in USERS:
        session = uuid.uuid4().hex
        for activity, page, element, query in (
            ("page_view", "/devices", None, None),
            ("click", "/devices", "add-device-button", None),
            ("search", "/devices", "device-search", "temperature"),
            ("form_submit", "/devices", "device-form", None),
            ("page_view", "/sites", None, None),
        ):
            record_user_activity(
                activity,
                user_id=user,
                session_id=session,
                page_url=page,
                element_id=element,
                search_query=query,
                duration_ms=random.randint(500, 15000) if activity == "page_view" else None,
            )
            events += 1
    return events


def _drive(base_url: str, requests: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    plan = _traffic_plan(requests)
    with (
        httpx.Client(base_url=base_url, timeout=10) as client,
        typer.progressbar(plan, label="Driving demo traffic", show_pos=True) as progress,
    ):
        for number, (method, path, body) in enumerate(progress):
            user = USERS[number % len(USERS)]
            headers = {
                "Authorization": f"Bearer {_token(user)}",
                "X-User": user,
                "User-Agent": "homepot-demo/1.0",
            }
            try:
                response = client.request(method, path, json=body, headers=headers)
            except httpx.TransportError:
                # uvicorn closes a keep-alive connection after an unhandled exception; reconnect.
                response = client.request(method, path, json=body, headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    return statuses


def _wait_until_up(base_url: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"demo service did not start at {base_url}")


SUMMARY_QUERIES: dict[str, list[tuple[str, str]]] = {
    "api_request_logs": [
        (
            "status",
            "SELECT status_code::text, count(*) FROM api_request_logs WHERE {w} GROUP BY 1 ORDER BY 1",
        ),
        (
            "routes",
            "SELECT method || ' ' || coalesce(route, endpoint), count(*)::text || ' req, p95 ' || "
            "round(percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms)::numeric, 1) || ' ms' "
            "FROM api_request_logs WHERE {w} GROUP BY 1 ORDER BY count(*) DESC LIMIT 6",
        ),
    ],
    "device_state_history": [
        (
            "transitions",
            "SELECT coalesce(previous_state, '?') || ' -> ' || new_state, count(*) FROM device_state_history "
            "WHERE {w} GROUP BY 1 ORDER BY 2 DESC LIMIT 6",
        ),
    ],
    "job_outcomes": [
        (
            "outcomes",
            "SELECT job_type || ' ' || status, count(*)::text || coalesce(' (' || "
            "string_agg(DISTINCT error_code, ', ') || ')', '') FROM job_outcomes WHERE {w} "
            "GROUP BY job_type, status ORDER BY 1",
        ),
    ],
    "error_logs": [
        (
            "errors",
            "SELECT category || '/' || severity || ' ' || coalesce(error_code, '-'), "
            "count(*)::text || ' x ' || left(min(error_message), 50) FROM error_logs WHERE {w} "
            "GROUP BY category, severity, error_code "
            "ORDER BY count(*) DESC",
        ),
    ],
    "user_activities": [
        (
            "activities",
            "SELECT activity_type, count(*) FROM user_activities WHERE {w} GROUP BY 1 ORDER BY 2 DESC",
        ),
    ],
}


def print_summary(database_url: str, since: datetime) -> dict[str, int]:
    """Print what this run stored, table by table; returns the row count per table."""
    counts: dict[str, int] = {}
    where = 'service_name = %(service)s AND "timestamp" >= %(since)s'
    params = {"service": SERVICE_NAME, "since": since}
    with psycopg.connect(libpq_url(database_url)) as conn:
        for table, queries in SUMMARY_QUERIES.items():
            count = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()
            counts[table] = int(count[0]) if count else 0
            typer.secho(f"\n{table}: {counts[table]} rows", bold=True)
            for label, query in queries:
                for key, value in conn.execute(query.format(w=where), params).fetchall():
                    typer.echo(f"  {label:<12} {key!s:<48} {value}")
    return counts


def run_demo(
    requests: int = 200,
    settings: Settings | None = None,
    *,
    rounds: int = 1,
    pause_s: float = 5.0,
    serve: bool = False,
    history_hours: int = 0,
) -> dict[str, int]:
    """Start the demo service, drive ``requests`` requests per round, flush, summarise.

    ``rounds=0`` keeps generating traffic until interrupted (the compose stack's demo service).
    ``serve``: the caller serves the dashboard next, so the "what next" hint is left out.
    ``history_hours``: first record that many hours of past traffic (``demo_history``), then
    resolve its daily-report error, which the live traffic brings back (a regression).
    Returns the row count per table."""
    settings = settings or get_settings()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = datetime.now(UTC)
    database_url = resolve_database_url(settings)
    typer.echo(f"Database: {database_url}")
    app, telemetry = create_demo_app(
        settings.model_copy(update={"database_url": database_url}), service_name=SERVICE_NAME
    )
    port = _free_port()
    # The demo raises unhandled exceptions on purpose: keep uvicorn's tracebacks out of the output.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, name="demo-service", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base_url)
        typer.echo(f"Demo service listening on {base_url}")
        if history_hours:
            past = record_history(telemetry, USERS, history_hours)
            resolved = resolve_past(database_url, SERVICE_NAME, "KeyError")
            typer.echo(
                f"Recorded the {history_hours} h before now: "
                + ", ".join(f"{n} {what}" for what, n in past.items())
                + f"; {resolved} daily-report errors marked resolved (the live traffic brings them back)"
            )
        round_number = 0
        while True:
            round_number += 1
            statuses = _drive(base_url, requests)
            activities = _frontend_sessions()
            typer.echo(
                f"Round {round_number} responses: "
                + ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
                + f"; frontend events: {activities}"
            )
            telemetry.force_flush()
            if rounds and round_number >= rounds:
                break
            time.sleep(pause_s)
    except KeyboardInterrupt:
        typer.echo("Interrupted: flushing and summarising.")
    finally:
        server.should_exit = True
        thread.join(10)
        telemetry.shutdown()
    counts = print_summary(database_url, started)
    if not serve:
        typer.echo(next_steps(command_path()))
    return counts


def command_path() -> str:
    """How to run ``homepot-analytics`` from here, as typed: the script beside this Python (after
    ``make demo`` that is ``.venv/bin/homepot-analytics``, which is not on the PATH)."""
    script = Path(sys.executable).parent / "homepot-analytics"
    if not script.exists():
        return "homepot-analytics"
    venv = script.parent.parent
    # The checkout's own .venv, run from the checkout (make demo): the short form; else the whole path.
    return str(script.relative_to(Path.cwd())) if venv.parent == Path.cwd() else str(script)


def next_steps(command: str) -> str:
    return (
        "\nSee it in the dashboard (runs the demo again, then serves it and prints a sign-in link):\n"
        f"  {command} demo --serve\n"
        "Or run the service and query it yourself:\n"
        "  export HOMEPOT_ANALYTICS_JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')\n"
        f"  {command} serve &\n"
        f"  TOKEN=$({command} token --subject you --role admin)\n"
        '  curl -H "Authorization: Bearer $TOKEN" '
        "'http://127.0.0.1:8000/api/v1/analytics/requests?limit=5'"
    )


def dashboard_settings(settings: Settings, database_url: str) -> Settings:
    """The analytics service's settings on the demo's database; without a configured JWT secret,
    one made for this run (its tokens end with it)."""
    secret = settings.jwt_secret or secrets.token_hex(32)
    return settings.model_copy(update={"database_url": database_url, "jwt_secret": secret})


def sign_in_url(settings: Settings, host: str, port: int, expires_in: int = 12 * 3600) -> str:
    """The dashboard with an admin token in the fragment: the browser keeps it for the tab and it
    never reaches a server log."""
    token = issue_token(settings, subject="demo-admin", role="admin", expires_in=expires_in)
    return f"http://{host}:{port}/dashboard/#token={token}"


def serve_dashboard(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> NoReturn:
    """Print a sign-in link, then become ``homepot-analytics serve`` on the demo's database.

    A new program (exec), not a server in this process: this one's OpenTelemetry providers are
    the demo service's, and the analytics service's FastAPI would report its own requests into
    them."""
    serving = dashboard_settings(settings, resolve_database_url(settings))
    typer.secho("\nDashboard on the demo data: open", bold=True)
    typer.echo(f"  {sign_in_url(serving, host, port)}")
    typer.echo("(an admin sign-in link, valid 12 h; Ctrl-C stops the service)")
    if not settings.jwt_secret:
        typer.echo(
            "Its token is signed with a secret made for this run (HOMEPOT_ANALYTICS_JWT_SECRET sets one)."
        )
    sys.stdout.flush()
    environment = os.environ | {
        "HOMEPOT_ANALYTICS_DATABASE_URL": str(serving.database_url),
        "HOMEPOT_ANALYTICS_JWT_SECRET": str(serving.jwt_secret),
    }
    command = [sys.executable, "-m", "homepot_analytics", "serve", "--host", host, "--port", str(port)]
    os.execve(sys.executable, command, environment)
