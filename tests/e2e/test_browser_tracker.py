"""The tracker in a real headless Chromium, against the real service and PostgreSQL.

Two servers on loopback: the analytics service (``create_app`` under uvicorn) and a test site on
another port (so the tracker works cross-origin, through CORS, as it would in production). The
browser clicks, searches, submits, navigates within a single-page app and between pages, and
closes the tab; the rows in ``user_activities`` must be exactly the expected ones.

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the PyPI package ``selenium``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from selenium.webdriver.common.by import By
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from exporter.privacy import privacy_from_settings
from exporter.schema import TABLES
from homepot_foundation.settings import Settings
from query_api.app import create_app
from tests.conftest import JWT_SECRET, fetch_rows
from tests.support.browser import CHROMIUM_MISSING, ServerThread, chromium, rows_when, wait_for

if CHROMIUM_MISSING:
    pytest.skip(CHROMIUM_MISSING, allow_module_level=True)

USER = "user123"


# --- servers -----------------------------------------------------------------------------------
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<script src="{service}/tracker.js" {attributes}></script>
<script>{setup}</script>
</head><body>
<div id="app">
  <h1>{title}</h1>
  {body}
</div>
</body></html>"""

DEVICES_PAGE = """
  <span id="nothing" class="nothing-here"><b class="plain">no id on me</b></span>
  <button id="add-device-button">Add device</button>
  <a href="/spa/devices" data-track="nav-devices" onclick="event.preventDefault();
     history.pushState({}, '', '/spa/devices');">Devices</a>
  <input type="search" id="device-search" placeholder="Search devices">
  <form id="device-form" onsubmit="event.preventDefault();">
    <input name="device_name" class="name">
    <input type="password" name="pw" class="pw" data-track-search>
    <button type="submit" class="save">Save</button>
  </form>
  <a id="to-page2" href="/page2">Next page</a>
"""


def site(service: str, token: str) -> Starlette:
    """The frontend under test: page 1 is a small single-page app with a logged-in user (its
    token given to the tracker); page 2 is anonymous and flushes only when it is closed."""

    def page1(request: Request) -> HTMLResponse:
        setup = f"HomepotAnalytics.init({{getToken: function () {{ return {json.dumps(token)}; }}}});"
        attributes = 'data-flush-interval="200" data-search-debounce="250"'
        return HTMLResponse(
            PAGE.format(
                title="Devices", service=service, attributes=attributes, setup=setup, body=DEVICES_PAGE
            )
        )

    def page2(request: Request) -> HTMLResponse:
        body = '<button data-track="page2-button"><span class="label">Go</span></button>'
        attributes = 'data-flush-interval="600000"'  # nothing leaves this page before it closes
        return HTMLResponse(
            PAGE.format(title="Page 2", service=service, attributes=attributes, setup="", body=body)
        )

    def opt_out(request: Request) -> HTMLResponse:
        body = '<button id="opted-out-button">Nothing</button>'
        return HTMLResponse(
            PAGE.format(
                title="Opt-out", service=service, attributes='data-flush-interval="100"', setup="", body=body
            )
        )

    return Starlette(
        routes=[
            Route("/page1", page1),
            Route("/spa/devices", page1),
            Route("/page2", page2),
            Route("/opt-out", opt_out),
        ]
    )


@pytest.fixture(scope="module")
def service_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("browser") / "data",
        jwt_secret=JWT_SECRET,
        export_delay_ms=50,
    )


@pytest.fixture(scope="module")
def servers(service_settings: Settings) -> Iterator[tuple[ServerThread, ServerThread]]:
    # The site's port must be known before the service's CORS setting: bind it first.
    site_server = ServerThread(None)
    service = ServerThread(
        create_app(service_settings.model_copy(update={"cors_origins": [site_server.origin]}))
    )
    service.start()
    token = jwt.encode({"sub": USER}, JWT_SECRET, algorithm="HS256")
    site_server.server.config.app = site(service.origin, token)
    site_server.start()
    yield service, site_server
    site_server.stop()
    service.stop()


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "profile") as driver:  # a new and empty profile
        yield driver


