"""The rollups' distinct sketch (exporter/distinct_sketch.py) against PostgreSQL's exact
``count(DISTINCT)``.

Each data set is a set of values generated in PostgreSQL, sketched there by ``sketch_sql`` and
``union_sql`` as the rollups do, and estimated by ``estimate``. Sketches merge by ``bit_or``
exactly: the union of the parts' sketches is the sketch of the whole, bit for bit, so a window of
many buckets is as accurate as one bucket.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, Integer, column, func, literal_column, select, table, text

from exporter.distinct_sketch import (
    RANK_BITS,
    REGISTERS,
    SKETCH_BITS,
    STANDARD_ERROR,
    estimate,
    rank_sql,
    sketch_sql,
    union_sql,
)

VALUES = table("sketch_values", column("dataset"), column("part"), column("v"))

# name -> (rows, distinct values): the SQL that makes ``rows`` rows of that many distinct values.
DATASETS = {
    "single": "SELECT 'single', i % 3, 'only' FROM generate_series(1, 500) AS i",
    "tiny": "SELECT 'tiny', i % 3, 'user-' || i % 7 FROM generate_series(1, 70) AS i",
    "forty": "SELECT 'forty', i % 3, 'u' || i FROM generate_series(1, 40) AS i",
    # Skewed: a few users make most rows (the square root piles the rows on small numbers).
    "skewed": "SELECT 'skewed', i % 3, 'u' || floor(sqrt(abs(hashint4(i)) % 4000000)) "
    "FROM generate_series(1, 30000) AS i",
    "hundreds": "SELECT 'hundreds', i % 3, md5(i::text) FROM generate_series(1, 700) AS i",
    "thousands": "SELECT 'thousands', i % 3, 'u_' || md5((i % 4321)::text) "
    "FROM generate_series(1, 20000) AS i",
    "crossover": "SELECT 'crossover', i % 3, 's' || i FROM generate_series(1, 11000) AS i",
    "many": "SELECT 'many', i % 3, i::text FROM generate_series(1, 200000) AS i",
    "integers": "SELECT 'integers', i % 3, (i * 7919) % 1000003 FROM generate_series(1, 60000) AS i",
}


@pytest.fixture(scope="module")
def conn(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        conn.execute(text("CREATE TEMP TABLE sketch_values (dataset text, part int, v text)"))
        for statement in DATASETS.values():
            conn.execute(text(f"INSERT INTO sketch_values {statement}"))
        conn.execute(text("INSERT INTO sketch_values VALUES ('single', 0, NULL), ('tiny', 1, NULL)"))
        yield conn
        conn.rollback()


@pytest.fixture(scope="module")
def exact(conn: Connection) -> dict[str, int]:
    counts = select(VALUES.c.dataset, func.count(VALUES.c.v.distinct())).group_by(VALUES.c.dataset)
    return {name: n for name, n in conn.execute(counts)}


@pytest.fixture(scope="module")
def sketches(conn: Connection) -> dict[str, str]:
    """Each data set's sketch, united from its parts' sketches (as a window unites its buckets')."""
    parts = (
        select(VALUES.c.dataset, union_sql(sketch_sql(VALUES.c.v)).label("sketch"))
        .group_by(VALUES.c.dataset, VALUES.c.part)
        .subquery()
    )
    whole = select(parts.c.dataset, union_sql(parts.c.sketch)).group_by(parts.c.dataset)
    return {name: sketch for name, sketch in conn.execute(whole)}


@pytest.mark.parametrize("name", DATASETS)
def test_estimate_within_three_standard_errors_of_count_distinct(
    name: str, exact: dict[str, int], sketches: dict[str, str]
) -> None:
    found = estimate(sketches[name])
    assert abs(found - exact[name]) <= 3 * STANDARD_ERROR * exact[name], (name, found, exact[name])


@pytest.mark.parametrize("name", ["single", "tiny", "forty"])
def test_small_sets_are_counted_exactly(name: str, exact: dict[str, int], sketches: dict[str, str]) -> None:
    assert estimate(sketches[name]) == exact[name]


def test_the_union_of_parts_is_the_sketch_of_the_whole(conn: Connection, sketches: dict[str, str]) -> None:
    whole = select(VALUES.c.dataset, union_sql(sketch_sql(VALUES.c.v))).group_by(VALUES.c.dataset)
    assert {name: sketch for name, sketch in conn.execute(whole)} == sketches


def test_repeats_and_nulls_change_nothing(conn: Connection) -> None:
    once = conn.execute(select(union_sql(sketch_sql(VALUES.c.v))).where(VALUES.c.dataset == "forty")).scalar()
    repeated = conn.execute(
        text(
            "SELECT bit_or(s) FROM (SELECT CAST(:a AS bit varying) AS s UNION ALL "
            "SELECT CAST(:a AS bit varying) UNION ALL SELECT NULL) AS t"
        ),
        {"a": once},
    ).scalar()
    assert repeated == once
    nothing = select(union_sql(sketch_sql(literal_column("NULL::text"))))
    assert conn.execute(nothing).scalar() is None
    assert estimate(None) == 0


def test_the_rank_is_the_leading_zeros_plus_one_for_every_input(conn: Connection) -> None:
    bits = literal_column("w", Integer)
    ranks = select(bits, rank_sql(bits)).select_from(
        text(f"generate_series(0, {(1 << (RANK_BITS - 1)) - 1}) AS w")
    )
    found = {w: rank for w, rank in conn.execute(ranks)}
    assert found == {w: RANK_BITS - w.bit_length() for w in range(1 << (RANK_BITS - 1))}


def test_a_string_that_is_no_sketch_is_refused() -> None:
    with pytest.raises(ValueError, match=str(SKETCH_BITS)):
        estimate("0101")
    assert estimate("0" * SKETCH_BITS) == 0
    # Only the first plane, and all of it: no real data looks so, and still an answer, not a crash.
    assert estimate("1" * REGISTERS + "0" * (SKETCH_BITS - REGISTERS)) > 0
