"""The service starts and keeps what it receives while its database is away."""

from __future__ import annotations

import socket
from pathlib import Path

from fastapi.testclient import TestClient

from homepot_foundation.settings import Settings
from query_api.app import create_app


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_service_starts_with_the_database_down_and_spools_otlp(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"postgresql://postgres@127.0.0.1:{_closed_port()}/nowhere",
        data_dir=tmp_path,
        jwt_secret="x" * 40,
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").json() == {"status": "ok"}
        body = {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": "0af7651916cd43dd8448eb211c80319c",
                                    "spanId": "b7ad6b7169203331",
                                    "name": "GET /x",
                                    "kind": 2,
                                    "startTimeUnixNano": "1764942323000000000",
                                    "endTimeUnixNano": "1764942323045000000",
                                    "attributes": [
                                        {"key": "http.request.method", "value": {"stringValue": "GET"}},
                                        {"key": "url.path", "value": {"stringValue": "/x"}},
                                        {"key": "http.response.status_code", "value": {"intValue": "200"}},
                                    ],
                                }
                            ]
                        }
                    ],
                }
            ]
        }
        response = client.post("/v1/traces", json=body)
        assert response.status_code == 200, response.text
    assert list((tmp_path / "spool").rglob("*.batch")), "the span is kept on disk for replay"
