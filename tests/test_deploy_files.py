"""The collector configs (otel-collector.yaml, deploy/otel-collector-{agent,gateway}.yaml),
docker-compose.yml, Grafana's provisioning and the Dockerfile, checked without a Docker engine.

No collector or Docker runs here, so these tests read the files and check what would otherwise
fail only at ``docker compose up``: every collector component is one otelcol-contrib ships,
configured only with keys it has; pipelines use defined components; exporters point at compose
services on the ports those services listen on; environment variables are settings that exist.

The key lists below are taken from the components' config schemas (collector core
``config.schema.yaml`` files, contrib ``processor/redactionprocessor/config.schema.yaml``,
``extension/storage/filestorage/config.go``, ``extension/healthcheckextension/config.go``,
``exporter/loadbalancingexporter/config.schema.yaml``).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from exporter import conventions
from homepot_foundation.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ANY = None  # a leaf: any value


def _leaves(*keys: str) -> dict[str, Any]:
    return dict.fromkeys(keys, ANY)


# --- what otelcol-contrib's components accept -------------------------------------------------------
TLS_CLIENT = _leaves(
    "insecure",
    "insecure_skip_verify",
    "server_name_override",
    "ca_file",
    "ca_pem",
    "cert_file",
    "cert_pem",
    "key_file",
    "key_pem",
    "min_version",
    "max_version",
    "cipher_suites",
    "curve_preferences",
    "include_system_ca_certs_pool",
    "reload_interval",
    "tpm",
)
RETRY = _leaves(
    "enabled", "initial_interval", "max_interval", "max_elapsed_time", "multiplier", "randomization_factor"
)
QUEUE = _leaves(
    "enabled",
    "num_consumers",
    "queue_size",
    "sizer",
    "storage",
    "block_on_overflow",
    "wait_for_result",
    "batch",
)
GRPC_SERVER = _leaves(
    "endpoint",
    "transport",
    "tls",
    "max_recv_msg_size_mib",
    "max_concurrent_streams",
    "read_buffer_size",
    "write_buffer_size",
    "keepalive",
    "auth",
    "include_metadata",
    "middlewares",
)
HTTP_SERVER = _leaves(
    "endpoint",
    "tls",
    "cors",
    "auth",
    "max_request_body_size",
    "include_metadata",
    "response_headers",
    "compression_algorithms",
    "read_timeout",
    "read_header_timeout",
    "write_timeout",
    "idle_timeout",
    "keep_alives_enabled",
    "middlewares",
    "traces_url_path",
    "metrics_url_path",
    "logs_url_path",
)
GRPC_CLIENT = {
    **_leaves(
        "endpoint",
        "compression",
        "headers",
        "keepalive",
        "auth",
        "authority",
        "balancer_name",
        "read_buffer_size",
        "write_buffer_size",
        "wait_for_ready",
        "user_agent",
        "middlewares",
        "timeout",
    ),
    "tls": TLS_CLIENT,
    "retry_on_failure": RETRY,
    "sending_queue": QUEUE,
}
HTTP_CLIENT = {
    **_leaves(
        "endpoint",
        "traces_endpoint",
        "metrics_endpoint",
        "logs_endpoint",
        "profiles_endpoint",
        "encoding",
        "auth",
        "compression",
        "compression_params",
        "cookies",
        "disable_keep_alives",
        "headers",
        "idle_conn_timeout",
        "max_conns_per_host",
        "max_idle_conns",
        "max_idle_conns_per_host",
        "middlewares",
        "proxy_url",
        "read_buffer_size",
        "timeout",
        "write_buffer_size",
    ),
    "tls": TLS_CLIENT,
    "retry_on_failure": RETRY,
    "sending_queue": QUEUE,
}
# Its type is `load_balancing` since contrib 0.154 (`loadbalancing` before, now a deprecated alias).
# protocol.otlp is the OTLP gRPC exporter's config without the endpoint, which the resolver gives.
LOAD_BALANCING = {
    **_leaves("routing_key", "routing_attributes", "timeout"),
    "retry_on_failure": RETRY,
    "sending_queue": QUEUE,
    "protocol": {"otlp": {key: value for key, value in GRPC_CLIENT.items() if key != "endpoint"}},
    "resolver": {
        "static": _leaves("hostnames"),
        "dns": _leaves("hostname", "port", "interval", "timeout"),
        "k8s": _leaves("service", "ports", "timeout", "return_hostnames"),
        "aws_cloud_map": _leaves("namespace", "service_name", "health_status", "interval", "timeout", "port"),
    },
}
COMPONENTS: dict[str, dict[str, dict[str, Any]]] = {
    "receivers": {"otlp": {"protocols": {"grpc": GRPC_SERVER, "http": HTTP_SERVER}}},
    "processors": {
        "memory_limiter": _leaves(
            "check_interval",
            "limit_mib",
            "spike_limit_mib",
            "limit_percentage",
            "spike_limit_percentage",
            "min_gc_interval_when_soft_limited",
            "min_gc_interval_when_hard_limited",
            "max_gc_interval_when_soft_limited",
            "max_gc_interval_when_hard_limited",
        ),
        "batch": _leaves(
            "timeout", "send_batch_size", "send_batch_max_size", "metadata_keys", "metadata_cardinality_limit"
        ),
        "redaction": _leaves(
            "allow_all_keys",
            "allowed_keys",
            "allowed_values",
            "blocked_key_patterns",
            "blocked_values",
            "db_sanitizer",
            "hash_function",
            "hmac_key",
            "ignored_key_patterns",
            "ignored_keys",
            "redact_all_types",
            "summary",
            "url_sanitizer",
        ),
    },
    "exporters": {"otlp_grpc": GRPC_CLIENT, "otlp_http": HTTP_CLIENT, "load_balancing": LOAD_BALANCING},
    "extensions": {
        "health_check": _leaves(
            "endpoint", "path", "response_body", "check_collector_pipeline", "tls", "cors", "auth"
        ),
        "file_storage": {
            "directory": ANY,
            "timeout": ANY,
            "fsync": ANY,
            "create_directory": ANY,
            "directory_permissions": ANY,
            "compaction": _leaves(
                "on_start",
                "on_rebound",
                "directory",
                "rebound_needed_threshold_mib",
                "rebound_trigger_threshold_mib",
                "max_transaction_size",
                "check_interval",
            ),
        },
    },
}
# Since collector 0.144 the OTLP exporters are otlp_grpc / otlp_http; the old names are aliases.
ALIASES = {"otlp": "otlp_grpc", "otlphttp": "otlp_http"}


def _load(name: str) -> Any:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    return _load("otel-collector.yaml")


COLLECTOR_CONFIGS = [
    "otel-collector.yaml",
    "deploy/otel-collector-agent.yaml",
    "deploy/otel-collector-gateway.yaml",
]


@pytest.fixture(scope="module", params=COLLECTOR_CONFIGS)
def any_collector(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each collector config in turn: the sink tier, the per-host agent, the gateway."""
    return _load(request.param)


