"""The rollup tables, built from ``definitions``: per rollup and grain, a table of groups (the
bucket, the keys, the measures), and beside it the latency bins or the distinct members.

Kept in their own ``MetaData``: the five analytics tables' ``create_all`` and partitioning never
touch them. Every table's primary key is (bucket, keys...[, bin | member]): the upsert target.
Rows are only ever in whole buckets of their grain, so a purge by ``bucket`` keeps them whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Float, MetaData, SmallInteger, Table, Text
from sqlalchemy.types import TypeEngine

from exporter.rollups.definitions import GRAINS, ROLLUPS, Grain, Rollup

rollup_metadata = MetaData()

_MEASURE_TYPES: dict[str, Callable[[], TypeEngine[Any]]] = {
    "bigint": BigInteger,
    "float": Float,
    "timestamptz": lambda: DateTime(timezone=True),
}


def _key_columns(rollup: Rollup) -> list[Column[Any]]:
    return [
        Column("bucket", DateTime(timezone=True), primary_key=True),
        *(Column(key.name, Text, primary_key=True) for key in rollup.keys),
    ]


def _tables(rollup: Rollup, grain: Grain) -> dict[str, Table]:
    tables = {
        "groups": Table(
            rollup.table_name(grain),
            rollup_metadata,
            *_key_columns(rollup),
            *(Column(m.name, _MEASURE_TYPES[m.sql_type](), nullable=False) for m in rollup.measures),
        )
    }
    if rollup.latency is not None:
        tables["latency"] = Table(
            rollup.table_name(grain, "latency"),
            rollup_metadata,
            *_key_columns(rollup),
            Column("bin", SmallInteger, primary_key=True),
            Column("count", BigInteger, nullable=False),
        )
    if rollup.members is not None:
        tables["members"] = Table(
            rollup.table_name(grain, "members"),
            rollup_metadata,
            *_key_columns(rollup),
            Column("member", Text, primary_key=True),
        )
    return tables


# (rollup name, grain name) -> {"groups" | "latency" | "members": Table}
ROLLUP_TABLES: dict[tuple[str, str], dict[str, Table]] = {
    (rollup.name, grain.name): _tables(rollup, grain) for rollup in ROLLUPS for grain in GRAINS
}


def tables_of(rollup: Rollup, grain: Grain) -> dict[str, Table]:
    return ROLLUP_TABLES[(rollup.name, grain.name)]
