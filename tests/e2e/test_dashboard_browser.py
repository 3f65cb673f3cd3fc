"""The built-in dashboard in a real headless Chromium, on the demo's data in the real PostgreSQL.

The demo (``run_demo``: real HTTP into an instrumented service, through the exporter) fills the
tables once for the module; the analytics service (``create_app`` under uvicorn) serves the
dashboard and the query API. Every page must draw its charts with data (not empty frames), with
no console error and nothing loaded from another origin; each page's data must arrive within
300 ms; a screenshot of each is saved (``HOMEPOT_ANALYTICS_TEST_ARTIFACTS``, default
``test-artifacts/`` in the checkout, ignored by git). Then the time picker, a filter, paging,
resolve/reopen (and a regression) and the refusal of a non-admin token.

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the PyPI package ``selenium``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from exporter.schema import error_logs
from homepot_analytics.demo import run_demo
from homepot_foundation.database import create_engine
from homepot_foundation.settings import Settings
from query_api.app import create_app
from query_api.auth import issue_token
from tests.conftest import JWT_SECRET, empty_tables, fetch_rows
from tests.query_api.rows import insert_rows, row
from tests.support.browser import CHROMIUM_MISSING, ServerThread, chromium, wait_for

if CHROMIUM_MISSING:
    pytest.skip(CHROMIUM_MISSING, allow_module_level=True)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("HOMEPOT_ANALYTICS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"
JAEGER = "http://jaeger.example:16686"
PAGES = ["overview", "errors", "jobs", "devices", "frontend", "requests"]
DATA_BUDGET_MS = 300

# Every chart is a Plotly graph whose data holds a value and whose SVG has marks drawn for it.
CHARTS_STATE = """
return [...document.querySelectorAll('[data-chart], .sparkline')].map((gd) => ({
  name: gd.dataset.chart || ('sparkline ' + gd.dataset.fingerprint),
  drawn: gd.dataset.drawn === 'true',
  empty: gd.dataset.empty !== 'false',
  traces: (gd.data || []).length,
  marks: gd.querySelectorAll(
    'g.trace path.js-line, g.trace g.points path, g.trace .point, g.trace path.bar, .sankey-link, g.bars path'
  ).length,
}));
"""
FOREIGN_RESOURCES = """
return performance.getEntriesByType('resource').map((e) => e.name)
  .filter((name) => new URL(name).origin !== location.origin);
"""


@pytest.fixture(scope="module")
def service_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("dashboard"),
        jwt_secret=JWT_SECRET,
        export_delay_ms=50,
        jaeger_url=JAEGER,
    )


@pytest.fixture(scope="module")
def demo_data(service_settings: Settings) -> dict[str, int]:
    """The demo's traffic (a day of history, then live requests), once for the module."""
    empty_tables(service_settings.database_url or "")
    counts = run_demo(requests=240, settings=service_settings, history_hours=24)
    assert all(counts.values()), counts
    return counts


@pytest.fixture(scope="module")
def service(service_settings: Settings, demo_data: dict[str, int]) -> Iterator[ServerThread]:
    server = ServerThread(create_app(service_settings)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("profile")) as driver:
        driver.set_window_size(1440, 1900)
        yield driver


def token(settings: Settings, role: str = "admin") -> str:
    return issue_token(settings, subject="dashboard-test", role=role, expires_in=600)


