"""The tracker as a frontend team drops it in, in a real headless Chromium, against the real
service and PostgreSQL: the README's own snippets, click names, and delivery (nothing lost by
leaving the page or by an outage; nothing stored twice; permanent refusals and unreachable
services given up on with one console warning).

The site under test runs on another origin than the service (CORS, as in production); a third
server stands in for endpoints that refuse, fail or lack CORS headers, and counts what it gets.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from selenium.webdriver.common.by import By
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from exporter.privacy import privacy_from_settings
from exporter.schema import TABLES
from homepot_foundation.settings import Settings
from query_api.app import create_app
from tests.conftest import JWT_SECRET
from tests.support.browser import CHROMIUM_MISSING, ServerThread, chromium, rows_when, wait_for

if CHROMIUM_MISSING:
    pytest.skip(CHROMIUM_MISSING, allow_module_level=True)

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
USER = "frontend-user@example.com"
EVENT_KEY = "homepot_analytics_event_"


def readme_snippets() -> dict[str, str]:
    """The ```html blocks of the README's "Frontend integration" section: classic and module."""
    section = README.split("\n## Frontend integration\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```html\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2, "expected the classic and the module snippet"
    snippets = {"module" if 'type="module"' in block else "classic": block for block in blocks}
    assert set(snippets) == {"classic", "module"}
    for block in blocks:
        assert "https://ANALYTICS-HOST/" in block
    return snippets


def with_host(snippet: str, origin: str) -> str:
    """The snippet verbatim, but for the placeholder host (our service speaks plain HTTP)."""
    return snippet.replace("https://ANALYTICS-HOST", origin)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
{head}
</head><body>
{body}
</body></html>"""

APP_BODY = """
<nav data-track="menu">
  <span class="plain">Devices</span>
  <a href="/app/sites" data-track="nav-sites" onclick="event.preventDefault();
     history.pushState({}, '', '/app/sites');">Sites</a>
</nav>
<div id="main">
  <form data-track="signup" onsubmit="event.preventDefault();">
    <input class="email" type="email">
    <button id="signup-button" type="button"><span class="label">Sign up</span></button>
  </form>
  <p class="text">Nothing to see here</p>
</div>
"""

# A page with its own options: the stub, then init, as the README has it.
OPTIONS_HEAD = """<script>
  window.HomepotAnalytics ||= {{ q: [], init(...a) {{ this.q.push(["init", a]); }},
    track(...a) {{ this.q.push(["track", a]); }} }};
  HomepotAnalytics.init({options});
