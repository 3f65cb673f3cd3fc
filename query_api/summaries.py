"""Aggregates over a time window for the spec's AI use cases, computed by PostgreSQL.

Each function takes the same filters and window as the table's list endpoint and returns plain
dicts shaped like the summary models. Every group is per service first (``service_name`` on each
group): one job type, route or page of two services is two lines of work, not one. Totals cover
every row and come from the same scan as the groups (``ROLLUP``), so a summary reads its rows once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

# exporter.histogram merges packed histograms with numpy, imported there when first needed (a
# library install has none); the query API imports it now, so no first summary pays ~0.2 s.
import numpy  # noqa: F401
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Float,
    Label,
    Numeric,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.sql import Subquery

from exporter.distinct_sketch import estimate, union_sql
from exporter.histogram import packed_join_sql, quantiles_of_packed_points
from exporter.rollups.definitions import (
    ACTIVITIES,
    DEVICE_STATES,
    ERRORS,
    JOB_ERRORS,
    JOBS,
    REQUESTS,
    ROUTE_LATENCY,
    SEARCHES,
    Rollup,
    occurrence_id_sql,
)
from exporter.rollups.stale import fresh_until
from exporter.schema import api_request_logs, device_state_history, error_logs, job_outcomes, user_activities
from query_api import error_status, rollup_reads
from query_api.filters import TimeWindow


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


_REQUEST_PERCENTILES = {"p50_ms": 0.5, "p95_ms": 0.95, "p99_ms": 0.99}
_JOB_PERCENTILES = {"p50_duration_ms": 0.5, "p95_duration_ms": 0.95}


def _percentiles(fractions: dict[str, float], column: ColumnElement[Any]) -> Label[Any]:
    # One ordered-set aggregate with an array of fractions sorts the group once, not once each.
    values = array([literal(fraction, Float) for fraction in fractions.values()])
    return func.percentile_cont(values).within_group(column).label("percentiles")


def _split_percentiles(row: dict[str, Any], fractions: dict[str, float]) -> dict[str, Any]:
    values = row.pop("percentiles") or [None] * len(fractions)
    return row | dict(zip(fractions, values, strict=True))


def _grouped_with_total(
    conn: Connection,
    groups: Sequence[ColumnElement[Any]],
    aggregates: Sequence[Label[Any]],
    where: Sequence[ColumnElement[bool]],
    limit: int,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The all-rows total (None for no rows) and up to ``limit`` groups, most rows first."""
    level = func.grouping(*groups).label("level")
    count = aggregates[0]
    statement = (
        select(*groups, level, *aggregates)
        .where(*where)
        .group_by(func.rollup(tuple_(*groups)))
        # The total row (every grouping bit set) sorts first, then the biggest groups.
        .order_by(level.desc(), count.desc(), *groups)
        .limit(limit + 1)
    )
    rows = [row._asdict() for row in conn.execute(statement)]
    total = rows[0] if rows and rows[0]["level"] and rows[0]["count"] else None
    return total, [row for row in rows if not row["level"]]


def _grouped(
    conn: Connection,
    groups: Sequence[ColumnElement[Any]],
    aggregates: Sequence[Label[Any]],
    where: Sequence[ColumnElement[bool]],
    limit: int,
) -> list[dict[str, Any]]:
    """Up to ``limit`` groups, most rows (the first aggregate) first: for summaries without a total."""
    statement = (
        select(*groups, *aggregates)
        .where(*where)
        .group_by(*groups)
        .order_by(aggregates[0].desc(), *groups)
        .limit(limit)
    )
    return [row._asdict() for row in conn.execute(statement)]


def _blank_is_null(column: ColumnElement[Any], name: str) -> Label[Any]:
    """A rollup key back to the raw value: the rollups keep a missing value as ""."""
    return func.nullif(column, "").label(name)


def _sum(column: ColumnElement[Any], name: str) -> Label[Any]:
    return cast(func.coalesce(func.sum(column), 0), BigInteger).label(name)