def console_errors(browser: Any) -> list[dict[str, Any]]:
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def wait_ready(browser: Any, page: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        state = browser.execute_script("return window.dashboard")
        return state if state and state.get("ready") and state.get("page") == page else None

    state: dict[str, Any] = wait_for(ready, f"the {page} page to load", timeout=30)
    return state


def open_page(browser: Any, service: ServerThread, page: str, query: str = "") -> dict[str, Any]:
    """The page loaded anew (not a same-document hash change)."""
    browser.get("about:blank")
    browser.get(f"{service.origin}/dashboard/#/{page}{'?' + query if query else ''}")
    return wait_ready(browser, page)


def unready(browser: Any) -> None:
    """Forget the last render, so ``wait_ready`` waits for the one an action starts."""
    browser.execute_script("window.dashboard = {ready: false}")


@pytest.fixture()
def signed_in(browser: Any, service: ServerThread, service_settings: Settings) -> Any:
    """The browser with an admin session (through the sign-in link, as ``demo --serve`` prints it)."""
    browser.get(f"{service.origin}/dashboard/")
    browser.execute_script("sessionStorage.clear()")
    unready(browser)
    browser.get(f"{service.origin}/dashboard/#token={token(service_settings)}")
    wait_ready(browser, "overview")
    assert "token" not in browser.current_url, "the token leaves the address bar"
    browser.get_log("browser")  # start each test with an empty console
    return browser


def charts_of(browser: Any) -> list[dict[str, Any]]:
    charts: list[dict[str, Any]] = browser.execute_script(CHARTS_STATE)
    return charts


def assert_charts_have_data(browser: Any, page: str) -> int:
    charts = charts_of(browser)
    assert charts, f"{page}: no chart"
    for chart in charts:
        assert chart["drawn"] and chart["traces"], f"{page}: {chart}"
        assert not chart["empty"], f"{page}: chart without data {chart}"
        assert chart["marks"] > 0, f"{page}: nothing drawn in {chart}"
    return len(charts)


def test_root_redirects_to_the_dashboard_and_its_files_come_from_the_service(service: ServerThread) -> None:
    root = httpx.get(f"{service.origin}/", follow_redirects=False)
    assert root.status_code == 307
    assert root.headers["location"] == "/dashboard/"
    page = httpx.get(f"{service.origin}/dashboard/")
    assert page.status_code == 200 and "vendor/plotly.min.js" in page.text
    plotly = httpx.get(
        f"{service.origin}/dashboard/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip"}
    )
    assert plotly.status_code == 200 and plotly.headers["content-encoding"] == "gzip"
    assert "plotly.js" in plotly.text[:500]


def test_every_page_draws_its_charts_with_data_fast_and_cleanly(
    signed_in: Any, service: ServerThread, demo_data: dict[str, int]
) -> None:
    browser = signed_in
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    timings: dict[str, list[float]] = {}
    first_group = None
    for page in [*PAGES, "error-group"]:
        query = ""
        if page == "error-group":
            assert first_group is not None
            query = first_group
        samples = []
        for _ in range(3):  # the page opened anew: its data timed three times
            state = open_page(browser, service, page, query)
            assert "error" not in state, state
            samples.append(state["dataMs"])
        timings[page] = samples
        charts = assert_charts_have_data(browser, page) if page != "requests" else 0
        if page == "requests":
            rows = browser.find_elements(By.CSS_SELECTOR, "table[data-table=requests] tbody tr")
            assert len(rows) == 50
            assert browser.find_elements(
                By.CSS_SELECTOR, f"table[data-table=requests] a[href^='{JAEGER}/trace/']"
            )
        if page == "errors":
            link = browser.find_element(By.CSS_SELECTOR, "a.group-link")
            first_group = link.get_attribute("href").split("?", 1)[1]
        if page == "error-group":
            assert browser.find_element(By.CSS_SELECTOR, "pre.stack").text.startswith("Traceback")
            occurrences = browser.find_elements(By.CSS_SELECTOR, "table[data-table=occurrences] tbody tr")
            assert occurrences
            assert browser.find_elements(
                By.CSS_SELECTOR, f"table[data-table=occurrences] a[href^='{JAEGER}/trace/']"
            )
        assert console_errors(browser) == [], page
        assert browser.execute_script(FOREIGN_RESOURCES) == [], f"{page} loaded something from elsewhere"
        browser.save_screenshot(str(ARTIFACTS / f"{page}.png"))
        print(f"{page}: {charts} charts, data in {samples} ms")
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2))
    slow = {page: min(samples) for page, samples in timings.items() if min(samples) > DATA_BUDGET_MS}
    assert not slow, f"data slower than {DATA_BUDGET_MS} ms: {slow} (all: {timings})"
    print("median data ms:", {page: round(statistics.median(s)) for page, s in timings.items()})