@pytest.fixture(scope="module")
def agent() -> dict[str, Any]:
    return _load("deploy/otel-collector-agent.yaml")


@pytest.fixture(scope="module")
def gateway() -> dict[str, Any]:
    return _load("deploy/otel-collector-gateway.yaml")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load("docker-compose.yml")


def _type(kind: str, component_id: str) -> str:
    """The component type of an id such as ``otlp_http/analytics``."""
    name = component_id.split("/", 1)[0]
    return name if kind != "exporters" else ALIASES.get(name, name)


def _unknown_keys(config: Any, schema: dict[str, Any], path: str) -> list[str]:
    if config is None:
        return []
    assert isinstance(config, dict), f"{path} must be a mapping"
    problems = []
    for key, value in config.items():
        if key not in schema:
            problems.append(f"{path}.{key}")
        elif schema[key] is not ANY:
            problems += _unknown_keys(value, schema[key], f"{path}.{key}")
    return problems


# --- every collector config ------------------------------------------------------------------------------
def test_every_component_is_one_otelcol_contrib_ships_with_keys_it_has(any_collector: dict[str, Any]) -> None:
    problems: list[str] = []
    for kind, known in COMPONENTS.items():
        for component_id, config in (any_collector.get(kind) or {}).items():
            component_type = _type(kind, component_id)
            if component_type not in known:
                problems.append(f"{kind}.{component_id}: no such component")
                continue
            problems += _unknown_keys(config, known[component_type], f"{kind}.{component_id}")
    assert problems == []