def _quantiles(
    conn: Connection,
    latency: Subquery,
    fractions: dict[str, float],
    keys: Sequence[str],
    nullable: Sequence[str] = ("service_name",),
) -> tuple[dict[str, Any], dict[tuple[Any, ...], dict[str, Any]]]:
    """Percentiles merged from packed latency histograms (``rollup_reads.latency_source``): over
    all rows, and per group of ``keys``, a missing value of the ``nullable`` keys None as in the
    raw rows (the rollups keep it as "").
    PostgreSQL joins each group's packed histograms (grouped by the key columns as they are) and
    numpy adds them up (``histogram.quantiles_of_packed_points``): unnesting and hashing every (bin, row)
    pair in SQL was most of a summary (bench/README.md has the figures). The total is every
    group's histograms together."""
    groups = [latency.c[key] for key in keys]
    joined = select(
        *groups,
        packed_join_sql(latency.c.bins).label("bins"),
        packed_join_sql(latency.c.counts).label("counts"),
    ).group_by(*groups)
    rows = conn.execute(joined).all()  # one fetch, not a fetch per row
    blanks = [key in nullable for key in keys]

    def as_raw(group: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            None if value == "" and blank else value for value, blank in zip(group, blanks, strict=True)
        )

    packed = {as_raw(group): (bins, counts) for *group, bins, counts in rows}
    # Every group and the total ranked in one pass, the total from the groups' counts.
    *per_group, everything = quantiles_of_packed_points(
        ([both] for both in packed.values()), fractions, with_union=True
    )
    return everything, dict(zip(packed, per_group, strict=True))


def _plans(
    conn: Connection, rollups: Sequence[Rollup], filters: Sequence[ColumnElement[bool]], window: TimeWindow
) -> list[rollup_reads.Plan | None]:
    """How to read each of ``rollups`` (of one raw table) over ``window``: from the rollups where
    they are up to date with the raw rows, from raw rows after (``exporter.rollups.stale``, asked
    once for the table); None: raw rows only."""
    stale_from = fresh_until(conn, rollups[0].source)
    return [rollup_reads.plan(rollup, filters, window, stale_from) for rollup in rollups]


def _plan(
    conn: Connection, rollup: Rollup, filters: Sequence[ColumnElement[bool]], window: TimeWindow
) -> rollup_reads.Plan | None:
    [found] = _plans(conn, [rollup], filters, window)
    return found


def request_summary(
    conn: Connection,
    filters: list[ColumnElement[bool]],
    window: TimeWindow,
    limit: int,
    *,
    use_rollups: bool = True,
) -> dict[str, Any]:
    if use_rollups:
        found, by_route = _plans(conn, [REQUESTS, ROUTE_LATENCY], filters, window)
        if found is not None:
            # Percentiles from the per-route histograms unless a filter needs the status class.
            return _request_summary_from_rollups(conn, found, by_route or found, limit)
    t = api_request_logs.c
    aggregates = [
        func.count().label("count"),
        func.count().filter(t.status_code >= 500).label("server_errors"),
        func.count().filter(and_(t.status_code >= 400, t.status_code < 500)).label("client_errors"),
        func.avg(t.response_time_ms).label("avg_ms"),
        _percentiles(_REQUEST_PERCENTILES, t.response_time_ms),
        func.max(t.response_time_ms).label("max_ms"),
    ]
    where = [*filters, *window.conditions(t.timestamp)]
    total, groups = _grouped_with_total(conn, [t.service_name, t.route, t.method], aggregates, where, limit)

    def stats(row: dict[str, Any]) -> dict[str, Any]:
        return _split_percentiles(row, _REQUEST_PERCENTILES) | {
            "error_rate": _rate(row["server_errors"], row["count"]),
            "client_error_rate": _rate(row["client_errors"], row["count"]),
        }

    return {"total": None if total is None else stats(total), "routes": [stats(row) for row in groups]}


