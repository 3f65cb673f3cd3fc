"""The rollups' latency histogram (exporter/histogram.py) against PostgreSQL's exact percentile_cont.

Each data set goes into a temporary table; PostgreSQL computes the exact p50/p95/p99 with
``percentile_cont``, and both estimates, ``quantile`` over ``bucket_of`` counts in Python and
``quantiles_sql`` over a long-format ``histogram_sql`` in SQL, must be within 1 % of them, with
every count exact. The Python and SQL bucket functions must give every value the same bucket.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Double, Engine, bindparam, column, func, select, table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.expression import TableClause

from exporter import histogram
from exporter.histogram import (
    ALPHA,
    FLOOR_MS,
    GAMMA,
    LN_GAMMA,
    MAX_BUCKET,
    SNAP,
    ZERO_BUCKET,
    bucket_of,
    bucket_sql,
    histogram_of,
    histogram_sql,
    merge,
    quantile,
    quantiles_sql,
    value_of,
    value_sql,
)

FRACTIONS = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
# The bound is ALPHA; SNAP widens a bucket by a relative 2e-11, and the arithmetic rounds at 1e-16.
TOLERANCE = ALPHA + 1e-9
SMALLINT = (-32768, 32767)


def _datasets() -> dict[str, list[float]]:
    rng = random.Random(20240611)
    n = 20_000
    return {
        "uniform": [rng.uniform(1, 1000) for _ in range(n)],
        "lognormal": [rng.lognormvariate(3, 1.5) for _ in range(n)],
        # Mostly quick, with a Pareto tail of 5 %: the sparse top makes p99's neighbours far apart.
        "long_tail": [
            rng.expovariate(1 / 20) if rng.random() < 0.95 else 200 * rng.paretovariate(1.1) for _ in range(n)
        ],
        "wide": [10 ** rng.uniform(-2, 6) for _ in range(n)],  # 0.01 ms to 1e6 ms
        "with_zeros": [0.0 if rng.random() < 0.3 else rng.expovariate(1 / 100) for _ in range(n)],
        "integers": [float(rng.randint(1, 5000)) for _ in range(n)],  # duration_ms is an integer column
        "repeated": [123.456] * 1000,
        "n1": [42.0],
        "n2": [1.0, 100.0],
        "n3": [3.0, 700.0, 12.0],
        "n5": [0.5, 8000.0, 2.0, 90.0, 15.0],
    }


DATASETS = _datasets()
SAMPLES = table("samples", column("dataset"), column("part"), column("v"))


def _relative_error(estimate: float, exact: float) -> float:
    return abs(estimate - exact) / abs(exact) if exact else abs(estimate)


def _percentile_cont(values: Sequence[float], q: float) -> float:
    """PostgreSQL's percentile_cont (orderedsetaggs.c), for the property test without a database."""
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@pytest.fixture(scope="module")
def conn(engine: Engine) -> Iterator[Connection]:
    """One connection with every data set in the temporary table ``samples``, each in two parts."""
    with engine.connect() as conn:
        conn.execute(text("CREATE TEMP TABLE samples (dataset text NOT NULL, part int NOT NULL, v float8)"))
        for name, values in DATASETS.items():
            conn.execute(
                text(
                    "INSERT INTO samples SELECT :name, (i % 2)::int, v"
                    " FROM unnest(CAST(:values AS float8[])) WITH ORDINALITY AS u(v, i)"
                ),
                {"name": name, "values": values},
            )
        yield conn
        conn.rollback()


@pytest.fixture(scope="module")
def exact(conn: Connection) -> dict[str, list[float]]:
    rows = conn.execute(
        text(
            "SELECT dataset, percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY v)"
            " FROM samples GROUP BY dataset"
        )
    )
    return {name: list(values) for name, values in rows}


@pytest.fixture(scope="module")
def from_sql(conn: Connection) -> dict[str, dict[str, Any]]:
    long_format = histogram_sql(SAMPLES, "v", ["dataset", "part"]).subquery()
    statement = quantiles_sql(long_format, FRACTIONS, ["dataset"])
    return {row.dataset: row._asdict() for row in conn.execute(statement)}