</script>
<script src="{service}/tracker.js" defer></script>"""


@dataclass
class Elsewhere:
    """Endpoints of a third server: how each answers, and every batch each one was sent."""

    answers: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to give in turn
    batches: dict[str, list[list[dict[str, Any]]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self, site_origin: str) -> Starlette:
        async def intake(request: Request) -> Response:
            name = request.path_params["name"]
            batch = json.loads(await request.body())
            with self.lock:
                self.batches.setdefault(name, []).append(batch)
                planned = self.answers.get(name, [202])
                status = planned.pop(0) if len(planned) > 1 else planned[0]
            if name == "split":  # 413 for more than one event at a time
                status = 413 if len(batch) > 1 else 202
            # As the service answers its listed origins: the exact origin, credentials allowed
            # (the tracker sends the session cookie along).
            cors = {"Access-Control-Allow-Origin": site_origin, "Access-Control-Allow-Credentials": "true"}
            headers = {} if name == "no-cors" else cors
            return JSONResponse({"status": status}, status_code=status, headers=headers)

        return Starlette(routes=[Route("/intake/{name}", intake, methods=["POST"])])

    def sent(self, name: str) -> list[list[dict[str, Any]]]:
        with self.lock:
            return [list(batch) for batch in self.batches.get(name, [])]


def site(service: str, elsewhere: str, token: str) -> Starlette:
    snippets = readme_snippets()

    def page(title: str, head: str, body: str = APP_BODY) -> HTMLResponse:
        return HTMLResponse(PAGE.format(title=title, head=head, body=body))

    def login(request: Request) -> HTMLResponse:
        # The app's own login: it keeps the JWT where the README's getToken reads it.
        store = f"localStorage.setItem('token', {json.dumps(token)});"
        script = f"<script>{store} location.replace('/app');</script>"
        return page("Login", script, "")

    def app_page(request: Request) -> HTMLResponse:
        return page("App", with_host(snippets["classic"], service))

    def module_page(request: Request) -> HTMLResponse:
        return page("Module", with_host(snippets["module"], service))

    def plain(request: Request) -> HTMLResponse:
        return page("No tracker", "", "<p>elsewhere</p>")

    def options_page(request: Request) -> HTMLResponse:
        # ?endpoint=NAME posts to the third server's /intake/NAME; fast retries for the test.
        options: dict[str, Any] = {"flushIntervalMs": 100, "retryDelayMs": 50, "maxRetryDelayMs": 200}
        options["maxAttempts"] = int(request.query_params.get("attempts", "4"))
        if request.query_params.get("pageviews") == "false":
            options["trackPageViews"] = False
        if "endpoint" in request.query_params:
            options["endpoint"] = f"{elsewhere}/intake/{request.query_params['endpoint']}"
        return page("Options", OPTIONS_HEAD.format(options=json.dumps(options), service=service))

    return Starlette(
        routes=[
            Route("/login", login),
            Route("/app", app_page),
            Route("/app/sites", app_page),
            Route("/module", module_page),
            Route("/plain", plain),
            Route("/options", options_page),
        ]
    )


@dataclass
class Servers:
    service: ServerThread
    site: ServerThread
    elsewhere: ServerThread
    calls: Elsewhere
    settings: Settings

    def restart_service(self) -> None:
        """The analytics service back on its port, a new process as after a crash or deploy."""
        port = self.service.port
        self.service = ServerThread(create_app(self.settings), port=port).start()


@pytest.fixture(scope="module")
def servers(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    # Ports first: the service's CORS setting and the pages need them.
    site_server, elsewhere_server = ServerThread(None), ServerThread(None)
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("delivery") / "data",
        jwt_secret=JWT_SECRET,
        export_delay_ms=50,
        cors_origins=[site_server.origin],
    )
    service = ServerThread(create_app(settings)).start()
    calls = Elsewhere()
    token = jwt.encode({"sub": USER}, JWT_SECRET, algorithm="HS256")
    site_server.server.config.app = site(service.origin, elsewhere_server.origin, token)
    elsewhere_server.server.config.app = calls.app(site_server.origin)
    site_server.start()
    elsewhere_server.start()
    running = Servers(service, site_server, elsewhere_server, calls, settings)
    yield running
    for server in (running.site, running.elsewhere, running.service):
        server.stop()


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "profile") as driver:
        yield driver


@pytest.fixture()
def empty_tables(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
    return database_url


class Console:
    """The browser's console, read as it goes (each read drains Chromium's buffer)."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.entries: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        self.entries += self.browser.get_log("browser")
        return self.entries

    def tracker_warnings(self) -> list[str]:
        return [e["message"] for e in self.read() if "HomepotAnalytics:" in e["message"]]

    def script_errors(self) -> list[str]:
        # A page error (ReferenceError, TypeError...), as opposed to a failed request's log line.
        return [e["message"] for e in self.read() if e["level"] == "SEVERE" and "Error" in e["message"]]


def stored_events(browser: Any) -> list[dict[str, Any]]:
    """What the tracker keeps in the page origin's localStorage, waiting for an acknowledgement."""
    entries = browser.execute_script(
        "return Object.keys(localStorage).filter(k => k.startsWith(arguments[0]))"
        ".map(k => JSON.parse(localStorage.getItem(k)).e);",
        EVENT_KEY,
    )
    return list(entries)


def tracker_ready(browser: Any) -> None:
    wait_for(
        lambda: browser.execute_script("return !!(window.HomepotAnalytics && HomepotAnalytics.version)"),
        "the tracker",
    )


def summary(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["activity_type"], r["page_url"], r["element_id"], r["user_id"]) for r in rows]


# --- the README's snippets, verbatim --------------------------------------------------------------
def test_readme_classic_snippet_tracks_the_logged_in_user_and_names_clicks(
    servers: Servers, browser: Any, empty_tables: str
) -> None:
    console = Console(browser)
    browser.get(f"{servers.site.origin}/login")  # stores the JWT, then opens /app
    wait_for(lambda: browser.execute_script("return location.pathname") == "/app", "the app")
    tracker_ready(browser)
    # The stub's object became the tracker, started with the queued init's getToken.
    assert browser.execute_script("return HomepotAnalytics.q === undefined && !!HomepotAnalytics.sessionId()")

    browser.find_element(By.ID, "signup-button").click()  # its own id, inside <form data-track="signup">
    browser.find_element(By.CSS_SELECTOR, "#signup-button .label").click()  # inside it: still the button
    browser.find_element(By.CSS_SELECTOR, "input.email").click()  # a control without a name: the form's
    browser.find_element(By.CSS_SELECTOR, "nav span.plain").click()  # plain, in <nav data-track="menu">
    browser.find_element(By.CSS_SELECTOR, "p.text").click()  # no name anywhere: nothing
    browser.find_element(By.CSS_SELECTOR, "[data-track=nav-sites]").click()  # its own, not the nav's
    wait_for(lambda: browser.execute_script("return location.pathname") == "/app/sites", "pushState")

    user = privacy_from_settings(servers.settings).user(USER)
    expected = [
        ("page_view", "/app", None, user),
        ("click", "/app", "signup-button", user),
        ("click", "/app", "signup-button", user),
        ("click", "/app", "signup", user),
        ("click", "/app", "menu", user),
        ("click", "/app", "nav-sites", user),
        ("page_view", "/app/sites", None, user),
    ]
    rows = rows_when(empty_tables, len(expected), browser)
    assert summary(rows) == expected
    assert [r["extra_data"].get("tag") for r in rows[1:6]] == ["button", "button", "form", "nav", "a"]
    assert console.script_errors() == []  # no ReferenceError: init ran before the tracker existed