def _request_summary_from_rollups(
    conn: Connection, plan: rollup_reads.Plan, latency_plan: rollup_reads.Plan, limit: int
) -> dict[str, Any]:
    u = rollup_reads.groups_source(plan)
    keys = [
        _blank_is_null(u.c.service_name, "service_name"),
        _blank_is_null(u.c.route, "route"),
        u.c.method.label("method"),
    ]
    aggregates = [
        _sum(u.c["count"], "count"),
        _sum(u.c.count_5xx, "server_errors"),
        _sum(u.c.count_4xx, "client_errors"),
        func.sum(u.c.duration_ms_sum).label("duration_sum"),
    ]
    total, groups = _grouped_with_total(conn, keys, aggregates, [], limit)
    latency = rollup_reads.latency_source(latency_plan)
    fractions = _REQUEST_PERCENTILES | {"max_ms": 1.0}
    all_rows, per_group = _quantiles(
        conn, latency, fractions, ["service_name", "route", "method"], nullable=("service_name", "route")
    )

    def stats(row: dict[str, Any], quantiles: dict[str, Any]) -> dict[str, Any]:
        duration_sum = row.pop("duration_sum")
        return (
            row
            | {name: quantiles.get(name) for name in fractions}
            | {
                "avg_ms": duration_sum / row["count"] if row["count"] else None,
                "error_rate": _rate(row["server_errors"], row["count"]),
                "client_error_rate": _rate(row["client_errors"], row["count"]),
            }
        )

    routes = [
        stats(row, per_group.get((row["service_name"], row["route"], row["method"]), {})) for row in groups
    ]
    return {"total": None if total is None else stats(total, all_rows), "routes": routes}


def job_summary(
    conn: Connection,
    filters: list[ColumnElement[bool]],
    window: TimeWindow,
    limit: int,
    top: int,
    *,
    use_rollups: bool = True,
) -> dict[str, Any]:
    if use_rollups:
        jobs, job_errors = _plans(conn, [JOBS, JOB_ERRORS], filters, window)
        if jobs is not None and job_errors is not None:
            return _job_summary_from_rollups(conn, jobs, job_errors, limit, top)
    t = job_outcomes.c
    aggregates = [
        func.count().label("count"),
        func.count().filter(t.status == "success").label("succeeded"),
        func.count().filter(t.status == "failed").label("failed"),
        func.count().filter(t.status == "timeout").label("timed_out"),
        func.count().filter(t.status == "cancelled").label("cancelled"),
        _percentiles(_JOB_PERCENTILES, t.duration_ms),
        func.coalesce(func.avg(t.retry_count), 0).label("avg_retry_count"),
    ]
    where = [*filters, *window.conditions(t.timestamp)]
    total, groups = _grouped_with_total(conn, [t.service_name, t.job_type], aggregates, where, limit)
    codes = _top_error_codes(conn, where, [(row["service_name"], row["job_type"]) for row in groups], top)

    def stats(row: dict[str, Any]) -> dict[str, Any]:
        return _split_percentiles(row, _JOB_PERCENTILES) | {
            "success_rate": _rate(row["succeeded"], row["count"])
        }

    return {
        "total": None if total is None else stats(total),
        "job_types": [
            stats(row) | {"top_error_codes": codes[row["service_name"], row["job_type"]]} for row in groups
        ],
    }