def test_the_key_check_catches_a_misspelt_key() -> None:
    config = {
        "endpoint": "x",
        "retry_on_failure": {"enabled": True, "max_elapsed": "1s"},
        "tls": {"insecur": True},
    }
    assert _unknown_keys(config, HTTP_CLIENT, "e") == ["e.retry_on_failure.max_elapsed", "e.tls.insecur"]


def test_pipelines_use_defined_components_and_every_component_is_used(any_collector: dict[str, Any]) -> None:
    collector = any_collector
    service = collector["service"]
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in service["pipelines"].items():
        for kind in used:
            for component_id in pipeline.get(kind, []):
                assert component_id in (collector.get(kind) or {}), (
                    f"pipeline {name}: {component_id} undefined"
                )
                used[kind].add(component_id)
    for kind, ids in used.items():
        assert ids == set(collector.get(kind) or {}), f"{kind} defined but unused"
    assert set(service["extensions"]) == set(collector["extensions"])


def test_every_pipeline_limits_memory_first_and_batches_last(any_collector: dict[str, Any]) -> None:
    for name, pipeline in any_collector["service"]["pipelines"].items():
        processors = [_type("processors", p) for p in pipeline["processors"]]
        # memory_limiter first (refuse before buffering), batch last (after anything that drops).
        assert processors[0] == "memory_limiter", name
        assert processors[-1] == "batch", name


def test_every_exporter_that_leaves_the_host_queues_on_disk(any_collector: dict[str, Any]) -> None:
    # Jaeger's copy of the traces is the one exception: a viewer, not a record.
    for component_id, config in any_collector["exporters"].items():
        if component_id == "otlp_grpc/jaeger":
            continue
        queue = config["sending_queue"]
        assert queue["enabled"] is True, component_id
        assert _type("extensions", queue["storage"]) == "file_storage", component_id
        assert queue["storage"] in any_collector["service"]["extensions"], component_id
        retry = config["retry_on_failure"]
        assert retry["enabled"] is True and retry["max_elapsed_time"] == "0s", component_id


# --- otel-collector.yaml (the sink tier) --------------------------------------------------------------------
def test_traces_and_logs_pipelines(collector: dict[str, Any]) -> None:
    pipelines = collector["service"]["pipelines"]
    assert set(pipelines) == {"traces", "logs"}
    exporters = {name: {_type("exporters", e) for e in p["exporters"]} for name, p in pipelines.items()}
    assert exporters == {"traces": {"otlp_grpc", "otlp_http"}, "logs": {"otlp_http"}}  # Jaeger takes no logs
    for name, pipeline in pipelines.items():
        assert pipeline["receivers"] == ["otlp"]
        assert "redaction" in [_type("processors", p) for p in pipeline["processors"]], name


def test_receiver_listens_on_the_standard_otlp_ports(collector: dict[str, Any]) -> None:
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"


def _exporter(collector: dict[str, Any], component_type: str) -> dict[str, Any]:
    (config,) = [c for i, c in collector["exporters"].items() if _type("exporters", i) == component_type]
    return config


