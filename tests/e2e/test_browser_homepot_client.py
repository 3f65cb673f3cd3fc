"""HOMEPOT's frontend as it is, in headless Chromium, across origins: its analytics client posts
with axios ``withCredentials: true`` and its user is the httpOnly ``access_token`` cookie.

The page below does what HOMEPOT's ``frontend/src/utils/analytics.js`` does (our own fixture,
nothing copied): ``trackActivity`` posts one event to ``/api/v1/analytics/user-activity`` and
``trackError`` posts ``{category, severity, message, extra_data: {page_url}}`` to
``/api/v1/analytics/error``, both with axios (the real library, its browser build from npm) and
``withCredentials: true``. The site and the service are on two origins of one site (two ports of
127.0.0.1, as app.homepot.example and api.homepot.example would be), so the browser sends the
cookie, and refuses the answers unless CORS allows credentials. The tracker's own snippet, with no
``getToken`` at all, takes the same cookie user.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from selenium.webdriver.common.by import By
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from exporter.privacy import privacy_from_settings
from exporter.schema import TABLES
from homepot_foundation.settings import Settings
from query_api.app import create_app
from tests.conftest import JWT_SECRET, fetch_rows
from tests.support.browser import CHROMIUM_MISSING, ServerThread, chromium, rows_when, wait_for

if CHROMIUM_MISSING:
    pytest.skip(CHROMIUM_MISSING, allow_module_level=True)

AXIOS = Path(__file__).parent / "node" / "node_modules" / "axios" / "dist" / "axios.min.js"
if not AXIOS.exists():
    pytest.skip("axios is not installed (npm ci --prefix tests/e2e/node)", allow_module_level=True)

HOMEPOT_SECRET = "homepot-SECRET_KEY-for-the-browser-test"
OPERATOR = "operator@homepot.example"

APP_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>HOMEPOT</title>
<script src="/axios.min.js"></script>
<script>
  const API_BASE_URL = {service!r};
  async function trackActivity(activityType, pageUrl, extraData = {{}}, elementId = null) {{
    const payload = {{
      activity_type: activityType, page_url: pageUrl, element_id: elementId, extra_data: extraData,
    }};
    Object.keys(payload).forEach((key) => payload[key] == null && delete payload[key]);
    try {{
      await axios.post(`${{API_BASE_URL}}/api/v1/analytics/user-activity`, payload,
        {{withCredentials: true, timeout: 2000}});
      window.acknowledged = (window.acknowledged || 0) + 1;
    }} catch (error) {{ window.failures = (window.failures || []).concat(String(error)); }}
  }}
  async function trackError(errorMessage, pageUrl, errorType = 'client_error') {{
    try {{
      await axios.post(`${{API_BASE_URL}}/api/v1/analytics/error`,
        {{category: errorType, severity: 'error', message: errorMessage, extra_data: {{page_url: pageUrl}}}},
        {{withCredentials: true, timeout: 2000}});
      window.acknowledged = (window.acknowledged || 0) + 1;
    }} catch (error) {{ window.failures = (window.failures || []).concat(String(error)); }}
  }}
  trackActivity('page_view', '/devices');
</script></head><body>
<button id="export" onclick="trackActivity('click', '/devices', {{}}, 'export')">Export</button>
<button id="broken" onclick="trackError('Failed to load devices', '/devices', 'api_error')">Load</button>
</body></html>"""

TRACKER_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Tracked</title>
<script src="{service}/tracker.js" defer data-flush-interval="200"></script>
</head><body><button id="save-settings">Save</button></body></html>"""


def site(service: str, token: str) -> Starlette:
    def login(request: Request) -> Response:
        """As HOMEPOT's login answers: the session JWT in an httpOnly cookie."""
        response = HTMLResponse("<p>signed in</p>")
        response.set_cookie("access_token", token, httponly=True, samesite="lax")
        return response

    def logout(request: Request) -> Response:
        response = HTMLResponse("<p>signed out</p>")
        response.delete_cookie("access_token")
        return response

    return Starlette(
        routes=[
            Route("/login", login),
            Route("/logout", logout),
            Route("/axios.min.js", lambda request: FileResponse(AXIOS, media_type="text/javascript")),
            Route("/devices", lambda request: HTMLResponse(APP_PAGE.format(service=service))),
            Route("/settings", lambda request: HTMLResponse(TRACKER_PAGE.format(service=service))),
        ]
    )