def _job_summary_from_rollups(
    conn: Connection, jobs: rollup_reads.Plan, job_errors: rollup_reads.Plan, limit: int, top: int
) -> dict[str, Any]:
    u = rollup_reads.groups_source(jobs)
    keys = [_blank_is_null(u.c.service_name, "service_name"), u.c.job_type.label("job_type")]

    def of_status(status: str, name: str) -> Label[Any]:
        return cast(func.coalesce(func.sum(u.c["count"]).filter(u.c.status == status), 0), BigInteger).label(
            name
        )

    aggregates = [
        _sum(u.c["count"], "count"),
        of_status("success", "succeeded"),
        of_status("failed", "failed"),
        of_status("timeout", "timed_out"),
        of_status("cancelled", "cancelled"),
        _sum(u.c.retries, "retries"),
    ]
    total, groups = _grouped_with_total(conn, keys, aggregates, [], limit)
    latency = rollup_reads.latency_source(jobs)
    all_rows, per_group = _quantiles(conn, latency, _JOB_PERCENTILES, ["service_name", "job_type"])
    codes = _top_error_codes_from_rollups(
        conn, job_errors, [(row["service_name"], row["job_type"]) for row in groups], top
    )

    def stats(row: dict[str, Any], quantiles: dict[str, Any]) -> dict[str, Any]:
        retries = row.pop("retries")
        return (
            row
            | {name: quantiles.get(name) for name in _JOB_PERCENTILES}
            | {
                "avg_retry_count": retries / row["count"] if row["count"] else 0.0,
                "success_rate": _rate(row["succeeded"], row["count"]),
            }
        )

    return {
        "total": None if total is None else stats(total, all_rows),
        "job_types": [
            stats(row, per_group.get((row["service_name"], row["job_type"]), {}))
            | {"top_error_codes": codes[row["service_name"], row["job_type"]]}
            for row in groups
        ],
    }


def _fill_top_codes(
    conn: Connection,
    ranked: Any,
    codes: dict[tuple[str | None, str], list[dict[str, Any]]],
    top: int,
) -> dict[tuple[str | None, str], list[dict[str, Any]]]:
    """Fill ``codes`` with the ``top`` ranks of ``ranked`` (service_name, job_type, error_code,
    count, rank): the part the raw and the rollup readings share."""
    statement = (
        select(ranked.c.service_name, ranked.c.job_type, ranked.c.error_code, ranked.c["count"])
        .where(ranked.c.rank <= top)
        .order_by(ranked.c.service_name, ranked.c.job_type, ranked.c.rank)
    )
    for row in conn.execute(statement):
        group = codes.get((row.service_name, row.job_type))
        if group is not None:
            group.append({"error_code": row.error_code, "count": row._mapping["count"]})
    return codes


def _top_error_codes_from_rollups(
    conn: Connection, plan: rollup_reads.Plan, groups: list[tuple[str | None, str]], top: int
) -> dict[tuple[str | None, str], list[dict[str, Any]]]:
    """``_top_error_codes`` from rollup_job_errors (and the raw edge rows)."""
    codes: dict[tuple[str | None, str], list[dict[str, Any]]] = {group: [] for group in groups}
    if not codes:
        return codes
    u = rollup_reads.groups_source(plan)
    service = _blank_is_null(u.c.service_name, "service_name")
    count = _sum(u.c["count"], "count")
    rank = func.row_number().over(
        partition_by=[service, u.c.job_type], order_by=(count.desc(), u.c.error_code)
    )
    ranked = (
        select(service, u.c.job_type, u.c.error_code, count, rank.label("rank"))
        .where(u.c.job_type.in_(sorted({job_type for _, job_type in codes})))
        .group_by(service, u.c.job_type, u.c.error_code)
        .subquery()
    )
    return _fill_top_codes(conn, ranked, codes, top)


def _top_error_codes(
    conn: Connection, where: list[ColumnElement[bool]], groups: list[tuple[str | None, str]], top: int
) -> dict[tuple[str | None, str], list[dict[str, Any]]]:
    """The ``top`` most frequent error codes of each (service, job type) group, most first."""
    codes: dict[tuple[str | None, str], list[dict[str, Any]]] = {group: [] for group in groups}
    if not codes:
        return codes
    t = job_outcomes.c
    count = func.count().label("count")
    keys = [t.service_name, t.job_type]
    rank = func.row_number().over(partition_by=keys, order_by=(count.desc(), t.error_code))
    # Narrowed by job type alone: a (service, job type) IN list would never match a row without a
    # service (NULL). The few pairs outside ``groups`` that this lets through are dropped below.
    ranked = (
        select(*keys, t.error_code, count, rank.label("rank"))
        .where(*where, t.error_code.is_not(None), t.job_type.in_(sorted({job_type for _, job_type in codes})))
        .group_by(*keys, t.error_code)
        .subquery()
    )
    return _fill_top_codes(conn, ranked, codes, top)


