"""An ASGI app (the analytics service, its OTLP sink included) under uvicorn in a thread of the test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def serve_in_thread(
    app: Any, *, name: str = "uvicorn", log_level: str = "warning", timeout_s: float = 20.0
) -> Iterator[str]:
    """Serve ``app`` on a free loopback port; yields its base URL once uvicorn has started (lifespan
    run, socket listening), and stops it (lifespan shutdown: the sink writes what it holds) after.

    The socket is bound here and handed to uvicorn, so no other process can take the port between
    choosing it and listening on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"{name}: uvicorn stopped before it started")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: uvicorn did not start within {timeout_s} s")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()