def test_the_sink_exporter_retries_and_queues_on_disk(collector: dict[str, Any]) -> None:
    sink = _exporter(collector, "otlp_http")
    assert sink["retry_on_failure"]["enabled"] is True
    queue = sink["sending_queue"]
    assert queue["enabled"] is True
    storage = queue["storage"]
    assert _type("extensions", storage) == "file_storage"
    assert storage in collector["service"]["extensions"]
    assert sink["encoding"] in ("proto", "json")
    assert sink["compression"] == "gzip"  # the sink decodes gzip
    assert sink["headers"]["Authorization"] == "Bearer ${env:HOMEPOT_ANALYTICS_INGEST_TOKEN}"


def test_jaeger_exporter_is_plain_grpc(collector: dict[str, Any]) -> None:
    jaeger = _exporter(collector, "otlp_grpc")
    assert jaeger["tls"]["insecure"] is True


def _redaction(collector: dict[str, Any]) -> dict[str, Any]:
    (config,) = [c for i, c in collector["processors"].items() if _type("processors", i) == "redaction"]
    return config


def _masked(config: dict[str, Any], value: str) -> str:
    # Go RE2 and Python agree on these patterns (no look-arounds or back-references).
    for pattern in config["blocked_values"]:
        value = re.sub(pattern, "****", value)
    return value


def test_redaction_masks_credentials(collector: dict[str, Any]) -> None:
    config = _redaction(collector)
    assert config["allow_all_keys"] is True  # otherwise every attribute not listed is deleted
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    samples = {
        f"Authorization: Bearer {jwt}": "Authorization: ****",
        "/login?user=bob&password=hunter2&next=/": "/login?user=bob&****&next=/",
        "GET /cb?access_token=abc123 failed": "GET /cb?**** failed",
        "could not connect to postgresql://app:s3cret@db:5432/x": "could not connect to ****db:5432/x",
        f"token in body {jwt}": "token in body ****",
    }
    assert {text: _masked(config, text) for text in samples} == samples
    keys = [re.compile(pattern) for pattern in config["blocked_key_patterns"]]
    for key in ("http.request.header.authorization", "http.request.header.cookie", "db.password", "api_key"):
        assert any(p.search(key) for p in keys), key


def test_redaction_leaves_the_attributes_the_tables_are_built_from(collector: dict[str, Any]) -> None:
    config = _redaction(collector)
    keys = [re.compile(pattern) for pattern in config["blocked_key_patterns"]]
    ours = {value for name, value in vars(conventions).items() if name.isupper() and isinstance(value, str)}
    ours |= {key for value in vars(conventions).values() if isinstance(value, tuple) for key in value}
    masked = sorted(key for key in ours if any(p.search(key) for p in keys))
    assert masked == []
    ordinary = "GET /api/v1/devices/dev_001?page=2 took 12 ms for user u-77 from 203.0.113.9"
    assert _masked(config, ordinary) == ordinary


# --- deploy/otel-collector-agent.yaml and -gateway.yaml ------------------------------------------------
def _grpc_port(collector: dict[str, Any]) -> int:
    return _host_port(collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])[1]


def test_the_agent_masks_credentials_with_the_sink_tiers_rules(
    agent: dict[str, Any], collector: dict[str, Any]
) -> None:
    assert _redaction(agent) == _redaction(collector)
    for name, pipeline in agent["service"]["pipelines"].items():
        assert "redaction" in [_type("processors", p) for p in pipeline["processors"]], name


def test_the_agent_sends_everything_to_the_gateway_pool(
    agent: dict[str, Any], gateway: dict[str, Any]
) -> None:
    pipelines = agent["service"]["pipelines"]
    assert set(pipelines) == {"traces", "logs"}
    assert {e for p in pipelines.values() for e in p["exporters"]} == {"otlp_grpc/gateway"}
    assert {e for p in pipelines.values() for e in p["receivers"]} == {"otlp"}
    exporter = agent["exporters"]["otlp_grpc/gateway"]
    # gRPC's dns resolver plus round_robin spreads an agent over every gateway, not just one.
    assert exporter["endpoint"] == "dns:///${env:OTEL_GATEWAY_ENDPOINT}"
    assert exporter["balancer_name"] == "round_robin"
    assert exporter["compression"] == "gzip"
    assert {4317, 4318} == {
        _host_port(p["endpoint"])[1] for p in agent["receivers"]["otlp"]["protocols"].values()
    }
    assert _grpc_port(gateway) == 4317  # where OTEL_GATEWAY_ENDPOINT's port points