def test_python_reference_is_postgresqls_percentile_cont(exact: dict[str, list[float]]) -> None:
    for name, values in DATASETS.items():
        assert [_percentile_cont(values, q) for q in FRACTIONS.values()] == exact[name], name


@pytest.mark.parametrize("name", DATASETS)
def test_python_quantiles_within_one_percent_of_percentile_cont(
    name: str, exact: dict[str, list[float]]
) -> None:
    counts = histogram_of(DATASETS[name])
    assert sum(counts.values()) == len(DATASETS[name])
    for q, expected in zip(FRACTIONS.values(), exact[name], strict=True):
        estimate = quantile(counts, q)
        assert estimate is not None
        assert _relative_error(estimate, expected) <= TOLERANCE, (name, q, estimate, expected)


@pytest.mark.parametrize("name", DATASETS)
def test_sql_quantiles_within_one_percent_and_counts_exact(
    name: str, exact: dict[str, list[float]], from_sql: dict[str, dict[str, Any]]
) -> None:
    row = from_sql[name]
    assert row["count"] == len(DATASETS[name])
    counts = histogram_of(DATASETS[name])
    for (label, q), expected in zip(FRACTIONS.items(), exact[name], strict=True):
        assert _relative_error(row[label], expected) <= TOLERANCE, (name, label, row[label], expected)
        # The same rule on both sides: the SQL estimate is the Python one, up to the last bits.
        assert row[label] == pytest.approx(quantile(counts, q), rel=1e-12, abs=1e-300)


def test_sql_histogram_has_the_python_counts(conn: Connection) -> None:
    long_format = histogram_sql(SAMPLES, "v", ["dataset"])
    stored: dict[str, dict[int, int]] = {}
    for name, bin_, count in conn.execute(long_format):
        stored.setdefault(name, {})[bin_] = count
    assert stored == {name: histogram_of(values) for name, values in DATASETS.items()}


def test_halves_merge_into_the_whole(conn: Connection) -> None:
    halves = histogram_sql(SAMPLES, "v", ["dataset", "part"])
    parts: dict[tuple[str, int], dict[int, int]] = {}
    for name, part, bin_, count in conn.execute(halves):
        parts.setdefault((name, part), {})[bin_] = count
    for name, values in DATASETS.items():
        whole = histogram_of(values)
        assert merge(parts.get((name, 0), {}), parts.get((name, 1), {})) == whole
        assert merge(histogram_of(values[::2]), histogram_of(values[1::2])) == whole
        thirds = [histogram_of(values[i::3]) for i in range(3)]
        assert histogram.merge_stored((list(t), list(t.values())) for t in thirds) == whole
        for q in FRACTIONS.values():
            assert quantile(merge(histogram_of(values[:7]), histogram_of(values[7:])), q) == quantile(
                whole, q
            )
    # In SQL: the quantiles of the merged halves are exactly those of the whole.
    by_part = quantiles_sql(halves.subquery(), FRACTIONS, ["dataset"])
    at_once = quantiles_sql(histogram_sql(SAMPLES, "v", ["dataset"]).subquery(), FRACTIONS, ["dataset"])
    assert sorted(conn.execute(by_part).all()) == sorted(conn.execute(at_once).all())


def test_sql_quantiles_of_no_rows(conn: Connection) -> None:
    nothing = histogram_sql(SAMPLES, "v", ["dataset"]).where(SAMPLES.c.dataset == "none").subquery()
    assert conn.execute(quantiles_sql(nothing, FRACTIONS, ["dataset"])).all() == []
    row = conn.execute(quantiles_sql(nothing, FRACTIONS)).one()
    assert row._asdict() == {"count": 0, "p50": None, "p95": None, "p99": None}
    assert quantile({}, 0.5) is None
    assert quantile({5: 0}, 0.5) is None