def _window_resolution(t: Any) -> list[Label[Any]]:
    """What a group's status needs from its occurrences in the window (``query_api.error_status``),
    and its affected users."""
    return [
        func.count(t.user_id.distinct()).label("users"),
        func.max(t.timestamp).filter(t.resolved.is_(False)).label("latest_open"),
        func.max(t.resolved_at).filter(t.resolved.is_(True)).label("window_resolved_at"),
    ]


def error_summary(
    conn: Connection,
    filters: list[ColumnElement[bool]],
    window: TimeWindow,
    limit: int,
    *,
    use_rollups: bool = True,
) -> dict[str, Any]:
    """Groups per service and fingerprint, each with its status (new, ongoing, regressed, resolved)."""
    groups = _error_groups(conn, filters, window, limit, use_rollups=use_rollups)
    return {"groups": error_status.with_status(conn, groups, window)}


def _error_groups(
    conn: Connection,
    filters: list[ColumnElement[bool]],
    window: TimeWindow,
    limit: int,
    *,
    use_rollups: bool,
) -> list[dict[str, Any]]:
    found = _plan(conn, ERRORS, filters, window) if use_rollups else None
    if found is not None:
        summary = _error_summary_from_rollups(conn, found, filters, window, limit)
        if summary is not None:
            return summary
    t = error_logs.c
    # Rows written before fingerprints existed group by what they say about themselves.
    fingerprint = func.coalesce(
        t.fingerprint, func.md5(func.concat(t.category, "|", t.error_code, "|", t.error_message))
    ).label("fingerprint")
    count = func.count().label("count")
    # The id of the latest occurrence (by timestamp, then id) in the same pass: arrays compare
    # element by element, so max() of [epoch, id] is the latest row.
    latest = func.max(array([func.extract("epoch", t.timestamp), cast(t.id, Numeric)]), type_=ARRAY(Numeric))
    groups = (
        select(
            t.service_name,
            fingerprint,
            count,
            func.count().filter(t.resolved.is_(False)).label("unresolved"),
            func.bool_and(t.resolved).label("resolved"),
            func.min(t.timestamp).label("first_seen"),
            func.max(t.timestamp).label("last_seen"),
            cast(latest[2], BigInteger).label("latest_id"),
            *_window_resolution(t),
        )
        .where(*filters, *window.conditions(t.timestamp))
        .group_by(t.service_name, fingerprint)
        .order_by(count.desc(), func.max(t.timestamp).desc(), t.service_name, fingerprint)
        .limit(limit)
    )
    rows = [row._asdict() for row in conn.execute(groups)]
    if not rows:
        return []
    samples = select(t.id, t.category, t.severity, t.error_code, t.error_message).where(
        t.id.in_([row["latest_id"] for row in rows])
    )
    by_id = {sample.id: sample._asdict() for sample in conn.execute(samples)}
    for row in rows:
        sample = by_id[row["latest_id"]]
        del sample["id"]
        row.update(sample)
    return rows


