"""The service's own upkeep, each in a worker thread from its event loop: the retention run once
a day (``run_retention``), the rollup refresh every few seconds (``refresh``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from exporter.containment import never_raise
from exporter.retention import TablePurge, run_retention
from exporter.rollups.refresh import RefreshResult, refresh
from homepot_foundation.settings import Settings

logger = logging.getLogger(__name__)

DAY_S = 24 * 60 * 60
# The service waits this long after starting before its first purge: a restart loop must not
# turn into a purge loop, and a short-lived process (a test, a one-off job) never purges.
FIRST_RUN_DELAY_S = 15 * 60


class PeriodicTask:
    """Runs ``work`` in a worker thread after ``first_delay_s``, then every ``interval_s``; a
    failed run (the database away) is logged and the schedule goes on."""

    def __init__(
        self, name: str, work: Callable[[], Any], *, first_delay_s: float, interval_s: float
    ) -> None:
        self._name = name
        self._work = work
        self._first_delay_s = first_delay_s
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.runs = 0
        self.last_result: Any = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        delay = self._first_delay_s
        while True:
            await asyncio.sleep(delay)
            delay = self._interval_s
            with never_raise(f"{self._name} failed; retried in %.0f s", delay, logger=logger):
                self.last_result = await asyncio.to_thread(self._work)
                self.runs += 1


class RetentionTask(PeriodicTask):
    """``run_retention`` once a day, the first run ``FIRST_RUN_DELAY_S`` after the start."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        super().__init__(
            "homepot-analytics-retention",
            lambda: self._purge(engine, settings),
            first_delay_s=FIRST_RUN_DELAY_S,
            interval_s=DAY_S,
        )

    @property
    def last_results(self) -> list[TablePurge] | None:
        found: list[TablePurge] | None = self.last_result
        return found

    @staticmethod
    def _purge(engine: Engine, settings: Settings) -> list[TablePurge] | None:
        results = run_retention(engine, settings)
        for result in results or ():
            if result.rows or result.skipped:
                logger.info("retention: %s", result.describe())
        return results


class RollupRefreshTask(PeriodicTask):
    """``refresh`` every ``rollup_refresh_seconds``: rebuilds the buckets the raw tables' triggers
    marked stale, so reads take whole buckets from the rollups again (until then they take raw
    rows there: correct, only slower)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        interval = settings.rollup_refresh_seconds
        super().__init__(
            "homepot-analytics-rollup-refresh",
            lambda: self._refresh(engine),
            first_delay_s=interval,
            interval_s=interval,
        )

    @staticmethod
    def _refresh(engine: Engine) -> RefreshResult:
        with engine.connect() as conn:
            result = refresh(conn)
        if result.buckets or result.skipped:
            logger.debug("rollups refreshed: %d buckets (%d skipped)", result.buckets, result.skipped)
        return result