@pytest.fixture(scope="module")
def servers(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerThread, Settings]]:
    site_server = ServerThread(None)
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("homepot-client") / "data",
        jwt_secret=JWT_SECRET,  # the admin secret: never the one user tokens are checked with
        user_token_secret=HOMEPOT_SECRET,
        cors_origins=[site_server.origin],
        export_delay_ms=50,
    )
    service = ServerThread(create_app(settings)).start()
    token = jwt.encode({"sub": OPERATOR}, HOMEPOT_SECRET, algorithm="HS256")
    site_server.server.config.app = site(service.origin, token)
    site_server.start()
    yield site_server, settings
    site_server.stop()
    service.stop()


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "profile") as driver:
        yield driver


@pytest.fixture()
def empty_tables(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
    return database_url


def test_homepots_axios_client_lands_cross_origin_with_its_cookie_user(
    servers: tuple[ServerThread, Settings], browser: Any, empty_tables: str
) -> None:
    site_server, settings = servers
    stored_user = privacy_from_settings(settings).user(OPERATOR)
    browser.get(f"{site_server.origin}/login")
    browser.get(f"{site_server.origin}/devices")
    # HOMEPOT's client sends no timestamp: rows are stamped when they arrive, and the page view's
    # first cross-origin request (preflight, new connection) could arrive after a quick click.
    wait_for(lambda: browser.execute_script("return window.acknowledged") == 1, "the page view answered")
    browser.find_element(By.ID, "export").click()
    browser.find_element(By.ID, "broken").click()
    wait_for(lambda: browser.execute_script("return window.acknowledged") == 3, "three answers read by axios")
    assert browser.execute_script("return window.failures || []") == []

    rows = rows_when(empty_tables, 2, browser)
    assert [(row["activity_type"], row["element_id"]) for row in rows] == [
        ("page_view", None),
        ("click", "export"),
    ]
    assert {row["user_id"] for row in rows} == {stored_user}

    def error_rows() -> list[dict[str, Any]]:
        return fetch_rows(empty_tables, "error_logs")

    (error,) = wait_for(error_rows, "the error row")
    assert (error["category"], error["severity"], error["error_message"]) == (
        "api",
        "error",
        "Failed to load devices",
    )
    assert (error["endpoint"], error["user_id"]) == ("/devices", stored_user)
    assert error["context"] == {"page_url": "/devices"}

    # Signed out, the same client is stored anonymous (and still lands).
    browser.get(f"{site_server.origin}/logout")
    browser.get(f"{site_server.origin}/devices")
    rows = rows_when(empty_tables, 3, browser)
    assert rows[-1]["user_id"] is None


def test_the_tracker_takes_the_cookie_user_without_get_token(
    servers: tuple[ServerThread, Settings], browser: Any, empty_tables: str
) -> None:
    site_server, settings = servers
    browser.get(f"{site_server.origin}/login")
    browser.get(f"{site_server.origin}/settings")
    wait_for(
        lambda: browser.execute_script("return !!(window.HomepotAnalytics && window.HomepotAnalytics.track)"),
        "the tracker",
    )
    browser.find_element(By.ID, "save-settings").click()
    rows = rows_when(empty_tables, 2, browser)
    assert [(row["activity_type"], row["element_id"]) for row in rows] == [
        ("page_view", None),
        ("click", "save-settings"),
    ]
    assert {row["user_id"] for row in rows} == {privacy_from_settings(settings).user(OPERATOR)}