def test_readme_module_snippet_tracks_the_logged_in_user(
    servers: Servers, browser: Any, empty_tables: str
) -> None:
    console = Console(browser)
    browser.get(f"{servers.site.origin}/login")
    wait_for(lambda: browser.execute_script("return location.pathname") == "/app", "the app")
    browser.get(f"{servers.site.origin}/module")
    tracker_ready(browser)
    browser.find_element(By.ID, "signup-button").click()

    user = privacy_from_settings(servers.settings).user(USER)
    expected = [
        ("page_view", "/app", None, user),
        ("page_leave", "/app", None, user),
        ("page_view", "/module", None, user),
        ("click", "/module", "signup-button", user),
    ]
    assert summary(rows_when(empty_tables, len(expected), browser)) == expected
    assert console.script_errors() == []


def test_a_queued_init_starts_the_tracker_with_its_options_never_without(
    servers: Servers, browser: Any
) -> None:
    # trackPageViews: false only works if the tracker never started before the queued init.
    browser.get(f"{servers.site.origin}/options?endpoint=accept&pageviews=false")
    tracker_ready(browser)
    browser.execute_script("HomepotAnalytics.track('custom_first')")
    wait_for(lambda: servers.calls.sent("accept"), "a batch")
    time.sleep(0.5)
    sent = [event["activity_type"] for batch in servers.calls.sent("accept") for event in batch]
    assert sent == ["custom_first"]


# --- nothing lost by leaving the page, nothing stored twice ---------------------------------------
def test_events_survive_an_outage_and_a_page_leave_and_land_exactly_once(
    servers: Servers, browser: Any, empty_tables: str
) -> None:
    browser.get(f"{servers.site.origin}/login")
    tracker_ready(browser)
    rows_when(empty_tables, 1, browser)  # /app's page_view: the service is up

    servers.service.stop()  # the analytics service goes down
    browser.find_element(By.ID, "signup-button").click()
    time.sleep(4.0)  # its batch (after 3 s) fails, connection refused: retried later, kept meanwhile
    assert [e["element_id"] for e in stored_events(browser)] == ["signup-button"]
    browser.get(f"{servers.site.origin}/plain")  # away, while the service is still down
    kept = sorted(e["activity_type"] for e in stored_events(browser))
    assert kept == ["click", "page_leave"]  # still in localStorage: nobody acknowledged them

    servers.restart_service()
    browser.get(f"{servers.site.origin}/app")  # a page with the tracker again sends what is kept
    user = privacy_from_settings(servers.settings).user(USER)
    expected = [
        ("page_view", "/app", None, user),
        ("click", "/app", "signup-button", user),
        ("page_leave", "/app", None, user),
        ("page_view", "/app", None, user),
    ]
    rows = rows_when(empty_tables, len(expected), browser, timeout=30, settle=1.0)
    assert summary(rows) == expected
    wait_for(lambda: stored_events(browser) == [], "localStorage emptied by the acknowledgements")


def test_what_leaves_with_the_page_is_resent_by_the_next_one_and_stored_once(
    servers: Servers, browser: Any, empty_tables: str
) -> None:
    browser.get(f"{servers.site.origin}/login")
    tracker_ready(browser)
    # As when the page is gone before the answer comes: the requests go out, the page never hears.
    browser.execute_script(
        "const original = window.fetch;"
        "window.fetch = function (url, options) {"
        "  const sent = original.apply(this, arguments);"
        "  return options && options.keepalive ? new Promise(() => {}) : sent;"
        "};"
    )
    browser.find_element(By.ID, "signup-button").click()
    browser.get(f"{servers.site.origin}/plain")  # before the 3 s flush: it leaves by keepalive fetch
    user = privacy_from_settings(servers.settings).user(USER)
    expected = [
        ("page_view", "/app", None, user),
        ("click", "/app", "signup-button", user),
        ("page_leave", "/app", None, user),
    ]
    assert summary(rows_when(empty_tables, 3, browser)) == expected
    # Unacknowledged, so kept: the next page sends it again.
    assert sorted(e["activity_type"] for e in stored_events(browser)) == ["click", "page_leave", "page_view"]

    browser.get(f"{servers.site.origin}/app")
    wait_for(lambda: stored_events(browser) == [], "the resend acknowledged", timeout=30)
    rows = rows_when(empty_tables, 4, browser, settle=1.0)
    assert summary(rows) == [*expected, ("page_view", "/app", None, user)]  # nothing twice


