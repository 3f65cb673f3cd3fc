"""The dashboard's files: ``/`` sends the browser there, every file the page loads is served by
the service itself (Plotly.js from the installed package, gzipped, cached), nothing outside the
dashboard's folder, no data without a token."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from query_api import dashboard

STATIC = Path(dashboard.__file__).parent / "static" / "dashboard"


def test_root_redirects_to_the_dashboard(shared: TestClient) -> None:
    for path in ("/", "/dashboard"):
        response = shared.get(path, follow_redirects=False)
        assert response.status_code == 307
        assert response.headers["location"] == "/dashboard/"


def test_every_file_the_page_loads_is_served_here(shared: TestClient) -> None:
    page = shared.get("/dashboard/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    referenced = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert "vendor/plotly.min.js" in referenced
    assert not [url for url in referenced if "//" in url], "no file from another host"
    # The page's modules and the modules they import, all relative to the dashboard.
    modules = {"app.js"}
    for script in STATIC.rglob("*.js"):
        base = script.parent.relative_to(STATIC)
        for imported in re.findall(r'from "(\.[^"]+)"', script.read_text()):
            modules.add(str(base / imported).replace("pages/../", ""))
    for url in {*referenced, *modules}:
        response = shared.get(f"/dashboard/{url}")
        assert response.status_code == 200, url
        assert response.headers["x-content-type-options"] == "nosniff"


def test_plotly_comes_gzipped_from_the_installed_package_with_an_etag(shared: TestClient) -> None:
    location = dashboard.plotly_location()
    assert location is not None and location.name == "plotly.min.js"
    response = shared.get(dashboard.PLOTLY_PATH, headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.content == location.read_bytes()  # httpx decoded it
    assert "max-age" in response.headers["cache-control"]
    again = shared.get(
        dashboard.PLOTLY_PATH, headers={"Accept-Encoding": "gzip", "If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""
    plain = shared.get(dashboard.PLOTLY_PATH, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.headers["etag"] != response.headers["etag"]


def test_without_the_dashboard_extra_the_chart_library_is_a_503_naming_it(
    shared: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard, "plotly_file", lambda: None)
    response = shared.get(dashboard.PLOTLY_PATH)
    assert response.status_code == 503
    assert "pip install 'homepot-analytics[dashboard]'" in response.json()["detail"]


@pytest.mark.parametrize(
    "path",
    ["../app.py", "..%2Fdashboard.py", "pages/../../dashboard.py", "nothing.js", ".hidden.js", "app.py"],
)
def test_nothing_outside_the_dashboard_files_is_served(shared: TestClient, path: str) -> None:
    response = shared.get(f"/dashboard/{path}")
    assert response.status_code == 404, path


def test_our_files_are_revalidated_and_answer_304_when_unchanged(shared: TestClient) -> None:
    first = shared.get("/dashboard/app.js")
    assert first.headers["cache-control"] == "no-cache"
    again = shared.get("/dashboard/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


def test_the_files_hold_no_data_and_the_data_needs_an_admin(shared: TestClient) -> None:
    assert shared.get("/dashboard/").status_code == 200  # no token needed for the page itself
    assert shared.get("/api/v1/analytics/requests/summary").status_code == 401