def _error_summary_from_rollups(
    conn: Connection,
    plan: rollup_reads.Plan,
    filters: list[ColumnElement[bool]],
    window: TimeWindow,
    limit: int,
) -> list[dict[str, Any]] | None:
    """Groups, counts, first/last seen and what their status needs (open occurrences, the latest
    open one, the latest resolution, the latest occurrence) from rollup_errors; affected users
    estimated from its distinct sketches (``exporter.distinct_sketch``: within a few per cent,
    where raw rows count them exactly), for the groups returned only; the latest occurrence's
    text from its raw row.
    None (read raw rows) when a row without a fingerprint (written before fingerprints existed:
    the raw path groups it by its text) is in the window, or a latest occurrence is gone (purged:
    the rollups outlive the raw rows)."""
    u = rollup_reads.groups_source(plan)
    if conn.execute(select(select(u.c.fingerprint).where(u.c.fingerprint == "").exists())).scalar():
        return None
    service = _blank_is_null(u.c.service_name, "service_name")
    count = _sum(u.c["count"], "count")
    last_seen = func.max(u.c.last_seen)
    latest = func.max(u.c.latest_occurrence)
    statement = (
        select(
            service,
            u.c.fingerprint,
            count,
            _sum(u.c.unresolved, "unresolved"),
            func.min(u.c.first_seen).label("first_seen"),
            last_seen.label("last_seen"),
            occurrence_id_sql(latest).label("latest_id"),
            func.max(u.c.latest_open).label("latest_open"),
            func.max(u.c.latest_resolved_at).label("window_resolved_at"),
        )
        .group_by(service, u.c.fingerprint)
        .order_by(count.desc(), last_seen.desc(), service, u.c.fingerprint)
        .limit(limit)
    )
    rows = [row._asdict() for row in conn.execute(statement)]
    if not rows:
        return []
    if any(row["latest_id"] is None for row in rows):
        return None
    fingerprints = sorted({row["fingerprint"] for row in rows})
    returned = replace(
        plan,
        key_filters=[*plan.key_filters, lambda table: table.c.fingerprint.in_(fingerprints)],
        raw_filters=[*plan.raw_filters, error_logs.c.fingerprint.in_(fingerprints)],
    )
    m = rollup_reads.sketches_source(returned, ["user_id"])
    users = select(
        _blank_is_null(m.c.service_name, "service_name"), m.c.fingerprint, union_sql(m.c.user_id_sketch)
    ).group_by(m.c.service_name, m.c.fingerprint)
    by_group = {(name, fingerprint): estimate(sketch) for name, fingerprint, sketch in conn.execute(users)}
    t = error_logs.c
    samples = select(t.id, t.category, t.severity, t.error_code, t.error_message).where(
        t.id.in_([row["latest_id"] for row in rows])
    )
    by_id = {sample.id: sample._asdict() for sample in conn.execute(samples)}
    if any(row["latest_id"] not in by_id for row in rows):
        return None
    for row in rows:
        sample = dict(by_id[row["latest_id"]])
        del sample["id"]
        latest_open, resolved_at = row.pop("latest_open"), row.pop("window_resolved_at")
        # In the raw path's column order: the shape stays the same, key for key.
        row.update(
            resolved=row["unresolved"] == 0,
            users=by_group.get((row["service_name"], row["fingerprint"]), 0),
            latest_open=latest_open,
            window_resolved_at=resolved_at,
        )
        ordered = {key: row[key] for key in _ERROR_GROUP_COLUMNS}
        row.clear()
        row.update(ordered, **sample)
    return rows


# The raw path's columns, in its order (``_error_groups``).
_ERROR_GROUP_COLUMNS = (
    "service_name",
    "fingerprint",
    "count",
    "unresolved",
    "resolved",
    "first_seen",
    "last_seen",
    "latest_id",
    "users",
    "latest_open",
    "window_resolved_at",
)


def device_state_summary(
    conn: Connection,
    filters: list[ColumnElement[bool]],
    window: TimeWindow,
    limit: int,
    top: int,
    *,
    use_rollups: bool = True,
) -> dict[str, Any]:
    t = device_state_history.c
    where = [*filters, *window.conditions(t.timestamp)]
    count = [func.count().label("count")]
    changes = [func.count().label("changes"), func.max(t.timestamp).label("last_changed_at")]
    found = _plan(conn, DEVICE_STATES, filters, window) if use_rollups else None
    if found is None:
        transitions = _grouped(conn, [t.service_name, t.previous_state, t.new_state], count, where, limit)
    else:
        u = rollup_reads.groups_source(found)
        keys = [
            _blank_is_null(u.c.service_name, "service_name"),
            _blank_is_null(u.c.previous_state, "previous_state"),
            u.c.new_state.label("new_state"),
        ]
        transitions = _grouped(conn, keys, [_sum(u.c["count"], "count")], [], limit)
    return {
        "transitions": transitions,
        # Raw rows: device_id is no rollup key.
        # As text: a table shared with HOMEPOT keeps its integer device key there.
        "devices": _grouped(
            conn, [t.service_name, cast(t.device_id, Text).label("device_id")], changes, where, top
        ),
    }


