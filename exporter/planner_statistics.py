"""Statistics for the partitions the writer fills, kept as fresh as the partitions grow.

The trace joins after each batch (``exporter.trace_links``) look rows up by trace id. The planner
plans them from the partitions' statistics, and both kinds of stale statistics cost:
- none (a partition never analysed): the planner guesses a scan of the batch's whole time window
  through the timestamp index; measured here, 8.9 s instead of 0.46 s for a 1,000-span OTLP
  request against a 484k-row month;
- taken while the partition was empty or held one batch (the first minutes of a month): the
  plans degrade as it fills; measured here, the joins after a 4,000-span batch went from 8-17 ms
  to 40-117 ms within the first 60,000 rows, a quarter of the writer's time.
Autovacuum re-analyses a table once a tenth of it changed, but only where it runs (some servers
run with it off; this machine's does), and a minute late at best.

So the writer analyses each partition it writes into that PostgreSQL has never analysed (all its
columns, once); and the partitions the joins read (``trace_links.LOOKUP_COLUMNS``) again, for the
columns the joins find rows by, each time one has grown ``GROWTH`` times over since it was last
analysed: a handful of analyses a month. Those sample 3,000 rows (``LOOKUP_STATISTICS_TARGET``),
enough to show the planner that trace ids are near-unique and where the timestamps lie: on a
50k-row request partition here 27 ms, against 164 ms at the default target of 100 and 391 ms
for all columns. Where autovacuum runs, its own analyses (all columns, the default target)
replace these and keep the partition's size current, so the writer rarely finds one grown.
Grown is measured on disk (its pages now against ``pg_class.relpages`` of the last analysis),
which every process sees: several writers do not analyse the same growth twice.
A partition's size is looked at only once this writer may have grown it that much (at least
``MIN_ROWS`` rows later), so most batches cost no query at all.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from exporter.own_logging import exporter_logger
from exporter.partitions import add_months, month_start, partition_name
from exporter.schema import TABLES
from exporter.trace_links import LOOKUP_COLUMNS

logger = exporter_logger(__name__)

GROWTH = 4
# The statistics target of the lookup columns' analyses (300 rows sampled per unit).
LOOKUP_STATISTICS_TARGET = 10
# Rows written into a partition before its size is looked at again, at the least.
MIN_ROWS = 1_000

_SIZES = """
SELECT c.relname, c.reltuples, c.relpages,
       pg_relation_size(c.oid) / current_setting('block_size')::int AS pages
FROM pg_class c
WHERE c.relname = ANY(%s) AND c.relnamespace = current_schema()::regnamespace
"""


def _written(batch: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[list[datetime], Counter[str]]:
    """The months the batch's rows fall in, and how many rows went into each monthly partition:
    one pass over the rows' timestamps."""
    written: Counter[str] = Counter()
    first_month: datetime | None = None
    last_month: datetime | None = None
    for table, rows in batch.items():
        times = [row["timestamp"] for row in rows if row.get("timestamp")]
        if not times:
            continue
        first, last = month_start(min(times)), month_start(max(times))
        if first == last:  # the usual batch: seconds of one month
            written[partition_name(table, first)] += len(times)
        else:
            written.update(partition_name(table, month_start(moment)) for moment in times)
        first_month = first if first_month is None else min(first_month, first)
        last_month = last if last_month is None else max(last_month, last)
    months = []
    month = first_month
    while month is not None and last_month is not None and month <= last_month:
        months.append(month)
        month = add_months(month, 1)
    return months, written


def _rows_now(reltuples: float, relpages: int, pages: int) -> float:
    """The partition's rows as the planner estimates them: the analysed density times its pages."""
    return reltuples / relpages * pages if relpages > 0 and reltuples > 0 else 0.0


class PartitionStatistics:
    """Per partition, the rows this writer may still put into it before it looks at its size."""

    def __init__(self) -> None:
        self._rows_until_look: dict[str, float] = {}

    def ensure(
        self, connection: psycopg.Connection[Any], batch: Mapping[str, Sequence[Mapping[str, Any]]]
    ) -> None:
        """Analyse the stale partitions among the five tables' for the batch's months (the trace
        joins read requests and errors whatever the batch holds). Own transaction."""
        months, written = _written(batch)
        due: dict[str, str] = {}
        for month in months:
            for table in TABLES:
                name = partition_name(table, month)
                left = self._rows_until_look.get(name, 0.0) - written[name]
                if left <= 0:
                    due[name] = table
                else:
                    self._rows_until_look[name] = left
        if due:
            self._look(connection, due)

    def _look(self, connection: psycopg.Connection[Any], due: Mapping[str, str]) -> None:
        try:
            sizes = connection.execute(_SIZES, [list(due)]).fetchall()
            connection.commit()
            for name in due:  # a month without a partition of its own (its rows in the default)
                self._rows_until_look[name] = MIN_ROWS
            for name, reltuples, relpages, pages in sizes:
                columns = LOOKUP_COLUMNS.get(due[name])
                if reltuples < 0:
                    self._analyse(connection, name, (), f"never analysed, {pages} pages")
                elif columns and pages >= GROWTH * max(relpages, 1):
                    why = f"{relpages} pages when last analysed, {pages} now"
                    self._analyse(connection, name, columns, why)
                # Looked at again once this writer alone may have grown it that much.
                grown = (GROWTH - 1) * _rows_now(reltuples, relpages, pages)
                self._rows_until_look[name] = max(MIN_ROWS, grown) if columns else math.inf
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise  # the connection is gone: the writer's own handling
        except psycopg.Error as error:  # the rows are stored already: never a reason to keep them
            connection.rollback()
            logger.warning("could not analyse the analytics partitions (%s); joins may plan slowly", error)

    @staticmethod
    def _analyse(connection: psycopg.Connection[Any], name: str, columns: Sequence[str], why: str) -> None:
        statement = sql.SQL("ANALYZE {}").format(sql.Identifier(name))
        if columns:
            statement += sql.SQL(" ({})").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
            connection.execute(f"SET LOCAL default_statistics_target = {LOOKUP_STATISTICS_TARGET}")
        connection.execute(statement)
        connection.commit()
        logger.info("analysed %s (%s) so the trace joins plan on its current size", name, why)
