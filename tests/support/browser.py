"""What the browser tests share: headless Chromium, uvicorn servers in threads (one that can be
stopped and started again on the same port), and waiting for rows.

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the PyPI package ``selenium``;
test modules skip themselves when ``CHROMIUM_MISSING`` is set."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from tests.conftest import fetch_rows

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_MISSING = (
    None
    if CHROMIUM and CHROMEDRIVER
    else "Chromium is not installed (apt-get install -y chromium chromium-driver)"
)

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


class ServerThread:
    """uvicorn serving ``app`` on a loopback port of its own, in a thread; stopped by ``stop``.

    The port is bound at once (connections are refused until ``start``), so it is known before the
    app exists; ``port`` binds a given one again (a service back after an outage)."""

    def __init__(self, app: Any, port: int = 0) -> None:
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", port))
        self.port = self.socket.getsockname()[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=20)
        self.socket.close()


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium with a new, empty profile in ``profile``; its console log kept."""
    from selenium import webdriver

    assert CHROMIUM and CHROMEDRIVER, CHROMIUM_MISSING
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def rows_when(
    url: str, count: int, browser: Any | None = None, timeout: float = 15.0, settle: float = 0.5
) -> list[dict[str, Any]]:
    """The rows once ``count`` have arrived, then a little longer (``settle``) to catch any extra."""

    def arrived() -> list[dict[str, Any]] | None:
        rows = fetch_rows(url, "user_activities", order_by="timestamp, id")
        return rows if len(rows) >= count else None

    try:
        wait_for(arrived, f"{count} rows in user_activities", timeout)
    except AssertionError:
        found = fetch_rows(url, "user_activities", order_by="timestamp, id")
        console = browser.get_log("browser") if browser is not None else []
        raise AssertionError(
            f"{len(found)} rows: {[(r['activity_type'], r['page_url']) for r in found]}; {console}"
        ) from None
    time.sleep(settle)
    return fetch_rows(url, "user_activities", order_by="timestamp, id")