# --- Python and PostgreSQL give every value the same bucket ---------------------------------------


def _agreement_values() -> list[float]:
    rng = random.Random(7)
    values = [10 ** rng.uniform(-4, 12) for _ in range(100_000)]
    values += [rng.uniform(0, 2) for _ in range(20_000)]
    values += [float(rng.randint(0, 2**31 - 1)) for _ in range(20_000)]
    values += [float(i) for i in range(0, 10_001)]
    for b in range(-400, 1200):
        # The bucket boundaries, as computed with the constants, and their neighbours by an ulp or two.
        for edge in (GAMMA**b, math.exp(b * LN_GAMMA), math.exp((b + SNAP) * LN_GAMMA), value_of(b)):
            values += [edge, math.nextafter(edge, 0), math.nextafter(edge, math.inf)]
            values.append(math.nextafter(math.nextafter(edge, math.inf), math.inf))
    values += [FLOOR_MS, math.nextafter(FLOOR_MS, 0), math.nextafter(FLOOR_MS, 1), 0.0, -0.0, -1.0]
    values += [5e-324, 1e-300, 1e300, 1.7976931348623157e308, 4e284, 5e284, math.inf, -math.inf, math.nan]
    return values


def test_python_and_sql_buckets_agree_on_every_value(conn: Connection) -> None:
    values = _agreement_values()
    unnested = (
        func.unnest(bindparam("values", type_=ARRAY(Double)))
        .table_valued("v", with_ordinality="i")
        .render_derived()
    )
    statement = select(unnested.c.i, bucket_sql(unnested.c.v)).order_by(unnested.c.i)
    in_sql = [bucket for _, bucket in conn.execute(statement, {"values": values})]
    in_python = [bucket_of(v) for v in values]
    differing = [(v, p, s) for v, p, s in zip(values, in_python, in_sql, strict=True) if p != s]
    assert not differing, differing[:10]
    assert all(SMALLINT[0] <= bucket <= SMALLINT[1] for bucket in in_python)


def test_sql_representative_is_value_of(conn: Connection) -> None:
    bins = [ZERO_BUCKET, *range(-400, 1200), MAX_BUCKET]
    unnested = (
        func.unnest(bindparam("bins", type_=ARRAY(Double)))
        .table_valued("b", with_ordinality="i")
        .render_derived()
    )
    statement = select(value_sql(unnested.c.b)).order_by(unnested.c.i)
    in_sql = conn.execute(statement, {"bins": [float(b) for b in bins]}).scalars().all()
    assert in_sql == [value_of(b) for b in bins]


def test_bucket_sql_writes_its_constants_into_the_sql() -> None:
    # No bound parameters: the expression serves in DDL (an index, a generated column) as it is.
    compiled = bucket_sql(column("v")).compile(dialect=postgresql.dialect())
    assert not compiled.params
    assert repr(LN_GAMMA) in str(compiled)


# --- The buckets themselves ------------------------------------------------------------------------


def test_constants() -> None:
    assert GAMMA == (1 + ALPHA) / (1 - ALPHA)
    assert math.isclose(LN_GAMMA, math.log(GAMMA), rel_tol=1e-15)
    assert math.isclose(value_of(0), 2 / (GAMMA + 1))


def test_the_documented_bucket_range() -> None:
    assert bucket_of(FLOOR_MS) == -345
    assert bucket_of(1e9) == 1037
    assert bucket_of(2**31) == 1075
    assert bucket_of(1.0) == 0
    assert ZERO_BUCKET == SMALLINT[0] < bucket_of(FLOOR_MS)
    assert SMALLINT[1] == MAX_BUCKET
    assert bucket_of(value_of(MAX_BUCKET) * 1.1) == MAX_BUCKET


@pytest.mark.parametrize("value", [0.0, -0.0, -5.0, -math.inf, math.nan, 5e-324, 0.000999])
def test_zero_bucket_takes_nonpositive_tiny_and_nan(value: float) -> None:
    assert bucket_of(value) == ZERO_BUCKET
    assert value_of(ZERO_BUCKET) == 0.0