def _balancers(gateway: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: gateway["exporters"][exporter_id]
        for name, pipeline in gateway["service"]["pipelines"].items()
        for exporter_id in pipeline["exporters"]
        if _type("exporters", exporter_id) == "load_balancing"
    }


def test_the_gateway_routes_traces_by_trace_id_and_logs_by_service(gateway: dict[str, Any]) -> None:
    pipelines = gateway["service"]["pipelines"]
    assert set(pipelines) == {"traces", "logs"}
    for pipeline in pipelines.values():
        assert [_type("exporters", e) for e in pipeline["exporters"]] == ["load_balancing"]
    balancers = _balancers(gateway)
    assert balancers["traces"]["routing_key"] == "traceID"  # a trace, whole, in one sink
    assert balancers["logs"]["routing_key"] == "service"
    # The deprecated spelling is not used, nor a routing key that exporter does not know.
    assert not any(i.split("/")[0] == "loadbalancing" for i in gateway["exporters"])


def test_the_gateway_resolves_every_sink_collector_on_its_grpc_port(
    gateway: dict[str, Any], collector: dict[str, Any]
) -> None:
    for name, balancer in _balancers(gateway).items():
        (resolver,) = balancer["resolver"].items()  # exactly one resolver
        kind, config = resolver
        assert kind == "dns", name
        assert config["hostname"] == "${env:OTEL_SINK_HOSTNAME}"
        assert int(config["port"]) == _grpc_port(collector), "the sinks' OTLP gRPC receiver"
        backend = balancer["protocol"]["otlp"]
        assert "endpoint" not in backend  # the resolver gives it
        # Failures go back to the gateway's disk queue and are routed again, not retried per sink.
        assert backend["retry_on_failure"]["enabled"] is False, name
        assert backend["sending_queue"]["enabled"] is False, name


def test_the_gateways_queues_are_separate_files_of_one_storage(gateway: dict[str, Any]) -> None:
    storages = {balancer["sending_queue"]["storage"] for balancer in _balancers(gateway).values()}
    assert len(storages) == 1  # file_storage keeps one file per component using it
    assert len(_balancers(gateway)) == 2


# --- docker-compose.yml ----------------------------------------------------------------------------------
_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


