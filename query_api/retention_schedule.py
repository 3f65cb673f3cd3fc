"""The daily retention run of the analytics service: ``run_retention`` in a worker thread,
from the service's event loop, once a day."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import Engine

from exporter.containment import never_raise
from exporter.retention import TablePurge, run_retention
from homepot_foundation.settings import Settings

logger = logging.getLogger(__name__)

DAY_S = 24 * 60 * 60
# The service waits this long after starting before its first purge: a restart loop must not
# turn into a purge loop, and a short-lived process (a test, a one-off job) never purges.
FIRST_RUN_DELAY_S = 15 * 60


class RetentionTask:
    """Runs ``run_retention`` in a worker thread once a day, from the service's event loop."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        first_delay_s: float | None = None,
        interval_s: float | None = None,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._first_delay_s = FIRST_RUN_DELAY_S if first_delay_s is None else first_delay_s
        self._interval_s = DAY_S if interval_s is None else interval_s
        self._task: asyncio.Task[None] | None = None
        self.runs = 0
        self.last_results: list[TablePurge] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="homepot-analytics-retention"
            )

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
            # A failed run (database away) must not end the daily schedule.
            with never_raise("retention run failed; retried in %.0f s", delay, logger=logger):
                results = await asyncio.to_thread(run_retention, self._engine, self._settings)
                self.runs += 1
                self.last_results = results
                for result in results or ():
                    if result.rows or result.skipped:
                        logger.info("retention: %s", result.describe())