@pytest.mark.parametrize("value", [math.inf, 1e300, 1.7976931348623157e308])
def test_top_bucket_saturates(value: float) -> None:
    assert bucket_of(value) == MAX_BUCKET


def test_every_bucket_holds_its_boundaries_and_representative() -> None:
    # From the first bucket wholly above the floor (bucket -345 starts at FLOOR_MS, and its
    # representative, 0.000998, lies below it).
    for b in range(bucket_of(FLOOR_MS) + 1, 1200):
        assert bucket_of(GAMMA**b) == b  # the upper boundary, whichever way pow rounds
        assert bucket_of(GAMMA ** (b - 1) * (1 + 1e-9)) == b  # just above the lower one (SNAP: 2e-11)
        assert bucket_of(value_of(b)) == b
        # The representative is within ALPHA of both ends, and so of everything between.
        for edge in (GAMMA ** (b - 1), GAMMA**b):
            assert _relative_error(value_of(b), edge) <= TOLERANCE


def test_integers_are_bucketed_as_floats() -> None:
    assert [bucket_of(n) for n in (1, 45, 2**31 - 1)] == [bucket_of(float(n)) for n in (1, 45, 2**31 - 1)]


def test_quantile_rejects_fractions_outside_zero_one() -> None:
    for q in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError):
            quantile({0: 1}, q)
        with pytest.raises(ValueError):
            quantiles_sql(SAMPLES, {"p": q})
    with pytest.raises(ValueError):
        quantile({0: -1}, 0.5)


def test_nearest_rank_alone_would_miss_percentile_cont() -> None:
    # Why quantile interpolates: for [1, 100], p50 is 50.5; the bucket of rank 0 says about 1.
    counts = histogram_of([1.0, 100.0])
    assert _relative_error(value_of(min(counts)), 50.5) > 0.9
    estimate = quantile(counts, 0.5)
    assert estimate is not None
    assert _relative_error(estimate, 50.5) <= TOLERANCE


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.floats(min_value=FLOOR_MS, max_value=1e9, allow_nan=False) | st.just(0.0), min_size=1, max_size=60
    ),
    q=st.sampled_from([0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]) | st.floats(0, 1),
)
def test_quantile_within_alpha_of_percentile_cont(values: list[float], q: float) -> None:
    counts = histogram_of(values)
    assert sum(counts.values()) == len(values)
    estimate = quantile(counts, q)
    assert estimate is not None
    assert _relative_error(estimate, _percentile_cont(values, q)) <= TOLERANCE


def test_quantiles_of_one_pass_are_each_quantile() -> None:
    rng = random.Random(11)
    for size in (1, 2, 3, 50, 5000):
        counts = histogram.histogram_of(rng.lognormvariate(3, 1.5) for _ in range(size))
        fractions = {"p0": 0.0, "p50": 0.5, "p95": 0.95, "p99": 0.99, "max": 1.0}
        found = histogram.quantiles(counts, fractions)
        assert found == {label: histogram.quantile(counts, q) for label, q in fractions.items()}
    assert histogram.quantiles({}, {"p50": 0.5}) == {"p50": None}
    with pytest.raises(ValueError):
        histogram.quantiles({1: 1}, {"bad": 1.5})


