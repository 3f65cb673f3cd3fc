"""The mergeable latency histogram of the rollups, defined once: bucket function, merge, quantile.

A log-bucket histogram with a bounded relative error, as DDSketch's: with
``GAMMA = (1 + ALPHA) / (1 - ALPHA)``, bucket ``b`` holds the values in ``(GAMMA^(b-1), GAMMA^b]``,
and its representative ``2 * GAMMA^b / (GAMMA + 1)`` is within ``ALPHA`` (relative) of every value
in it. ``ALPHA = 0.01``: every quantile is within 1 % of the exact one. Histograms merge exactly
by adding their counts, so minutes add up to hours and days and the bound still holds.

Buckets (durations in milliseconds):

- ``ZERO_BUCKET = -32768`` (the smallest ``smallint``) counts every value below ``FLOOR_MS``
  (1 µs): zero, negatives and -inf (a clock that stepped back), values too small to measure, and
  NaN. Its representative is 0. It sorts below every other bucket, so the running counts of a
  quantile start with it, and it does not depend on ``FLOOR_MS``: stored counts stay where they
  are should the floor move.
- ``FLOOR_MS`` (1 µs) to 1e9 ms (11.6 days) fall in buckets -345 to 1037, the longest ``integer``
  duration (2^31 ms, 24.9 days) in 1075: a ``smallint`` holds every bin.
- ``MAX_BUCKET = 32767`` (the largest ``smallint``) saturates: values above ``GAMMA^32767`` (about
  4.2e284 ms) and +inf count there.

The bound holds for values from ``FLOOR_MS`` to ``GAMMA^MAX_BUCKET``; below the floor the error is
absolute (under 1 µs), and a negative value counts as 0.

Python (``bucket_of``) and PostgreSQL (``bucket_sql``) compute a bucket the same way, so a value
gets the same bucket on either side: ``ceil(ln(v) / LN_GAMMA - SNAP)`` in double precision, with
the same constant ``LN_GAMMA`` (a literal here, recomputed by neither side), IEEE division and
subtraction, and the C library's ``log`` on both sides. ``SNAP`` (1e-9 of a bucket) keeps the values
that are a boundary up to rounding, such as ``GAMMA ** b``, in bucket ``b`` whichever way the last
bit of ``ln`` rounds: the two sides could only part on a value a few ulps from a
``GAMMA^(b + SNAP)``, and only with two different C libraries. It widens a bucket's error by a
relative 2e-11.

``quantile`` follows PostgreSQL's ``percentile_cont``: the rank ``q * (n - 1)`` (0-based) and,
between two ranks, a linear interpolation, here of the representatives of the buckets that hold
the two neighbours. Each representative is within ``ALPHA`` of its neighbour, so the interpolation
is within ``ALPHA`` of ``percentile_cont``'s value, even when the neighbours are buckets apart (the
nearest rank alone, DDSketch's answer, is not: p50 of ``[1, 100]`` would be about 1, not 50.5).
``quantiles_sql`` computes the same in SQL from a long table of ``(group..., bin, count)`` rows.

Stored, a histogram is two arrays, its bins sorted and their counts: one row per rollup group
holds its whole histogram. ``arrays_sql`` aggregates long-format rows into them, and ``unnest``
turns them back into long format. The row keeps the same histogram packed too (below), the form
readers that merge many histograms fetch. ``quantiles`` answers several quantiles of one histogram in one
pass (a summary merges its bins in SQL and ranks them here: no sort of every bin in SQL).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Double,
    FromClause,
    Integer,
    LargeBinary,
    Select,
    SmallInteger,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by

__all__ = [
    "ALPHA",
    "FLOOR_MS",
    "GAMMA",
    "LN_GAMMA",
    "MAX_BUCKET",
    "SNAP",
    "ZERO_BUCKET",
    "arrays_sql",
    "bucket_of",
    "bucket_sql",
    "histogram_of",
    "histogram_sql",
    "merge",
    "merge_stored",
    "packed_bin_sql",
    "packed_count_sql",
    "packed_join_sql",
    "quantile",
    "quantiles",
    "quantiles_of_packed_points",
    "quantiles_sql",
    "value_of",
    "value_sql",
]

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
# math.log(GAMMA), written out: the bins stored in a table must not depend on the C library of the
# process that happens to compute them. tests/exporter/test_histogram.py checks it is that value.
LN_GAMMA = 0.020000666706669435
SNAP = 1e-9
FLOOR_MS = 0.001
ZERO_BUCKET = -32768
MAX_BUCKET = 32767
_REPRESENTATIVE = 2 / (GAMMA + 1)  # value_of(b) = _REPRESENTATIVE * GAMMA ** b


def bucket_of(value: float) -> int:
    """The bucket of one value (ms): see the module's docstring for the zero and top buckets."""
    v = float(value)
    if not v >= FLOOR_MS:  # also NaN
        return ZERO_BUCKET
    if v == math.inf:
        return MAX_BUCKET
    return min(math.ceil(math.log(v) / LN_GAMMA - SNAP), MAX_BUCKET)