def _interpolated(value: Any) -> Any:
    """A compose value with ``${NAME:-default}`` replaced by its default (the development setup)."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, dict):
        return {key: _interpolated(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolated(item) for item in value]
    return value


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    return _interpolated(compose["services"][name])


def _environment(compose: dict[str, Any], name: str) -> dict[str, str]:
    return {key: str(value) for key, value in (_service(compose, name).get("environment") or {}).items()}


def _published(service: dict[str, Any]) -> set[int]:
    return {int(str(port).rsplit(":", 1)[-1]) for port in service.get("ports", [])}


def _host_port(url_or_address: str) -> tuple[str, int]:
    parts = urlsplit(url_or_address if "://" in url_or_address else f"//{url_or_address}")
    assert parts.hostname is not None and parts.port is not None, url_or_address
    return parts.hostname, parts.port


def _serve_port(service: dict[str, Any]) -> int:
    command = service["command"]
    assert command[0] == "serve"
    assert command[command.index("--host") + 1] == "0.0.0.0"  # reachable from the other containers
    return int(command[command.index("--port") + 1])


def test_the_stack_has_every_service(compose: dict[str, Any]) -> None:
    assert {"postgres", "jaeger", "analytics", "otel-collector", "demo", "grafana"} <= set(
        compose["services"]
    )
    assert _service(compose, "jaeger")["image"].startswith("jaegertracing/jaeger:2.")
    assert 16686 in _published(_service(compose, "jaeger"))
    assert _service(compose, "otel-collector")["image"].startswith("otel/opentelemetry-collector-contrib:")
    for name in ("analytics", "demo"):
        assert _service(compose, name)["build"] == "."
    assert (ROOT / "Dockerfile").is_file()


def test_postgres_is_health_checked_and_the_database_url_matches_it(compose: dict[str, Any]) -> None:
    postgres = _service(compose, "postgres")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    env = postgres["environment"]
    expected = (
        f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432/{env['POSTGRES_DB']}"
    )
    for name in ("analytics", "demo"):
        assert _environment(compose, name)["HOMEPOT_ANALYTICS_DATABASE_URL"] == expected


def test_services_start_in_order(compose: dict[str, Any]) -> None:
    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in _service(compose, name)["depends_on"].items()}

    assert conditions("analytics") == {"postgres": "service_healthy"}
    collector = conditions("otel-collector")
    assert collector["analytics"] == "service_healthy"
    assert collector["jaeger"] == "service_started"
    assert collector["otel-queue-permissions"] == "service_completed_successfully"
    assert conditions("demo")["otel-collector"] == "service_started"
    assert "healthcheck" in _service(compose, "analytics")


def test_the_collector_gets_its_config_and_a_writable_queue(
    compose: dict[str, Any], collector: dict[str, Any]
) -> None:
    service = _service(compose, "otel-collector")
    (config_flag,) = [arg for arg in service["command"] if arg.startswith("--config=")]
    config_path = config_flag.split("=", 1)[1]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
    assert mounts[config_path] == "./otel-collector.yaml"
    queue_dir = next(
        c["directory"] for i, c in collector["extensions"].items() if i.startswith("file_storage")
    )
    assert queue_dir in mounts, "the file_storage directory must be a volume (persistent, and must exist)"
    permissions = _service(compose, "otel-queue-permissions")
    assert f"{mounts[queue_dir]}:{queue_dir}" in permissions["volumes"]
    assert permissions["command"][:3] == ["chown", "-R", "10001:10001"]
    assert {4317, 4318} <= _published(service)


def test_exporters_point_at_compose_services_on_their_ports(
    compose: dict[str, Any], collector: dict[str, Any]
) -> None:
    jaeger_host, jaeger_port = _host_port(_exporter(collector, "otlp_grpc")["endpoint"])
    assert (jaeger_host, jaeger_port) == ("jaeger", 4317)  # Jaeger v2's OTLP gRPC receiver
    sink_host, sink_port = _host_port(_exporter(collector, "otlp_http")["endpoint"])
    assert sink_host in compose["services"]
    assert _serve_port(_service(compose, sink_host)) == sink_port


def test_the_ingest_token_is_shared_by_the_sink_and_the_collector(compose: dict[str, Any]) -> None:
    sink_token = _environment(compose, "analytics")["HOMEPOT_ANALYTICS_INGEST_TOKEN"]
    assert sink_token
    assert _environment(compose, "otel-collector")["HOMEPOT_ANALYTICS_INGEST_TOKEN"] == sink_token


def test_the_demo_sends_otlp_to_the_collector(
    compose: dict[str, Any], collector: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = _service(compose, "demo")
    assert demo["command"][0] == "demo"
    assert demo["command"][demo["command"].index("--rounds") + 1] == "0"  # traffic until stopped
    env = _environment(compose, "demo")
    assert _settings_from(env, monkeypatch).export == ["otlp"]
    host, port = _host_port(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert host == "otel-collector"
    listening = {
        protocol: _host_port(config["endpoint"])[1]
        for protocol, config in collector["receivers"]["otlp"]["protocols"].items()
    }
    assert port == listening["grpc" if env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc" else "http"]


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a container with this environment gets (read the way the service reads them)."""
    for key, value in env.items():
        if key.startswith("HOMEPOT_ANALYTICS_"):
            monkeypatch.setenv(key, value)
    return Settings()