def user_activity_summary(
    conn: Connection,
    filters: list[ColumnElement[bool]],
    window: TimeWindow,
    limit: int,
    top: int,
    *,
    use_rollups: bool = True,
) -> dict[str, Any]:
    t = user_activities.c
    where = [*filters, *window.conditions(t.timestamp)]
    count = func.count().label("count")
    types = [
        count,
        func.count(t.user_id.distinct()).label("users"),
        func.count(t.session_id.distinct()).label("sessions"),
    ]
    pages = [
        count,
        func.count().filter(t.activity_type == "page_view").label("page_views"),
        func.avg(t.duration_ms).label("avg_duration_ms"),
    ]
    # "Temperature " and "temperature" are one search.
    query = func.lower(func.btrim(t.search_query)).label("search_query")
    searches = _plan(conn, SEARCHES, filters, window) if use_rollups else None
    if searches is None:
        top_searches = _grouped(
            conn, [t.service_name, query], [count], [*where, func.btrim(t.search_query) != ""], top
        )
    else:
        u = rollup_reads.groups_source(searches)
        keys = [
            _blank_is_null(u.c.service_name, "service_name"),
            func.lower(func.btrim(u.c.search_query)).label("search_query"),
        ]
        top_searches = _grouped(
            conn, keys, [_sum(u.c["count"], "count")], [func.btrim(u.c.search_query) != ""], top
        )
    activities = _plan(conn, ACTIVITIES, filters, window) if use_rollups else None
    if activities is not None:
        return _activity_summary_from_rollups(conn, activities, limit, top) | {"top_searches": top_searches}
    return {
        "activity_types": _grouped(conn, [t.service_name, t.activity_type], types, where, limit),
        "top_pages": _grouped(
            conn, [t.service_name, t.page_url], pages, [*where, t.page_url.is_not(None)], top
        ),
        "top_searches": top_searches,
    }


def _activity_summary_from_rollups(
    conn: Connection, plan: rollup_reads.Plan, limit: int, top: int
) -> dict[str, Any]:
    """Activity types (count; users and sessions estimated from their distinct sketches) and top
    pages (count, page views, average duration) from rollup_activities."""
    u = rollup_reads.groups_source(plan)
    service = _blank_is_null(u.c.service_name, "service_name")
    count = _sum(u.c["count"], "count")
    types = _grouped(conn, [service, u.c.activity_type.label("activity_type")], [count], [], limit)
    s = rollup_reads.sketches_source(plan, ["user_id", "session_id"])
    sketches = select(
        _blank_is_null(s.c.service_name, "service_name"),
        s.c.activity_type,
        union_sql(s.c.user_id_sketch),
        union_sql(s.c.session_id_sketch),
    ).group_by(s.c.service_name, s.c.activity_type)
    distinct = {
        (name, kind): {"users": estimate(users), "sessions": estimate(sessions)}
        for name, kind, users, sessions in conn.execute(sketches)
    }
    durations = func.sum(u.c.duration_count)
    pages = [
        count,
        _sum(case((u.c.activity_type == "page_view", u.c["count"]), else_=0), "page_views"),
        (func.sum(u.c.duration_ms_sum) / func.nullif(durations, 0)).label("avg_duration_ms"),
    ]
    top_pages = _grouped(
        conn, [service, _blank_is_null(u.c.page_url, "page_url")], pages, [u.c.page_url != ""], top
    )
    empty = {"users": 0, "sessions": 0}
    return {
        "activity_types": [
            row | distinct.get((row["service_name"], row["activity_type"]), empty) for row in types
        ],
        "top_pages": top_pages,
    }
