"""The rollup tables, built from ``definitions``: per rollup and grain, a table of groups (the
bucket, the keys, the measures and the latency histogram) and, for a rollup that counts distinct
values, a table of their sketches beside it, a row per group (kept apart: a sketch is a few
hundred bytes compressed, more than the rest of an error group's row, and only distinct counts
read it, while summaries and series scan the groups).

Kept in their own ``MetaData``: the five analytics tables' ``create_all`` and partitioning never
touch them. Every table's primary key is (bucket, keys...): the upsert target. A histogram is two
arrays in its group's row (sorted bins, their counts) rather than a row per bin, and the same
packed in two ``bytea`` beside them: a 30-day read visits one row per group and day, and a write
upserts one row per group.
Rows are only ever in whole buckets of their grain, so a purge by ``bucket`` keeps them whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeEngine

from exporter.distinct_sketch import SKETCH_TYPE
from exporter.rollups.definitions import (
    GRAINS,
    LATENCY_BINS,
    LATENCY_COUNTS,
    PACKED_BINS,
    PACKED_COUNTS,
    ROLLUPS,
    STORED_QUANTILES,
    Grain,
    Rollup,
    sketch_column,
)

rollup_metadata = MetaData()

_MEASURE_TYPES: dict[str, Callable[[], TypeEngine[Any]]] = {
    "bigint": BigInteger,
    "float": Float,
    "numeric": Numeric,
    "timestamptz": lambda: DateTime(timezone=True),
}


def _key_columns(rollup: Rollup) -> list[Column[Any]]:
    return [
        Column("bucket", DateTime(timezone=True), primary_key=True),
        *(Column(key.name, Text, primary_key=True) for key in rollup.keys),
    ]


def _histogram_columns(rollup: Rollup) -> list[Column[Any]]:
    if rollup.latency is None:
        return []
    return [
        Column(LATENCY_BINS, ARRAY(SmallInteger), nullable=False, server_default=text("'{}'")),
        Column(LATENCY_COUNTS, ARRAY(BigInteger), nullable=False, server_default=text("'{}'")),
        Column(PACKED_BINS, LargeBinary, nullable=False, server_default=text("''::bytea")),
        Column(PACKED_COUNTS, LargeBinary, nullable=False, server_default=text("''::bytea")),
        *(Column(name, Float, nullable=True) for name in STORED_QUANTILES.values()),
    ]


def _tables(rollup: Rollup, grain: Grain) -> dict[str, Table]:
    tables = {
        "groups": Table(
            rollup.table_name(grain),
            rollup_metadata,
            *_key_columns(rollup),
            *(Column(m.name, _MEASURE_TYPES[m.sql_type](), nullable=m.nullable) for m in rollup.measures),
            *_histogram_columns(rollup),
        )
    }
    if rollup.distinct:
        tables["sketches"] = Table(
            rollup.table_name(grain, "sketches"),
            rollup_metadata,
            *_key_columns(rollup),
            # NULL: no value in the group (all its rows without one), as ``bit_or`` of none gives.
            *(Column(sketch_column(counted), SKETCH_TYPE, nullable=True) for counted in rollup.distinct),
        )
    return tables


# (rollup name, grain name) -> {"groups" | "sketches": Table}
ROLLUP_TABLES: dict[tuple[str, str], dict[str, Table]] = {
    (rollup.name, grain.name): _tables(rollup, grain) for rollup in ROLLUPS for grain in GRAINS
}


# The 5-minute buckets of each raw table whose rollups are behind its rows: rows were inserted,
# changed or deleted there since the last refresh. Marked by triggers on the raw tables
# (``exporter.rollups.stale``), whoever writes (our writer, HOMEPOT's own inserts, a DELETE by
# hand), and emptied by ``exporter.rollups.refresh``, which rebuilds those buckets.
# A mark is never merged into an older one for the same bucket: ``refresh`` deletes exactly the
# marks it read, so one written while it rebuilds stays for the next round.
stale_buckets = Table(
    "rollup_stale_buckets",
    rollup_metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("source", Text, nullable=False),
    Column("bucket", DateTime(timezone=True), nullable=False),
    Index("ix_rollup_stale_buckets_source_bucket", "source", "bucket"),
)


def tables_of(rollup: Rollup, grain: Grain) -> dict[str, Table]:
    return ROLLUP_TABLES[(rollup.name, grain.name)]