# --- refusals, failures and unreachable services ----------------------------------------------------
def test_a_permanent_refusal_drops_the_batch_with_one_warning(servers: Servers, browser: Any) -> None:
    console = Console(browser)
    servers.calls.answers["refuse"] = [403]
    browser.get(f"{servers.site.origin}/options?endpoint=refuse")
    tracker_ready(browser)
    wait_for(lambda: servers.calls.sent("refuse"), "the first batch")
    time.sleep(1.0)
    assert len(servers.calls.sent("refuse")) == 1  # not retried
    assert stored_events(browser) == []  # dropped from localStorage
    browser.execute_script("HomepotAnalytics.track('custom_one')")
    wait_for(lambda: len(servers.calls.sent("refuse")) == 2, "the next batch")
    time.sleep(0.5)
    assert len(servers.calls.sent("refuse")) == 2 and stored_events(browser) == []
    warnings = console.tracker_warnings()
    assert len(warnings) == 1 and "HTTP 403" in warnings[0], warnings


def test_413_splits_the_batch_in_halves_then_drops_what_is_still_too_large(
    servers: Servers, browser: Any
) -> None:
    console = Console(browser)
    browser.get(f"{servers.site.origin}/options?endpoint=split")
    tracker_ready(browser)
    browser.execute_script("for (let i = 0; i < 6; i++) HomepotAnalytics.track('custom_' + i);")
    wait_for(lambda: stored_events(browser) == [], "every event acknowledged")
    sent = servers.calls.sent("split")
    accepted = [batch[0]["activity_type"] for batch in sent if len(batch) == 1]
    assert sorted(accepted) == sorted(["page_view"] + [f"custom_{i}" for i in range(6)])
    assert console.tracker_warnings() == []

    servers.calls.answers["too-large"] = [413]
    browser.get(f"{servers.site.origin}/options?endpoint=too-large")
    tracker_ready(browser)
    browser.execute_script("for (let i = 0; i < 3; i++) HomepotAnalytics.track('custom_' + i);")
    wait_for(lambda: stored_events(browser) == [], "every event dropped")
    time.sleep(0.5)
    sent = servers.calls.sent("too-large")
    assert max(len(batch) for batch in sent) > 1 and len(sent[-1]) == 1
    assert len(sent) <= 2 * 5  # halved down to single events, each refused once: no retry loop
    warnings = console.tracker_warnings()
    assert len(warnings) == 1 and "HTTP 413" in warnings[0], warnings


def test_5xx_is_retried_with_back_off_until_it_lands(servers: Servers, browser: Any) -> None:
    servers.calls.answers["flaky"] = [503, 500, 202]
    browser.get(f"{servers.site.origin}/options?endpoint=flaky")
    tracker_ready(browser)
    wait_for(lambda: stored_events(browser) == [], "the batch acknowledged at the third try")
    sent = servers.calls.sent("flaky")
    assert len(sent) == 3 and sent[0] == sent[1] == sent[2]  # the same batch, the same event ids


def test_an_origin_without_cors_is_given_up_after_a_few_attempts_with_one_warning(
    servers: Servers, browser: Any
) -> None:
    console = Console(browser)
    browser.get(f"{servers.site.origin}/options?endpoint=no-cors&attempts=4")
    tracker_ready(browser)
    # The server takes each request, but the browser refuses the answer: fetch fails (TypeError).
    wait_for(lambda: len(servers.calls.sent("no-cors")) == 4, "four attempts")
    wait_for(lambda: console.tracker_warnings(), "the warning")
    browser.execute_script("HomepotAnalytics.track('custom_after')")
    time.sleep(1.5)
    assert len(servers.calls.sent("no-cors")) == 4  # no fifth: this page stopped trying
    warnings = console.tracker_warnings()
    assert len(warnings) == 1 and "4 attempts" in warnings[0], warnings
    kept = sorted(e["activity_type"] for e in stored_events(browser))
    assert kept == ["custom_after", "page_view"]  # kept for the next page, not dropped