def value_of(bucket: int) -> float:
    """The representative of a bucket: within ``ALPHA`` of every value in it; 0 for the zero bucket."""
    if bucket == ZERO_BUCKET:
        return 0.0
    return _REPRESENTATIVE * GAMMA**bucket


def histogram_of(values: Iterable[float]) -> dict[int, int]:
    """The histogram (bucket -> count) of some values."""
    counts: dict[int, int] = {}
    for value in values:
        bucket = bucket_of(value)
        counts[bucket] = counts.get(bucket, 0) + 1
    return counts


def merge(a: Mapping[int, int], b: Mapping[int, int]) -> dict[int, int]:
    """The histogram of both histograms' values: the counts added, bucket by bucket."""
    return merge_stored([(a.keys(), a.values()), (b.keys(), b.values())])


def merge_stored(stored: Iterable[tuple[Iterable[int], Iterable[int]]]) -> dict[int, int]:
    """The histogram of several histograms in their stored form, ``(bins, counts)`` side by side
    (``arrays_sql``'s rows), into one dict: the counts added, bucket by bucket."""
    merged: dict[int, int] = {}
    for bins, counts in stored:
        for bucket, count in zip(bins, counts, strict=True):
            merged[bucket] = merged.get(bucket, 0) + count
    return merged


def arrays_sql(
    source: FromClause,
    group_by: Sequence[str],
    *,
    bin_column: str = "bin",
    count_column: str = "count",
    sorted_bins: bool = True,
    packed_too: bool = False,
) -> Select[Any]:
    """Long-format rows ``(group..., bin, count)`` (one per group and bin) as one row per group:
    ``(group..., bins, counts)``, the stored form (bins in order). ``sorted_bins=False`` for a
    reader that ranks them itself (``quantiles`` sorts): PostgreSQL can then hash the groups
    instead of sorting every (group, bin) row first, the larger part of merging many bins.
    ``packed_too``: the same histogram packed as well, in ``packed_bins`` and ``packed_counts``
    (in the arrays' order), from the same pass over the rows."""
    bin_, count = cast(source.c[bin_column], SmallInteger), cast(source.c[count_column], BigInteger)
    order = (source.c[bin_column],) if sorted_bins else ()
    bins: ColumnElement[Any] = aggregate_order_by(bin_, *order) if order else bin_
    counts: ColumnElement[Any] = aggregate_order_by(count, *order) if order else count
    packed = (
        [
            packed_join_sql(packed_bin_sql(bin_), *order).label("packed_bins"),
            packed_join_sql(packed_count_sql(count), *order).label("packed_counts"),
        ]
        if packed_too
        else []
    )
    return select(
        *(source.c[name] for name in group_by),
        func.array_agg(bins).label("bins"),
        func.array_agg(counts).label("counts"),
        *packed,
    ).group_by(*(source.c[name] for name in group_by))