@pytest.fixture()
def empty_tables(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
    return database_url


# --- the scenarios --------------------------------------------------------------------------------
def path_is(browser: Any, path: str) -> Callable[[], bool]:
    return lambda: bool(browser.execute_script("return location.pathname") == path)


def test_a_visit_produces_exactly_the_expected_rows(
    servers: tuple[ServerThread, ServerThread], browser: Any, empty_tables: str, service_settings: Settings
) -> None:
    _, site_server = servers
    browser.get(f"{site_server.origin}/page1")
    wait_for(lambda: browser.execute_script("return !!HomepotAnalytics.sessionId()"), "the tracker")

    browser.find_element(By.CSS_SELECTOR, "b.plain").click()  # inside #app, but no id of its own: nothing
    browser.find_element(By.ID, "add-device-button").click()
    search = browser.find_element(By.ID, "device-search")
    search.send_keys("temp")
    search.send_keys("erature")  # one search after the pause, not one per keystroke
    time.sleep(0.6)
    form = browser.find_element(By.ID, "device-form")
    form.find_element(By.CSS_SELECTOR, "input.name").send_keys("Secret Device Name")
    form.find_element(By.CSS_SELECTOR, "input.pw").send_keys("hunter2-password")  # marked, but a password
    form.find_element(By.CSS_SELECTOR, "button.save").click()
    time.sleep(0.05)
    browser.find_element(By.CSS_SELECTOR, "[data-track=nav-devices]").click()  # single-page navigation
    wait_for(path_is(browser, "/spa/devices"), "pushState")
    time.sleep(0.6)
    browser.back()  # popstate
    wait_for(path_is(browser, "/page1"), "popstate")
    rows_when(empty_tables, 7, browser)  # so far: regular batches

    browser.find_element(By.ID, "to-page2").click()  # a real navigation: page_leave on the way out
    wait_for(path_is(browser, "/page2"), "page 2")
    browser.find_element(By.CSS_SELECTOR, "span.label").click()
    # Close the tab long before page 2's flush interval: its events can only leave on the way out.
    page2 = browser.current_window_handle
    browser.switch_to.new_window("tab")
    other = browser.current_window_handle
    browser.switch_to.window(page2)
    browser.close()
    browser.switch_to.window(other)

    user = privacy_from_settings(service_settings).user(USER)
    expected = [
        ("page_view", "/page1", None, None, user),
        ("click", "/page1", "add-device-button", None, user),
        ("search", "/page1", "device-search", "temperature", user),
        ("form_submit", "/page1", "device-form", None, user),
        ("click", "/page1", "nav-devices", None, user),
        ("page_view", "/spa/devices", None, None, user),
        ("page_view", "/page1", None, None, user),
        ("click", "/page1", "to-page2", None, user),
        ("page_leave", "/page1", None, None, user),  # sent while leaving, with the page's token
        ("page_view", "/page2", None, None, None),  # page 2 gives no token: anonymous
        ("click", "/page2", "page2-button", None, None),
        ("page_leave", "/page2", None, None, None),  # the tab was closed
    ]
    rows = rows_when(empty_tables, len(expected), browser)
    got = [
        (r["activity_type"], r["page_url"], r["element_id"], r["search_query"], r["user_id"]) for r in rows
    ]
    assert got == expected

    # One browser session throughout, and the time spent on each page.
    assert len({r["session_id"] for r in rows}) == 1 and rows[0]["session_id"]
    assert rows[0]["duration_ms"] is None  # the first page view of a visit has no previous page
    assert rows[5]["duration_ms"] > 500 and rows[5]["extra_data"] == {"previous_page": "/page1"}
    assert rows[6]["duration_ms"] >= 500 and rows[6]["extra_data"] == {"previous_page": "/spa/devices"}
    assert rows[8]["duration_ms"] > rows[6]["duration_ms"] > 0  # page 1, from its load to leaving it
    assert rows[11]["duration_ms"] >= 0
    assert rows[1]["extra_data"] == {"tag": "button"}
    # Nothing typed outside the search field was recorded, anywhere.
    dumped = json.dumps([{key: str(value) for key, value in row.items()} for row in rows])
    assert "Secret Device" not in dumped and "hunter2" not in dumped
    assert {r["service_name"] for r in rows} == {"homepot-analytics"}


def test_session_rotation_opt_out_and_do_not_track(
    servers: tuple[ServerThread, ServerThread], browser: Any, empty_tables: str
) -> None:
    _, site_server = servers
    browser.get(f"{site_server.origin}/opt-out")
    wait_for(lambda: browser.execute_script("return !!HomepotAnalytics.sessionId()"), "the tracker")
    first = rows_when(empty_tables, 1)[0]["session_id"]

    # 31 minutes idle: the next event starts a new session.
    browser.execute_script(
        "var key = 'homepot_analytics_session', s = JSON.parse(localStorage.getItem(key));"
        "s.last -= 31 * 60 * 1000; localStorage.setItem(key, JSON.stringify(s));"
    )
    browser.find_element(By.ID, "opted-out-button").click()
    rows = rows_when(empty_tables, 2)
    assert [r["activity_type"] for r in rows] == ["page_view", "click"]
    assert rows[1]["session_id"] not in (None, first)

    # Opted out: nothing more, and it is remembered across page loads.
    browser.execute_script("HomepotAnalytics.optOut()")
    browser.find_element(By.ID, "opted-out-button").click()
    browser.refresh()
    browser.find_element(By.ID, "opted-out-button").click()
    assert (
        browser.execute_script("return HomepotAnalytics.isOptedOut() && HomepotAnalytics.sessionId()") is None
    )

    # Opted in again, but the browser says Do Not Track: still nothing (past the page_leave of the
    # page on which the visitor opted in).
    dnt = "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: function () { return '1'; }});"
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": dnt})
    browser.execute_script("HomepotAnalytics.optIn()")
    browser.refresh()
    browser.find_element(By.ID, "opted-out-button").click()
    assert browser.execute_script("return HomepotAnalytics.isOptedOut()") is True
    browser.get("about:blank")  # leaving the page would send anything still queued
    rows_when(empty_tables, 3)
    time.sleep(1.0)
    assert [r["activity_type"] for r in fetch_rows(empty_tables, "user_activities")] == [
        "page_view",
        "click",
        "page_leave",
    ]
