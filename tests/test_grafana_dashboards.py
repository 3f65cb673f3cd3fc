"""The Grafana dashboards in deploy/grafana/, run without Grafana.

Grafana cannot run here, so these tests do what it would do with each panel: expand the template
variables the way its PostgreSQL data source does (a multi-value or ``All`` selection becomes a
list of quoted literals), then the backend macros the way its macro engine does (``$__timeFilter``,
``$__timeGroup(Alias)``, ``$__timeFrom`` ...), and run the SQL on demo data in the real
PostgreSQL, as the read-only role ``deploy/grafana/create-reader.sh`` creates for Grafana. Every
panel target must return rows with values in them, under every rollup grain the dashboards offer.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import Engine

from exporter.rollups.refresh import refresh
from homepot_analytics.demo import run_demo
from homepot_foundation.settings import Settings
from tests.conftest import JWT_SECRET, empty_tables

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = {
    path.stem: json.loads(path.read_text()) for path in sorted((GRAFANA / "dashboards").glob("*.json"))
}
DATASOURCE = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "homepot-analytics.yaml").read_text())
PANELS = [(name, panel) for name, board in DASHBOARDS.items() for panel in board["panels"]]
MAX_DATA_POINTS = 1000  # about a full-width panel's width in pixels, which is what Grafana uses


# --- what Grafana does to a panel's SQL -----------------------------------------------------------------
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NICE = [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400]


def parse_interval(text: str) -> timedelta:
    """Grafana's interval syntax (``5m``, ``1h``, ``500ms``)."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", text.strip().strip("'"))
    assert match, f"not a Grafana interval: {text!r}"
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _interval_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def panel_interval(start: datetime, end: datetime, minimum: str | None) -> timedelta:
    """``$__interval``: the range over the data points, rounded to a round step, never under the
    panel's minimum interval."""
    raw = (end - start).total_seconds() / MAX_DATA_POINTS
    seconds = next((step for step in _NICE if step >= raw), _NICE[-1])
    if minimum:
        seconds = max(seconds, int(parse_interval(minimum).total_seconds()))
    return timedelta(seconds=seconds)


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _format_value(value: str | list[str]) -> str:
    # The PostgreSQL data source's interpolateVariable: a list (multi-value, All) becomes quoted
    # literals joined by commas; a single string only has its quotes doubled.
    if isinstance(value, list):
        return ",".join(_quote_literal(item) for item in value)
    return value.replace("'", "''")


_TEMPLATE = re.compile(r"\$(\w+)|\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]")


def interpolate_variables(sql: str, values: dict[str, str | list[str]]) -> str:
    """Template variables (``$service``, ``${service}``, ``[[service]]``); unknown names (the
    backend macros among them) are left alone, as Grafana leaves them."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(5)
        if name not in values:
            return match.group(0)
        value = values[name]
        if fmt == "raw":
            return value if isinstance(value, str) else ",".join(value)
        if fmt in ("csv", "sqlstring", "singlequote"):
            items = value if isinstance(value, list) else [value]
            return ",".join(items) if fmt == "csv" else ",".join(_quote_literal(item) for item in items)
        return _format_value(value)

    return _TEMPLATE.sub(replace, sql)


def _rfc3339(moment: datetime) -> str:
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")


def expand_macros(sql: str, start: datetime, end: datetime) -> str:
    """The PostgreSQL macro engine of Grafana's backend (pkg/tsdb/grafana-postgresql-datasource)."""

    def evaluate(name: str, args: list[str]) -> str:
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'"
        if name == "__timeFrom":
            return f"'{_rfc3339(start)}'"
        if name == "__timeTo":
            return f"'{_rfc3339(end)}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            assert len(args) >= 2, f"${name} needs a column and an interval"
            seconds = parse_interval(args[1]).total_seconds()
            step = int(seconds) if seconds == int(seconds) else seconds
            group = f"floor(extract(epoch from {args[0]})/{step})*{step}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name == "__unixEpochFilter":
            low, high = int(start.timestamp()), int(end.timestamp())
            return f"{args[0]} >= {low} AND {args[0]} <= {high}"
        raise AssertionError(f"unknown macro ${name}")

    def replace(match: re.Match[str]) -> str:
        name, args = match.group(1), [arg.strip() for arg in match.group(2).split(",")]
        # Grafana reads "$__timeGroup(...)," as the pre-5.3 form that also names the column.
        if name == "__timeGroup" and sql[match.end() : match.end() + 1] == ",":
            name = "__timeGroupAlias"
        return evaluate(name, args)

    return _MACRO.sub(replace, sql)