def quantile(counts: Mapping[int, int], q: float) -> float | None:
    """The estimate of ``percentile_cont(q)`` of the values counted: None for no values.

    Within ``ALPHA`` (relative) of the exact value when the values lie between ``FLOOR_MS`` and
    ``value_of(MAX_BUCKET)``."""
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is between 0 and 1, not {q}")
    if any(count < 0 for count in counts.values()):
        raise ValueError("a histogram's counts are not negative")
    bins = sorted((bucket, count) for bucket, count in counts.items() if count)
    total = sum(count for _, count in bins)
    if not total:
        return None
    rank = q * (total - 1)
    low_rank, high_rank = math.floor(rank), math.ceil(rank)
    low = value_of(_bucket_at(bins, low_rank))
    if high_rank == low_rank:
        return low
    high = value_of(_bucket_at(bins, high_rank))
    return low + (high - low) * (rank - low_rank)  # percentile_cont's interpolation (float8_lerp)


def quantiles(counts: Mapping[int, int], fractions: Mapping[str, float]) -> dict[str, float | None]:
    """``quantile`` of one histogram for each of ``fractions`` (label -> q), the bins sorted once."""
    for q in fractions.values():
        if not 0 <= q <= 1:
            raise ValueError(f"a quantile is between 0 and 1, not {q}")
    # Sorted and summed in C (a series ranks thousands of points): a bin of count 0 needs no
    # filtering, its running count equals the one before it, so bisect_right never lands on it.
    bins = sorted(counts.items())
    running = list(accumulate(map(itemgetter(1), bins)))
    total = running[-1] if running else 0
    if not total:
        return dict.fromkeys(fractions)
    # For each rank, the first bin whose running count passes it.

    def bucket_at(index: int) -> int:
        return bins[bisect.bisect_right(running, index)][0]

    found: dict[str, float | None] = {}
    for label, q in fractions.items():
        rank = q * (total - 1)
        low_rank, high_rank = math.floor(rank), math.ceil(rank)
        low = value_of(bucket_at(low_rank))
        high = low if high_rank == low_rank else value_of(bucket_at(high_rank))
        found[label] = low + (high - low) * (rank - low_rank)
    return found


def _bucket_at(bins: Sequence[tuple[int, int]], index: int) -> int:
    """The bucket holding the value of 0-based ``index`` in sorted order."""
    seen = 0
    for bucket, count in bins:
        seen += count
        if seen > index:
            return bucket
    raise IndexError(index)


# --- Packed: many stored histograms merged at once (numpy) ---------------------------------------
# A reader that merges many stored histograms (an "other" series adds ten routes' bins per hour,
# a summary every bucket's of a route) reads them packed: each bin as two big-endian bytes
# (``int2send``), each count as eight (``int8send``), a histogram's bins in one ``bytea`` and its
# counts in another, so that ``string_agg`` joins any number of histograms' bytes and numpy
# decodes them at once, with no Python object per bin. Every rollup row keeps its histogram
# packed beside its arrays (``PACKED_BINS`` ...), written when the row is built: packing at read
# time was PostgreSQL's work per element (``array_send``, ~50 ns), for every element of every
# row read. Raw rows and the finer buckets towards a stale edge are packed in the query
# (``packed_bin_sql``). numpy comes with the server extra: only the query API merges packed bins.
_PACKED_BINS = ">i2"  # the bins are smallint
_PACKED_COUNTS = ">i8"  # their counts bigint


def packed_bin_sql(bin_: ColumnElement[Any]) -> ColumnElement[bytes]:
    """One bin packed (two bytes)."""
    return func.int2send(cast(bin_, SmallInteger), type_=LargeBinary)


def packed_count_sql(count: ColumnElement[Any]) -> ColumnElement[bytes]:
    """One count packed (eight bytes)."""
    return func.int8send(cast(count, BigInteger), type_=LargeBinary)