def test_the_time_picker_changes_the_window_and_the_link_keeps_it(
    signed_in: Any, service: ServerThread
) -> None:
    browser = signed_in
    open_page(browser, service, "overview")
    unready(browser)
    Select(browser.find_element(By.ID, "range")).select_by_value("24h")
    wait_for(lambda: "range=24h" in browser.current_url, "the range in the URL")
    wait_ready(browser, "overview")
    asked = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
        ".filter((n) => n.includes('requests/timeseries'))"
    )
    assert any("interval=5m" in name for name in asked), asked  # 24 h reads the 5-minute rollups
    assert_charts_have_data(browser, "overview")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1440, 1120)  # the README's picture: tiles and charts
    time.sleep(0.5)  # Plotly redraws on resize
    browser.save_screenshot(str(ARTIFACTS / "overview-24h.png"))
    browser.set_window_size(1440, 1900)

    Select(browser.find_element(By.ID, "range")).select_by_value("custom")
    start, end = browser.find_element(By.ID, "start"), browser.find_element(By.ID, "end")
    now = datetime.now(UTC)
    browser.execute_script(
        "arguments[0].value = arguments[2]; arguments[1].value = arguments[3];",
        start,
        end,
        f"{now:%Y-%m-%d}T00:00",
        f"{now:%Y-%m-%d}T23:59",
    )
    unready(browser)
    browser.find_element(By.ID, "apply-range").click()
    wait_for(lambda: "range=custom" in browser.current_url, "the custom range in the URL")
    wait_ready(browser, "overview")
    assert_charts_have_data(browser, "overview")
    link = browser.current_url

    browser.get(f"{service.origin}/dashboard/")  # elsewhere, then the link again
    browser.get(link)
    wait_ready(browser, "overview")
    assert (
        Select(browser.find_element(By.ID, "range")).first_selected_option.get_attribute("value") == "custom"
    )
    assert browser.find_element(By.ID, "start").get_attribute("value") == f"{now:%Y-%m-%d}T00:00"
    assert browser.find_element(By.ID, "end").get_attribute("value") == f"{now:%Y-%m-%d}T23:59"

    # The wrong way round is refused with a message, not a blank page.
    backwards = f"range=custom&start={now:%Y-%m-%d}T12:00:00Z&end={now:%Y-%m-%d}T11:00:00Z"
    state = open_page(browser, service, "overview", backwards)
    assert "before its end" in state.get("error", ""), state
    assert console_errors(browser) == []


def traces_listed(browser: Any) -> list[str]:
    """The trace links of the listed requests: one trace per request."""
    links = browser.find_elements(By.CSS_SELECTOR, "table[data-table=requests] a.trace")
    return [str(link.get_attribute("href")) for link in links]


def test_filters_service_picker_and_cursor_paging_on_the_requests_page(
    signed_in: Any, service: ServerThread
) -> None:
    browser = signed_in
    open_page(browser, service, "requests")
    first_page = traces_listed(browser)
    unready(browser)
    browser.find_element(By.ID, "next-page").click()
    wait_for(lambda: "cursor=" in browser.current_url, "the cursor in the URL")
    wait_ready(browser, "requests")
    second_page = traces_listed(browser)
    assert len(first_page) == len(second_page) == 50 and not set(second_page) & set(first_page)

    unready(browser)
    browser.find_element(By.ID, "first-page").click()
    wait_for(lambda: "cursor=" not in browser.current_url, "the first page")
    wait_ready(browser, "requests")
    field = browser.find_element(By.ID, "filter-min_status_code")
    field.clear()
    field.send_keys("500")
    unready(browser)
    browser.find_element(By.CSS_SELECTOR, "#request-filters button[type=submit]").click()
    wait_for(lambda: "min_status_code=500" in browser.current_url, "the filter in the URL")
    wait_ready(browser, "requests")
    statuses = [
        cell.text
        for cell in browser.find_elements(By.CSS_SELECTOR, "table[data-table=requests] td .status-5xx")
    ]
    rows = browser.find_elements(By.CSS_SELECTOR, "table[data-table=requests] tbody tr")
    assert rows and len(statuses) == len(rows) and all(s.startswith("5") for s in statuses)

    # Bad input: the service's 422 message, naming the parameter.
    field = browser.find_element(By.ID, "filter-max_status_code")
    field.send_keys("404")
    unready(browser)
    browser.find_element(By.CSS_SELECTOR, "#request-filters button[type=submit]").click()
    wait_for(lambda: "max_status_code=404" in browser.current_url, "the second filter in the URL")
    state = wait_ready(browser, "requests")
    assert "min_status_code" in state.get("error", ""), state
    assert browser.find_element(By.CSS_SELECTOR, ".banner").is_displayed()
    logged = console_errors(browser)  # Chromium logs the 422 itself; nothing else may be there
    assert [entry["source"] for entry in logged] == ["network"] and "422" in logged[0]["message"], logged

    # The service picker narrows every call to that service.
    open_page(browser, service, "overview")
    picker = Select(browser.find_element(By.ID, "service"))
    wait_for(lambda: len(picker.options) > 1, "the services in the picker")
    unready(browser)
    picker.select_by_value("homepot-demo")
    wait_for(lambda: "service=homepot-demo" in browser.current_url, "the service in the URL")
    wait_ready(browser, "overview")
    assert_charts_have_data(browser, "overview")
    assert console_errors(browser) == []


