"""Affected users over a long window, from the rollups' distinct sketches: thousands of users
spread over days and fingerprints, most of them seen in many buckets, so adding up per-bucket
counts would count them many times over. The rollups' answer is the raw rows' exact one within
three standard errors of the sketch (``exporter.distinct_sketch``); everything else in the
summary is equal."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import Engine

from exporter.distinct_sketch import STANDARD_ERROR
from exporter.rollups.definitions import ERRORS
from exporter.rollups.refresh import refresh
from query_api import rollup_reads, summaries
from query_api.filters import TimeWindow
from tests.conftest import empty_tables

START = datetime(2025, 12, 1, tzinfo=UTC)
# A ragged window: its edges come from hourly and 5-minute buckets and from raw rows.
WINDOW = TimeWindow(
    START + timedelta(hours=3, minutes=7, seconds=13), START + timedelta(days=3, hours=5, seconds=1)
)


@pytest.fixture(scope="module")
def stored(database_url: str, engine: Engine) -> Iterator[Engine]:
    empty_tables(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        # 30,000 errors over four days, one every 11.5 s; fingerprint i % 4; user i * 7 % 9001 for
        # fp0 (all 9,001 users), fewer for the others, and none for a tenth of the rows.
        conn.execute(
            "INSERT INTO error_logs (timestamp, category, severity, error_message, fingerprint, user_id) "
            "SELECT %s::timestamptz + i * interval '11.5 seconds', 'api', 'error', 'boom', 'fp' || (i %% 4), "
            "CASE WHEN i %% 10 = 9 THEN NULL WHEN i %% 4 = 0 THEN 'user' || (i * 7 %% 9001) "
            "ELSE 'user' || (i %% (40 * (i %% 4))) END FROM generate_series(1, 30000) AS i",
            (START,),
        )
    with engine.connect() as conn:
        assert refresh(conn).buckets > 0
    yield engine
    empty_tables(database_url)


def test_affected_users_over_days_from_rollups_within_the_sketchs_error(stored: Engine) -> None:
    assert rollup_reads.plan(ERRORS, [], WINDOW) is not None
    with stored.connect() as conn:
        from_rollups = summaries.error_summary(conn, [], WINDOW, 100)["groups"]
        exact = summaries.error_summary(conn, [], WINDOW, 100, use_rollups=False)["groups"]
    assert [group["fingerprint"] for group in from_rollups] == [group["fingerprint"] for group in exact]
    users = {
        group["fingerprint"]: (group["users"], want["users"])
        for group, want in zip(from_rollups, exact, strict=True)
    }
    assert users["fp0"][1] > 5000  # most users seen on several days: a sum per bucket would be far off
    for fingerprint, (found, want) in users.items():
        assert abs(found - want) <= 3 * STANDARD_ERROR * want, (fingerprint, found, want)
    for group, want in zip(from_rollups, exact, strict=True):
        assert {**group, "users": want["users"]} == want