def grafana_sql(
    sql: str, values: dict[str, str | list[str]], start: datetime, end: datetime, min_interval: str | None
) -> str:
    interval = panel_interval(start, end, min_interval)
    builtins: dict[str, str | list[str]] = {
        "__interval": _interval_text(int(interval.total_seconds())),
        "__interval_ms": str(int(interval.total_seconds() * 1000)),
    }
    return expand_macros(interpolate_variables(sql, {**builtins, **values}), start, end)


# --- the data and the role Grafana reads with -------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_range(
    database_url: str, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> tuple[datetime, datetime]:
    """Demo traffic in the test database, the rollups refreshed as ``serve`` refreshes them; the
    dashboards' default range (the last 6 hours) over it."""
    empty_tables(database_url)
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("grafana-demo"),
        jwt_secret=JWT_SECRET,
        export_delay_ms=50,
    )
    run_demo(requests=120, settings=settings)
    with engine.connect() as conn:
        refresh(conn)
    end = datetime.now(UTC)
    return end - timedelta(hours=6), end


@pytest.fixture(scope="module")
def reader(database_url: str) -> Iterator[dict[str, Any]]:
    """Connection arguments of the role create-reader.sh makes, made here by running the script."""
    if shutil.which("psql") is None:
        pytest.skip("create-reader.sh needs psql")
    params = conninfo_to_dict(database_url)
    role = f"grafana_reader_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "PGHOST": str(params.get("host") or ""),
        "PGPORT": str(params.get("port") or "5432"),
        "PGPASSWORD": str(params.get("password") or ""),
        "POSTGRES_USER": str(params["user"]),
        "POSTGRES_DB": str(params["dbname"]),
        "GRAFANA_DB_USER": role,
        "GRAFANA_DB_PASSWORD": "test-reader-password",
    }
    subprocess.run(["sh", str(GRAFANA / "create-reader.sh")], env=env, check=True, capture_output=True)
    yield {**params, "user": role}
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'DROP OWNED BY "{role}"')
        admin.execute(f'DROP ROLE "{role}"')