def test_resolve_regress_and_reopen_an_error_group(
    signed_in: Any, service: ServerThread, service_settings: Settings
) -> None:
    browser = signed_in
    open_page(browser, service, "errors")
    first = browser.find_element(By.CSS_SELECTOR, "button[data-action=resolve]")
    fingerprint = first.get_attribute("data-fingerprint")
    unready(browser)
    first.click()
    badge = f"[data-fingerprint='{fingerprint}']"

    def status() -> str:
        if not browser.execute_script("return window.dashboard.ready"):
            return ""
        try:
            button = browser.find_element(By.CSS_SELECTOR, f"button{badge}")
            row = button.find_element(By.XPATH, "./ancestor::tr")
            return str(row.find_element(By.CSS_SELECTOR, ".badge").get_attribute("data-status"))
        except (NoSuchElementException, StaleElementReferenceException):
            return ""

    wait_for(lambda: status() == "resolved", "resolved")
    rows = [
        r
        for r in fetch_rows(service_settings.database_url or "", "error_logs")
        if r["fingerprint"] == fingerprint
    ]
    assert rows and all(r["resolved"] and r["resolved_at"] for r in rows)

    # It happens again: the group is regressed.
    again = dict(rows[-1])
    del again["id"]
    again.update(
        timestamp=datetime.now(UTC), resolved=False, resolved_at=None, event_id=row(error_logs)["event_id"]
    )
    engine = create_engine(service_settings.database_url or "")
    try:
        insert_rows(engine, error_logs, [again])
    finally:
        engine.dispose()
    open_page(browser, service, "errors", "status=regressed")
    assert status() == "regressed"
    assert {b.get_attribute("data-status") for b in browser.find_elements(By.CSS_SELECTOR, ".badge")} == {
        "regressed"
    }

    unready(browser)
    browser.find_element(By.CSS_SELECTOR, f"button{badge}[data-action=resolve]").click()
    # Resolved, it leaves the list of regressed groups.
    wait_for(
        lambda: (
            browser.execute_script("return window.dashboard.ready")
            and not browser.find_elements(By.CSS_SELECTOR, f"button{badge}")
        ),
        "the group gone from the regressed list",
    )
    open_page(browser, service, "errors")
    assert status() == "resolved"
    unready(browser)
    browser.find_element(By.CSS_SELECTOR, f"button{badge}[data-action=reopen]").click()
    wait_for(lambda: status() == "new", "reopened")
    rows = [
        r
        for r in fetch_rows(service_settings.database_url or "", "error_logs")
        if r["fingerprint"] == fingerprint
    ]
    assert not any(r["resolved"] or r["resolved_at"] for r in rows)
    assert console_errors(browser) == []


def test_a_non_admin_token_is_refused_and_a_401_sends_back_to_sign_in(
    browser: Any, service: ServerThread, service_settings: Settings
) -> None:
    browser.get(f"{service.origin}/dashboard/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    wait_for(lambda: browser.find_element(By.ID, "sign-in").is_displayed(), "the sign-in form")
    field = browser.find_element(By.ID, "token")
    field.send_keys(token(service_settings, role="operator"))
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    message = browser.find_element(By.ID, "sign-in-message")
    wait_for(lambda: "not an admin" in message.text, "the refusal")
    assert not browser.find_element(By.CSS_SELECTOR, ".top").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('homepot-analytics.token')") is None
    assert browser.find_elements(By.CSS_SELECTOR, "[data-chart]") == []

    # Signed in, then the token stops working (expired, or the secret changed): back to sign-in.
    field.clear()
    field.send_keys(token(service_settings))
    unready(browser)
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    wait_ready(browser, "overview")
    forged = issue_token(
        service_settings.model_copy(update={"jwt_secret": "another-secret-that-is-long-enough"}),
        subject="x",
        role="admin",
        expires_in=600,
    )
    browser.execute_script("sessionStorage.setItem('homepot-analytics.token', arguments[0])", forged)
    browser.get(f"{service.origin}/dashboard/#/jobs")
    wait_for(lambda: browser.find_element(By.ID, "sign-in").is_displayed(), "the sign-in form after a 401")
    assert "Signed out" in browser.find_element(By.ID, "sign-in-message").text
    # Signing in again returns to the page that was refused.
    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token(service_settings))
    unready(browser)
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    wait_ready(browser, "jobs")