def test_bins_of_count_zero_change_no_quantile() -> None:
    """A merged histogram may hold a bin whose count is 0 (at either end or between others):
    ``quantiles`` ranks as if it were not there."""
    rng = random.Random(12)
    counts = histogram.histogram_of(rng.lognormvariate(3, 1.5) for _ in range(500))
    fractions = {"p0": 0.0, "p50": 0.5, "p95": 0.95, "p99": 0.99, "max": 1.0}
    low, high = min(counts), max(counts)
    padded = {low - 7: 0, **counts, (low + high) // 2 + 1000: 0, high + 9: 0}
    padded.update({bin_: 0 for bin_ in range(low, high) if bin_ not in counts})
    assert histogram.quantiles(padded, fractions) == histogram.quantiles(counts, fractions)
    assert histogram.quantiles({3: 0, 4: 0}, fractions) == dict.fromkeys(fractions)


@pytest.fixture(scope="module")
def stored(conn: Connection) -> TableClause:
    """A temporary table of long-format histograms, rows ``(piece, bin, count)``: several pieces
    hold parts of one histogram, as the rollup rows of one time-series point do."""
    conn.execute(text("CREATE TEMP TABLE stored (piece int NOT NULL, bin smallint, count bigint)"))
    return table("stored", column("piece"), column("bin"), column("count"))


def _packed(conn: Connection, stored: TableClause, pieces: Sequence[dict[int, int]]) -> tuple[bytes, bytes]:
    """The pieces packed as a rollup row keeps them (``arrays_sql``'s packed columns, bins
    sorted), then joined by PostgreSQL (``packed_join_sql``), as a reader fetches them."""
    conn.execute(text("DELETE FROM stored"))
    rows = [{"p": i, "b": b, "c": n} for i, piece in enumerate(pieces) for b, n in piece.items()]
    if rows:
        conn.execute(text("INSERT INTO stored VALUES (:p, :b, :c)"), rows)
    per_piece = histogram.arrays_sql(stored, ["piece"], packed_too=True).subquery()
    joined = select(
        histogram.packed_join_sql(per_piece.c.packed_bins, per_piece.c.piece),
        histogram.packed_join_sql(per_piece.c.packed_counts, per_piece.c.piece),
    )
    bins, counts = conn.execute(joined).one()
    return bytes(bins or b""), bytes(counts or b"")


def test_packed_columns_are_the_arrays_elements(conn: Connection, stored: TableClause) -> None:
    """A row's packed bins and counts are its arrays' elements, in the same order, two and eight
    big-endian bytes each."""
    _packed(conn, stored, [{ZERO_BUCKET: 3, -2: 1, 40: 7, MAX_BUCKET: 2**40}])
    [row] = conn.execute(histogram.arrays_sql(stored, ["piece"], packed_too=True)).all()
    assert row.bins == [ZERO_BUCKET, -2, 40, MAX_BUCKET]
    assert bytes(row.packed_bins) == struct.pack(">4h", *row.bins)
    assert bytes(row.packed_counts) == struct.pack(">4q", 3, 1, 7, 2**40)


def _quantiles_of_one(
    parts: Sequence[tuple[bytes | None, bytes | None]], fractions: dict[str, float]
) -> dict[str, float | None]:
    """The quantiles of one histogram merged from its packed parts."""
    [found] = histogram.quantiles_of_packed_points([parts], fractions)
    return found


ALL_FRACTIONS = {"p0": 0.0, "p50": 0.5, "p95": 0.95, "p99": 0.99, "max": 1.0}


@pytest.mark.parametrize("name", DATASETS)
def test_packed_parts_merge_to_the_quantiles_of_the_whole(
    conn: Connection, stored: TableClause, name: str
) -> None:
    values = DATASETS[name]
    pieces = [histogram_of(values[i::3]) for i in range(3)]
    whole = histogram_of(values)
    assert _quantiles_of_one([_packed(conn, stored, pieces)], ALL_FRACTIONS) == histogram.quantiles(
        whole, ALL_FRACTIONS
    )
    # Packed parts given separately are the same as their bytes joined.
    separately = [_packed(conn, stored, [piece]) for piece in pieces]
    assert _quantiles_of_one(separately, ALL_FRACTIONS) == histogram.quantiles(whole, ALL_FRACTIONS)


def test_packed_extremes_gaps_and_zero_counts(conn: Connection, stored: TableClause) -> None:
    pieces = [{ZERO_BUCKET: 3, 10: 0, 500: 2}, {MAX_BUCKET: 1, 11: 4}, {}]
    whole = {ZERO_BUCKET: 3, 11: 4, 500: 2, MAX_BUCKET: 1}
    packed = _packed(conn, stored, pieces)
    assert _quantiles_of_one([packed], ALL_FRACTIONS) == histogram.quantiles(whole, ALL_FRACTIONS)


def test_packed_nothing_has_no_quantiles(conn: Connection, stored: TableClause) -> None:
    nothing = dict.fromkeys(ALL_FRACTIONS)
    assert _quantiles_of_one([], ALL_FRACTIONS) == nothing
    assert _quantiles_of_one([(None, None), (b"", b"")], ALL_FRACTIONS) == nothing
    assert _quantiles_of_one([_packed(conn, stored, [{}, {}])], ALL_FRACTIONS) == nothing
    assert _quantiles_of_one([_packed(conn, stored, [{4: 0}])], ALL_FRACTIONS) == nothing


def test_packed_refuses_what_is_not_a_packed_histogram(conn: Connection, stored: TableClause) -> None:
    bins, counts = _packed(conn, stored, [{1: 2, 3: 4}])
    with pytest.raises(ValueError, match="differ in length"):
        _quantiles_of_one([(bins, counts[:12])], ALL_FRACTIONS)
    with pytest.raises(ValueError, match="differ in length"):  # half a bin
        _quantiles_of_one([(bins[:3], counts)], ALL_FRACTIONS)
    with pytest.raises(ValueError, match="not negative"):
        _quantiles_of_one([(bins, struct.pack(">2q", 2, -4))], ALL_FRACTIONS)
    with pytest.raises(ValueError, match="between 0 and 1"):
        _quantiles_of_one([(bins, counts)], {"bad": 1.5})


@pytest.fixture(params=[1 << 21, 7], ids=["one chunk", "chunks of a few points"])
def dense_cells(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Points ranked all in one chunk, and in chunks of a few points."""
    monkeypatch.setattr(histogram, "_DENSE_CELLS", request.param)
    return int(request.param)


def test_many_packed_points_at_once_are_each_point_alone(
    conn: Connection, stored: TableClause, dense_cells: int
) -> None:
    """Points ranked together (and in chunks of a few points) give each point's own quantiles."""
    rng = random.Random(13)
    histograms = [
        histogram_of(rng.lognormvariate(rng.uniform(0, 6), 1.5) for _ in range(rng.choice([1, 2, 40, 900])))
        for _ in range(30)
    ]
    histograms[3] = {}
    histograms[7] = {ZERO_BUCKET: 2, MAX_BUCKET: 1}
    points = [[_packed(conn, stored, [counts])] for counts in histograms]
    points[11] = [_packed(conn, stored, [histograms[11]]), _packed(conn, stored, [histograms[12]])]
    expected = [histogram.quantiles(counts, ALL_FRACTIONS) for counts in histograms]
    expected[11] = histogram.quantiles(merge(histograms[11], histograms[12]), ALL_FRACTIONS)
    assert histogram.quantiles_of_packed_points(points, ALL_FRACTIONS) == expected
    assert histogram.quantiles_of_packed_points([], ALL_FRACTIONS) == []


def test_the_union_of_packed_points_is_all_their_values(
    conn: Connection, stored: TableClause, dense_cells: int
) -> None:
    rng = random.Random(14)
    histograms = [
        histogram_of(rng.expovariate(1 / rng.uniform(1, 500)) for _ in range(300)) for _ in range(9)
    ]
    histograms.append({})
    points = [[_packed(conn, stored, [counts])] for counts in histograms]
    union: dict[int, int] = {}
    for counts in histograms:
        union = merge(union, counts)
    *each, together = histogram.quantiles_of_packed_points(points, ALL_FRACTIONS, with_union=True)
    assert each == [histogram.quantiles(counts, ALL_FRACTIONS) for counts in histograms]
    assert together == histogram.quantiles(union, ALL_FRACTIONS)
    assert histogram.quantiles_of_packed_points([], ALL_FRACTIONS, with_union=True) == [
        dict.fromkeys(ALL_FRACTIONS)
    ]