@pytest.mark.parametrize("name", ["analytics", "demo"])
def test_every_homepot_variable_is_a_setting_with_a_valid_value(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    env = _environment(compose, name)
    prefix = "HOMEPOT_ANALYTICS_"
    names = {key[len(prefix) :].lower() for key in env if key.startswith(prefix)}
    assert sorted(names - set(Settings.model_fields)) == []  # a misspelt variable is silently ignored
    settings = _settings_from(env, monkeypatch)  # raises on an invalid value
    assert str(settings.data_dir) in {volume.split(":")[1] for volume in _service(compose, name)["volumes"]}


def test_the_analytics_service_links_to_jaeger(compose: dict[str, Any]) -> None:
    url = _environment(compose, "analytics")["HOMEPOT_ANALYTICS_JAEGER_URL"]
    assert _host_port(url)[1] in _published(_service(compose, "jaeger"))


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts and volumes."""
    return {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}


def test_grafana_runs_a_pinned_release_with_the_provisioning_mounted(compose: dict[str, Any]) -> None:
    grafana = _service(compose, "grafana")
    image, _, tag = grafana["image"].partition(":")
    assert image == "grafana/grafana"
    assert re.fullmatch(r"1[2-9]\.\d+\.\d+", tag), "a pinned release"
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/homepot-analytics.yaml").read_text()
    )
    (dashboards,) = provider["providers"]
    assert dashboards["type"] == "file"
    path = dashboards["options"]["path"]
    assert mounts[path] == "./deploy/grafana/dashboards"
    assert list((ROOT / "deploy/grafana/dashboards").glob("*.json"))
    home = _environment(compose, "grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(path)
    assert (ROOT / "deploy/grafana/dashboards" / Path(home).name).is_file()
    assert 3000 in _published(grafana)
    conditions = {dep: spec["condition"] for dep, spec in grafana["depends_on"].items()}
    assert conditions == {"postgres": "service_healthy", "analytics": "service_healthy"}


def test_grafanas_datasource_reads_the_compose_database_as_the_reader_role(compose: dict[str, Any]) -> None:
    text = (ROOT / "deploy/grafana/provisioning/datasources/homepot-analytics.yaml").read_text()
    env = _environment(compose, "grafana")
    used = set(re.findall(r"\$\{(\w+)\}", text))
    assert used and used <= set(env), "every variable the datasource uses is set for Grafana"
    (source,) = yaml.safe_load(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], text))["datasources"]
    postgres = _service(compose, "postgres")
    assert _host_port(source["url"]) == ("postgres", 5432)
    assert source["jsonData"]["database"] == postgres["environment"]["POSTGRES_DB"]
    # The role create-reader.sh makes when the data volume is initialised, with the same password.
    assert source["user"] == postgres["environment"]["GRAFANA_DB_USER"]
    assert source["secureJsonData"]["password"] == postgres["environment"]["GRAFANA_DB_PASSWORD"]
    assert source["user"] != postgres["environment"]["POSTGRES_USER"]  # not the owner: read only
    init = "/docker-entrypoint-initdb.d/"
    (script,) = [host for container, host in _mounts(postgres).items() if container.startswith(init)]
    assert script == "./deploy/grafana/create-reader.sh"
    assert os.access(ROOT / script, os.X_OK)


# --- Dockerfile ---------------------------------------------------------------------------------------------
def test_the_image_contains_every_package_and_runs_the_cli() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    copied = re.findall(r"^COPY (\S+) \./\S+$", dockerfile, flags=re.MULTILINE)
    assert sorted(packages) == sorted(copied)
    assert re.search(r"^COPY pyproject\.toml README\.md \./$", dockerfile, flags=re.MULTILINE)
    script = next(iter(pyproject["project"]["scripts"]))
    assert f'ENTRYPOINT ["{script}"]' in dockerfile
    assert 'CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]' in dockerfile
    assert re.search(r"^USER (?!root)\w+", dockerfile, flags=re.MULTILINE)
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {".git", ".venv", "tests"} <= set(ignored)
    assert not set(ignored) & {"pyproject.toml", "README.md", *packages}