def _run(connection: dict[str, Any], sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    with psycopg.connect(**connection) as conn, conn.cursor() as cursor:
        cursor.execute(sql)  # type: ignore[arg-type]  # the dashboards' own SQL, as Grafana sends it
        assert cursor.description is not None
        return [column.name for column in cursor.description], cursor.fetchall()


def _custom_options(variable: dict[str, Any]) -> list[str]:
    return [option.strip() for option in variable["query"].split(",")]


def _variable_values(
    board: dict[str, Any], reader: dict[str, Any], start: datetime, end: datetime, fixed: dict[str, str]
) -> dict[str, str | list[str]]:
    """Every variable's value: custom ones as given, query ones All (every option their query
    returns, each query seeing the variables before it, as Grafana resolves them in order)."""
    values: dict[str, str | list[str]] = {}
    for variable in board["templating"]["list"]:
        if variable["type"] == "custom":
            values[variable["name"]] = fixed[variable["name"]]
        else:
            sql = grafana_sql(variable["query"], values, start, end, None)
            _, rows = _run(reader, sql)
            options = [str(row[0]) for row in rows]
            assert options, f"variable {variable['name']} has no options on demo data"
            values[variable["name"]] = options
    return values


def _grain_choices(board: dict[str, Any]) -> list[dict[str, str]]:
    custom = [v for v in board["templating"]["list"] if v["type"] == "custom"]
    combos = itertools.product(*(_custom_options(v) for v in custom))
    return [dict(zip([v["name"] for v in custom], combo, strict=True)) for combo in combos]


# --- every panel returns rows ------------------------------------------------------------------------
@pytest.mark.parametrize(("board_name", "panel"), PANELS, ids=[f"{n}:{p['title']}" for n, p in PANELS])
def test_every_panel_returns_rows_on_demo_data(
    board_name: str, panel: dict[str, Any], demo_range: tuple[datetime, datetime], reader: dict[str, Any]
) -> None:
    board = DASHBOARDS[board_name]
    start, end = demo_range
    for fixed in _grain_choices(board):
        values = _variable_values(board, reader, start, end, fixed)
        for target in panel["targets"]:
            sql = grafana_sql(target["rawSql"], values, start, end, panel.get("interval"))
            columns, rows = _run(reader, sql)
            where = f"{panel['title']} ({fixed})"
            assert rows, f"{where}: no rows"
            assert any(value is not None for row in rows for value in row), f"{where}: only NULLs"
            if target["format"] == "time_series":
                assert columns[0] == "time", f"{where}: a time series starts with its time column"
                times = [row[0] for row in rows]
                assert times == sorted(times), f"{where}: Grafana wants time series ordered by time"


def test_a_single_selection_narrows_the_panels(
    demo_range: tuple[datetime, datetime], reader: dict[str, Any]
) -> None:
    # One value of a multi-value variable is still a list (one quoted literal), and it filters.
    start, end = demo_range
    board = DASHBOARDS["requests"]
    values = _variable_values(board, reader, start, end, {"grain": "5m"})
    (requests,) = [p for p in board["panels"] if p["title"] == "Requests"]
    sql = requests["targets"][0]["rawSql"]

    def requests_with(routes: list[str]) -> Any:
        return _run(reader, grafana_sql(sql, {**values, "route": routes}, start, end, None))[1][0][0]

    routes = values["route"]
    assert isinstance(routes, list) and len(routes) > 1
    assert 0 < requests_with(routes[:1]) < requests_with(routes)
    assert requests_with(["no such route"]) == 0


def test_the_reader_role_reads_later_tables_and_writes_nothing(
    database_url: str, reader: dict[str, Any]
) -> None:
    with psycopg.connect(database_url, autocommit=True) as owner:
        owner.execute("CREATE TABLE grafana_reader_probe (x int)")
        owner.execute("INSERT INTO grafana_reader_probe VALUES (1)")
    try:
        assert _run(reader, "SELECT x FROM grafana_reader_probe")[1] == [(1,)]  # default privileges
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _run(reader, "DELETE FROM api_request_logs")
    finally:
        with psycopg.connect(database_url, autocommit=True) as owner:
            owner.execute("DROP TABLE grafana_reader_probe")


# --- what Grafana needs from the files ---------------------------------------------------------------------
def test_the_macro_expansion_matches_grafanas() -> None:
    start = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    end = datetime(2026, 12, 1, 16, 0, 0, 500000, tzinfo=UTC)
    sql = "SELECT $__timeGroup(bucket, '5m'), x FROM t WHERE $__timeFilter(bucket) AND s IN ($s) AND k = '$k'"
    assert grafana_sql(sql, {"s": ["a", "o'b"], "k": "it's"}, start, end, None) == (
        'SELECT floor(extract(epoch from bucket)/300)*300 AS "time", x FROM t WHERE bucket BETWEEN '
        "'2026-12-01T10:00:00Z' AND '2026-12-01T16:00:00.5Z' AND s IN ('a','o''b') AND k = 'it''s'"
    )
    assert panel_interval(start, end, None) == timedelta(seconds=30)  # 6 h over 1000 points: 21.6 s
    assert panel_interval(start, end, "5m") == timedelta(minutes=5)


def test_the_datasource_is_the_builtin_postgresql_plugin() -> None:
    (source,) = DATASOURCE["datasources"]
    assert DATASOURCE["apiVersion"] == 1
    assert source["type"] == "grafana-postgresql-datasource"
    assert source["jsonData"]["database"]  # top-level `database` is deprecated
    assert "password" in source["secureJsonData"]  # never in plain jsonData


def test_every_panel_and_variable_reads_the_provisioned_datasource() -> None:
    uid = DATASOURCE["datasources"][0]["uid"]
    for name, board in DASHBOARDS.items():
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                assert variable["datasource"]["uid"] == uid, (name, variable["name"])
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == uid, (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid
                assert target["editorMode"] == "code" and target["rawQuery"] is True
                assert target["format"] in ("table", "time_series")


def test_dashboards_are_distinct_and_cover_every_area() -> None:
    uids = [board["uid"] for board in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids)
    assert sorted(DASHBOARDS) == ["devices", "errors", "frontend", "jobs", "requests"]
    for board in DASHBOARDS.values():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(set(ids)) == len(ids)
        assert board["schemaVersion"] >= 39


def test_panels_read_counts_from_rollup_groups_and_percentiles_from_raw_rows() -> None:
    # The latency, members and sketches side tables are internal to the rollups and may change shape.
    for _, panel in PANELS:
        for target in panel["targets"]:
            sql = target["rawSql"]
            assert not re.search(r"rollup_\w+_(latency|members|sketches)\b", sql), panel["title"]
            # Buckets overlapping the range: a coarse grain still shows the bucket a short range is in.
            overlap = "bucket > $__timeFrom()::timestamptz - interval '$grain' AND bucket <= $__timeTo()"
            assert "rollup_" not in sql or overlap in sql, panel["title"]
            if "percentile_cont" in sql:
                assert '$__timeFilter("timestamp")' in sql, panel["title"]