def packed_join_sql(packed: ColumnElement[Any], *order_by: ColumnElement[Any]) -> ColumnElement[bytes]:
    """Every row's packed bytes one after the other (an aggregate; NULL for no row). A group's
    bins and counts must be joined in the same order: both aggregates of one query, ordered
    alike or not at all (PostgreSQL feeds a group's rows to all its aggregates in one pass)."""
    nothing: ColumnElement[Any] = literal(b"", LargeBinary)
    # ORDER BY goes after the last argument: string_agg(packed, '' ORDER BY ...).
    separator = aggregate_order_by(nothing, *order_by) if order_by else nothing
    return func.string_agg(packed, separator, type_=LargeBinary)


# Dense counts held at once (points x distinct bins): beyond it the points are ranked in chunks.
_DENSE_CELLS = 1 << 21


def quantiles_of_packed_points(
    points: Iterable[Iterable[tuple[bytes | None, bytes | None]]],
    fractions: Mapping[str, float],
    *,
    with_union: bool = False,
) -> list[dict[str, float | None]]:
    """``quantiles`` of each point's histogram, merged from its packed ``(bins, counts)`` parts:
    the same answers, bit for bit, counted by numpy for every point at once (a call per point
    cost more than its bins: a 30-day hourly series has 3,600 points of several rows).
    ``with_union``: one answer more, last, for all the points' values together (a summary's
    total), added up from the points' counts rather than from their bins again."""
    import numpy as np  # the server extra's; a library install never needs it

    for q in fractions.values():
        if not 0 <= q <= 1:
            raise ValueError(f"a quantile is between 0 and 1, not {q}")
    bin_size, count_size = np.dtype(_PACKED_BINS).itemsize, np.dtype(_PACKED_COUNTS).itemsize
    bins_parts: list[bytes] = []
    counts_parts: list[bytes] = []
    sizes: list[int] = []  # elements per point
    for parts in points:
        size = 0
        for packed_bins, packed_counts in parts:
            packed_bins, packed_counts = packed_bins or b"", packed_counts or b""
            elements = len(packed_bins) // bin_size
            if len(packed_bins) != bin_size * elements or len(packed_counts) != count_size * elements:
                raise ValueError("packed bins and counts differ in length")
            bins_parts.append(packed_bins)
            counts_parts.append(packed_counts)
            size += elements
        sizes.append(size)
    counts = np.frombuffer(b"".join(counts_parts), dtype=_PACKED_COUNTS)
    if (counts < 0).any():
        raise ValueError("a histogram's counts are not negative")
    # The distinct bins of all points, in order (a few hundred): each bin's column in the dense
    # counts of a point.
    offset_bins = np.frombuffer(b"".join(bins_parts), dtype=_PACKED_BINS).astype(np.int64) - ZERO_BUCKET
    present = np.zeros(MAX_BUCKET - ZERO_BUCKET + 1, dtype=bool)
    present[offset_bins] = True
    distinct = np.flatnonzero(present) + ZERO_BUCKET
    column_of = np.cumsum(present) - 1
    width = max(len(distinct), 1)
    point_of = np.repeat(np.arange(len(sizes)), sizes)
    cell = point_of * width + column_of[offset_bins]
    found: list[dict[str, float | None]] = []
    union = np.zeros(width, dtype=np.int64)
    chunk = max(_DENSE_CELLS // width, 1)
    starts = np.concatenate(([0], np.cumsum(sizes))).tolist()
    for first in range(0, len(sizes), chunk):
        last = min(first + chunk, len(sizes))
        low, high = starts[first], starts[last]
        # Counts added bin by bin (as float64: exact below 2^53), then running counts per point.
        dense = np.bincount(
            cell[low:high] - first * width, weights=counts[low:high], minlength=(last - first) * width
        )
        rows = dense.astype(np.int64).reshape(last - first, width)
        if with_union:
            union += rows.sum(axis=0)
        found += _ranked_rows(np.cumsum(rows, axis=1), distinct, fractions)
    if with_union:
        found += _ranked_rows(np.cumsum(union)[None, :], distinct, fractions)
    return found


def _ranked_rows(
    running: Any, distinct: Any, fractions: Mapping[str, float]
) -> list[dict[str, float | None]]:
    """The quantiles of each row of running counts (numpy, one row per histogram, a column per
    bin of ``distinct``)."""
    import numpy as np

    width = running.shape[1]
    totals = running[:, -1].tolist()
    # For each rank, the first bin whose running count passes it (``quantiles``' bisect_right):
    # rows stacked apart by more than any count, one search for all.
    stride = max(totals, default=0) + 1
    stacked = (running + np.arange(len(totals))[:, None] * stride).ravel()
    targets = []
    for row, total in enumerate(totals):
        for q in fractions.values():
            rank = q * max(total - 1, 0)
            targets += [row * stride + math.floor(rank), row * stride + math.ceil(rank)]
    # A histogram of no values finds nothing (clipped; it is answered with no quantiles).
    at = np.minimum(np.searchsorted(stacked, targets, side="right") % width, len(distinct) - 1)
    bins = distinct[at].tolist() if len(distinct) else []
    found: list[dict[str, float | None]] = []
    for row, total in enumerate(totals):
        if not total:
            found.append(dict.fromkeys(fractions))
            continue
        answer: dict[str, float | None] = {}
        for i, (label, q) in enumerate(fractions.items()):
            rank = q * (total - 1)
            j = 2 * (row * len(fractions) + i)
            low_value, high_value = value_of(bins[j]), value_of(bins[j + 1])
            answer[label] = low_value + (high_value - low_value) * (rank - math.floor(rank))
        found.append(answer)
    return found


# --- The same in SQL (PostgreSQL) ---------------------------------------------------------------


# Constants are written into the SQL, not bound: the expressions also serve in DDL (an index, a
# generated column), and a double's repr round-trips through float8in exactly ('nan' included).
def _float8(value: float) -> ColumnElement[float]:
    return literal_column(f"'{float(value)!r}'::float8", Double)


def _int(value: int) -> ColumnElement[int]:
    return literal_column(str(int(value)), Integer)


def bucket_sql(value: ColumnElement[Any]) -> ColumnElement[int]:
    """``bucket_of`` as an SQL expression (a ``smallint``; NULL for NULL)::

        CASE WHEN v = 'NaN' OR v < FLOOR_MS THEN ZERO_BUCKET
             ELSE LEAST(ceil(ln(GREATEST(v, FLOOR_MS)) / LN_GAMMA - SNAP), MAX_BUCKET)
        END::smallint

    with ``v`` the value cast to double precision. (PostgreSQL's NaN equals itself and sorts above
    every number; GREATEST keeps ``ln`` away from zero even when a planner folds a constant.)"""
    v = cast(value, Double)
    floor = _float8(FLOOR_MS)
    log_bucket = func.ceil(func.ln(func.greatest(v, floor), type_=Double) / _float8(LN_GAMMA) - _float8(SNAP))
    bucket = case(
        ((v == _float8(math.nan)) | (v < floor), _int(ZERO_BUCKET)),
        else_=func.least(log_bucket, _int(MAX_BUCKET)),
    )
    return cast(bucket, SmallInteger)


def value_sql(bucket: ColumnElement[Any]) -> ColumnElement[float]:
    """``value_of`` as an SQL expression (double precision)."""
    representative = _float8(_REPRESENTATIVE) * func.power(_float8(GAMMA), cast(bucket, Double))
    return case((bucket == _int(ZERO_BUCKET), _float8(0.0)), else_=representative)


def histogram_sql(source: FromClause, value: str, group_by: Sequence[str] = ()) -> Select[Any]:
    """The long-format histogram of ``source``'s column ``value``: rows of
    ``(group..., bin, count)``, one per group and bin (rows whose value is NULL left out)."""
    groups = [source.c[name] for name in group_by]
    bin_ = bucket_sql(source.c[value]).label("bin")
    return (
        select(*groups, bin_, cast(func.count(), BigInteger).label("count"))
        .where(source.c[value].is_not(None))
        .group_by(*groups, bin_)
    )


def quantiles_sql(
    source: FromClause,
    fractions: Mapping[str, float],
    group_by: Sequence[str] = (),
    *,
    bin_column: str = "bin",
    count_column: str = "count",
) -> Select[Any]:
    """Quantiles from a long-format histogram: one row per group, ``(group..., count, label...)``.

    ``source`` has rows ``(group..., bin, count)``, any number per group and bin (the rows of many
    minutes: they are merged, the counts added); ``fractions`` maps an output column to its
    quantile, as ``{"p50_ms": 0.5, "p99_ms": 0.99}``. ``count`` is the group's total; each quantile
    is ``quantile``'s value for the group's merged histogram. Without groups the one row of an
    empty source has count 0 and NULL quantiles. A group column is not named like the columns the
    query makes (bin, n, cum, total, count, low_<i>, high_<i>). The SQL::

        WITH merged AS (SELECT g..., bin, sum(count) AS n FROM source
                        WHERE bin IS NOT NULL GROUP BY g..., bin HAVING sum(count) > 0),
        running AS (SELECT g..., bin,
                           sum(n) OVER (PARTITION BY g... ORDER BY bin) AS cum,
                           sum(n) OVER (PARTITION BY g...) AS total FROM merged),
        ranked AS (SELECT g..., coalesce(max(total), 0) AS count,
                          -- per fraction q: the bins holding the values of rank floor and ceil of q * (n - 1)
                          min(bin) FILTER (WHERE cum > floor(q * (total - 1))) AS low_q,
                          min(bin) FILTER (WHERE cum > ceil(q * (total - 1))) AS high_q
                   FROM running GROUP BY g...)
        SELECT g..., count, value(low_q) + (value(high_q) - value(low_q))
                            * (q * (count - 1) - floor(q * (count - 1))) AS label_q
        FROM ranked
    """
    for q in fractions.values():
        if not 0 <= q <= 1:
            raise ValueError(f"a quantile is between 0 and 1, not {q}")
    bin_, count = source.c[bin_column], source.c[count_column]
    groups = [source.c[name] for name in group_by]
    merged = (
        select(*groups, bin_.label("bin"), func.sum(count).label("n"))
        .where(bin_.is_not(None))
        .group_by(*groups, bin_)
        .having(func.sum(count) > _int(0))
        .subquery("merged")
    )
    partition = [merged.c[name] for name in group_by] or None
    running = select(
        *(merged.c[name] for name in group_by),
        merged.c.bin,
        cast(func.sum(merged.c.n).over(partition_by=partition, order_by=merged.c.bin), BigInteger).label(
            "cum"
        ),
        cast(func.sum(merged.c.n).over(partition_by=partition), BigInteger).label("total"),
    ).subquery("running")

    def rank(q: float, total: ColumnElement[Any]) -> ColumnElement[float]:
        return _float8(float(q)) * cast(total - _int(1), Double)  # percentile_cont's rank, in float8

    bins = []
    for i, q in enumerate(fractions.values()):
        row_rank = rank(q, running.c.total)
        bins.append(func.min(running.c.bin).filter(running.c.cum > func.floor(row_rank)).label(f"low_{i}"))
        bins.append(func.min(running.c.bin).filter(running.c.cum > func.ceil(row_rank)).label(f"high_{i}"))
    ranked = (
        select(
            *(running.c[name] for name in group_by),
            func.coalesce(func.max(running.c.total), _int(0)).label("count"),
            *bins,
        )
        .group_by(*(running.c[name] for name in group_by))
        .subquery("ranked")
    )
    values = []
    for i, label in enumerate(fractions):
        q_rank = rank(fractions[label], ranked.c.count)
        low, high = value_sql(ranked.c[f"low_{i}"]), value_sql(ranked.c[f"high_{i}"])
        values.append((low + (high - low) * (q_rank - func.floor(q_rank))).label(label))
    return select(*(ranked.c[name] for name in group_by), ranked.c.count, *values)
