"""The one settings object of a process, read from ``HOMEPOT_ANALYTICS_*`` environment variables.

Every tunable of the project lives here so the README can document them in one table.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_EXCLUDED_PATHS = (
    "/health",
    "/healthz",
    "/ready",
    "/readyz",
    "/livez",
    "/metrics",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
    "/favicon.ico",
)

# Who starts jobs and changes devices besides people: stored as they are, never pseudonymised.
DEFAULT_SYSTEM_ACTORS = ("system", "orchestrator", "scheduler", "agent")


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "homepot-analytics"


def _split_csv(value: object) -> object:
    """Let list settings be written as ``a,b,c`` in the environment as well as JSON."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            return json.loads(stripped)
        return [item.strip() for item in stripped.split(",") if item.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Configuration for instrumentation, exporter and query service."""

    model_config = SettingsConfigDict(env_prefix="HOMEPOT_ANALYTICS_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL. Unset: an embedded PostgreSQL is started under data_dir.",
    )
    read_database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL of a read replica for query API and dashboard reads; unset: "
        "the primary. Writes always go to database_url.",
    )
    # Above PostgreSQL's default max_standby_streaming_delay (30 s): replay held back that long by
    # a long summary on the standby is expected, not a reason to refuse every other read.
    read_max_lag_ms: int = Field(
        default=60000,
        ge=0,
        description="How far the read replica may be behind the primary before reads answer 503.",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where the embedded PostgreSQL and the exporter's spool keep their files.",
    )
    service_name: str | None = Field(
        default=None, description="service.name of instrumented services (else OTEL_SERVICE_NAME)."
    )
    record_server_errors: bool = Field(
        default=True,
        description="A 5xx the app answers itself (HTTPException(500), a returned 503) makes an "
        "error_logs row too.",
    )
    user_cookie: str = Field(
        default="access_token",
        description="Cookie holding the session JWT whose subject names the user (before the "
        "bearer header); empty: none.",
    )
    excluded_paths: CsvList = Field(
        default_factory=list,
        description="Request paths not recorded, in addition to the defaults (health, docs, metrics).",
    )
    exclude_default_paths: bool = Field(
        default=True,
        description="Leave the default paths (health, docs, metrics) unrecorded; false: only "
        "HOMEPOT_ANALYTICS_EXCLUDED_PATHS.",
    )
    trusted_proxies: CsvList = Field(
        default_factory=list,
        description="CIDRs/IPs whose X-Forwarded-For / Forwarded headers are believed.",
    )
    export_queue_size: int = Field(
        default=65536, ge=512, description="Spans/log records buffered in memory before dropping."
    )
    export_batch_size: int = Field(default=4096, ge=1, description="Records written per COPY batch.")
    export_delay_ms: int = Field(default=1000, ge=10, description="Longest wait before a batch is written.")
    export_worker: Literal["process", "thread"] = Field(
        default="process",
        description="Where an instrumented service maps and writes its records: process (a worker "
        "process of its own; only encoding the finished record runs in the service) or thread "
        "(threads of the service's own interpreter).",
    )
    spool_retry_max_s: float = Field(
        default=30.0,
        ge=0.1,
        le=3600,
        description="Longest wait between two tries to replay the outage spool (from 0.5 s, doubling).",
    )
    spool_max_mb: int = Field(default=512, ge=1, description="Disk the exporter's outage spool may use.")
    auto_migrate: bool = Field(
        default=True, description="Create/upgrade the tables on the exporter's first connection."
    )
    jwt_secret: str | None = Field(default=None, description="HS256 secret of the query API's admin tokens.")
    user_token_secret: SecretStr | None = Field(
        default=None,
        description="HS256 secret of the host app's user tokens (HOMEPOT's SECRET_KEY), checked "
        "on the frontend intake's cookie or bearer token; unset: HOMEPOT_ANALYTICS_JWT_SECRET.",
    )
    ingest_token: str | None = Field(default=None, description="Bearer token required by the OTLP sink.")
    ingest_max_body_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        description="Largest OTLP request the sink accepts, compressed and uncompressed (else 413).",
    )
    export: CsvList = Field(
        default_factory=lambda: ["postgres"],
        description="Where instrumented services send telemetry: postgres, otlp (configured by the "
        "standard OTEL_EXPORTER_OTLP_* variables) or both (postgres,otlp).",
    )
    jaeger_url: str | None = Field(default=None, description="Jaeger UI base URL for trace links.")
    query_timeout_ms: int = Field(
        default=30000,
        ge=100,
        description="Longest a query API statement may run before it is cancelled (503).",
    )
    cors_origins: CsvList = Field(default_factory=list, description="Frontend origins allowed by CORS.")
    intake_max_body_bytes: int = Field(
        default=512 * 1024, ge=1024, description="Largest body the user-activity intake accepts (else 413)."
    )
    intake_max_batch: int = Field(
        default=500, ge=1, description="Most events in one user-activity batch (else 413)."
    )
    log_capture_level: str = Field(
        default="ERROR",
        description="Python logging records at this level and up become error_logs rows "
        "(CRITICAL, ERROR, WARNING; OFF: none).",
    )
    # --- privacy & retention ---
    pseudonym_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="HMAC-SHA256 key of user pseudonyms. Unset: a key generated once in data_dir "
        "(set it when processes run on several machines).",
    )
    pseudonymize_users: bool = Field(
        default=True, description="Store user_id, changed_by and initiated_by as keyed pseudonyms (u_...)."
    )
    system_actors: CsvList = Field(
        default_factory=lambda: list(DEFAULT_SYSTEM_ACTORS),
        description="changed_by/initiated_by values that name no person (any case): stored as they "
        "are, never pseudonymised.",
    )
    truncate_ips: bool = Field(
        default=True, description="Store client IPs truncated to /24 (IPv4) or /48 (IPv6)."
    )
    sensitive_query_params: CsvList = Field(
        default_factory=list,
        description="Query parameters removed from stored URLs besides password, token, secret, api_key, "
        "key, session, authorization, ... (also masked as name=value pairs in text).",
    )
    retention_days: int = Field(default=90, ge=0, description="Days rows are kept (0: forever).")
    rollup_retention_days: int = Field(
        default=400,
        ge=0,
        description="Days the rollups' buckets are kept (0: forever); longer than the raw rows', "
        "so trends outlive them.",
    )
    rollup_refresh_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="How often `serve` rebuilds the rollup buckets that new rows made stale; reads "
        "take raw rows there until then (exact, only slower).",
    )
    retention_days_api_request_logs: int | None = Field(
        default=None, ge=0, description="Overrides retention_days."
    )
    retention_days_device_state_history: int | None = Field(
        default=None, ge=0, description="Overrides retention_days."
    )
    retention_days_job_outcomes: int | None = Field(
        default=None, ge=0, description="Overrides retention_days."
    )
    retention_days_error_logs: int | None = Field(default=None, ge=0, description="Overrides retention_days.")
    retention_days_user_activities: int | None = Field(
        default=None, ge=0, description="Overrides retention_days."
    )

    @field_validator("excluded_paths", "trusted_proxies", "cors_origins", "system_actors", mode="before")
    @classmethod
    def _lists_from_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("export", mode="before")
    @classmethod
    def _known_export_targets(cls, value: object) -> object:
        targets = _split_csv(value)
        if isinstance(targets, list):
            targets = [str(target).strip().lower() for target in targets]
            unknown = sorted(set(targets) - {"postgres", "otlp"})
            if unknown:
                raise ValueError(f"unknown export target(s) {unknown}: use postgres, otlp or both")
        return targets

    @property
    def user_token_secret_value(self) -> str | None:
        """The secret that verifies frontend users' tokens (its own, else the admin one)."""
        if self.user_token_secret is not None:
            return self.user_token_secret.get_secret_value()
        return self.jwt_secret

    @field_validator("log_capture_level", mode="before")
    @classmethod
    def _known_level(cls, value: object) -> object:
        level = str(value).strip().upper()
        if level not in ("CRITICAL", "ERROR", "WARNING", "OFF"):
            raise ValueError(f"log_capture_level {value!r}: use CRITICAL, ERROR, WARNING or OFF")
        return level

    @field_validator("sensitive_query_params", mode="before")
    @classmethod
    def _params_from_csv(cls, value: object) -> object:
        return _split_csv(value)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
