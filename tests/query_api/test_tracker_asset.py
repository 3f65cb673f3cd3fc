"""How ``/tracker.js`` and ``/tracker.mjs`` are served: minified, compressed (br, gzip), small,
cacheable (ETag per representation, 304, Cache-Control), HEAD answered; valid JavaScript."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import brotli
import pytest
from fastapi.testclient import TestClient

from query_api import tracker_asset

WIRE_BUDGET = 6 * 1024  # bytes of the compressed tracker a browser downloads


def raw_get(client: TestClient, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and the body as sent (not decoded)."""
    with client.stream("GET", path, headers=headers) as response:
        body = b"".join(response.iter_raw())
        return response.status_code, dict(response.headers), body


@pytest.mark.parametrize("path", ["/tracker.js", "/tracker.mjs"])
def test_served_minified_and_gzip_compressed_within_budget(shared: TestClient, path: str) -> None:
    asset = tracker_asset.classic() if path == "/tracker.js" else tracker_asset.module()
    status, headers, body = raw_get(shared, path, **{"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(body)
    assert len(body) <= WIRE_BUDGET, f"{path}: {len(body)} bytes gzip"
    text = gzip.decompress(body).decode()
    assert text == asset.text
    assert len(text) < 0.7 * len(tracker_asset.tracker_source())  # comments and layout gone
    assert text.startswith("/*! HOMEPOT analytics") and "// " not in text
    assert headers["cache-control"] == "public, max-age=3600"
    assert "accept-encoding" in headers["vary"].lower()
    assert headers["access-control-allow-origin"] == "*"


def test_br_when_the_client_takes_it_identity_when_it_takes_nothing(shared: TestClient) -> None:
    _, br_headers, br_body = raw_get(shared, "/tracker.js", **{"Accept-Encoding": "gzip, deflate, br"})
    assert br_headers["content-encoding"] == "br"
    assert brotli.decompress(br_body).decode() == tracker_asset.classic().text
    _, gz_headers, _ = raw_get(shared, "/tracker.js", **{"Accept-Encoding": "br;q=0, gzip"})
    assert gz_headers["content-encoding"] == "gzip"
    _, plain_headers, plain_body = raw_get(shared, "/tracker.js", **{"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain_headers
    assert plain_body.decode() == tracker_asset.classic().text
    # One ETag per representation: a cache must never hand gzip bytes to a client that asked for br.
    assert len({br_headers["etag"], gz_headers["etag"], plain_headers["etag"]}) == 3


def test_if_none_match_gives_304_and_head_gives_the_headers_alone(shared: TestClient) -> None:
    gzip_only = {"Accept-Encoding": "gzip"}
    _, headers, body = raw_get(shared, "/tracker.js", **gzip_only)
    etag = headers["etag"]
    for validator in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = shared.get("/tracker.js", headers={**gzip_only, "If-None-Match": validator})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag and again.headers["cache-control"] == "public, max-age=3600"
        assert "accept-encoding" in again.headers["vary"].lower()
    # The gzip representation's tag does not validate the br one.
    other = shared.get("/tracker.js", headers={"Accept-Encoding": "br", "If-None-Match": etag})
    assert other.status_code == 200

    head = shared.head("/tracker.js", headers=gzip_only)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(body))
    assert head.headers["etag"] == etag and head.headers["content-encoding"] == "gzip"
    assert shared.head("/tracker.mjs").status_code == 200


def test_the_module_is_the_same_tracker_finding_its_endpoint_from_its_url() -> None:
    classic, module = tracker_asset.classic().text, tracker_asset.module().text
    assert "import.meta.url" in module and "import.meta" not in classic
    assert module.rstrip().endswith("export default HomepotAnalytics;")
    assert classic.rstrip().endswith(",null);")
    assert tracker_asset.classic() is tracker_asset.classic()  # built once
    with pytest.raises(RuntimeError):
        tracker_asset.module_source("(function () {})();")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_what_is_served_is_valid_javascript(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node
    for name, asset in (("tracker.js", tracker_asset.classic()), ("tracker.mjs", tracker_asset.module())):
        path = tmp_path / name
        path.write_text(asset.text)
        result = subprocess.run([node, "--check", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, set()),
        ("gzip, deflate, br, zstd", {"gzip", "deflate", "br", "zstd"}),
        ("br;q=0, gzip;q=0.5", {"gzip"}),
        ("*", {"*", "br", "gzip"}),
        ("*, br;q=0", {"*", "gzip"}),
        ("GZIP ; q=1.0", {"gzip"}),
        ("gzip;q=nonsense", set()),
    ],
)
def test_accepted_encodings(header: str | None, expected: set[str]) -> None:
    assert tracker_asset.accepted_encodings(header) == expected
