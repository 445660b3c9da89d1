"""The only module that imports APScheduler (3.x): one jittered interval job that asks for a run.

The job does not sync; it raises the "due" flag, and the daemon's loop runs syncs one at a
time. That keeps signal-triggered and scheduled runs on one path and makes overlap impossible.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

JOB_ID = "sync"


class Ticker:
    """Calls `on_due` now, then every `interval` seconds give or take `jitter`."""

    def __init__(
        self,
        on_due: Callable[[], None],
        *,
        interval: float,
        jitter: float,
        misfire_grace: float,
    ) -> None:
        self._on_due = on_due
        self._jitter = jitter
        self._misfire_grace = misfire_grace
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self.interval = interval

    def start(self) -> None:
        """Start ticking (inside the running event loop); the first tick is immediate."""
        self._scheduler.add_job(
            self._on_due,
            self._trigger(self.interval),
            id=JOB_ID,
            next_run_time=datetime.now(UTC),
            # Stated on purpose, although they are 3.x's defaults: never two at once, a
            # backlog of missed ticks is one tick, and a tick late by less than the grace
            # still fires (e.g. after the host was suspended).
            max_instances=1,
            coalesce=True,
            misfire_grace_time=round(self._misfire_grace),
        )
        self._scheduler.start()

    def set_interval(self, interval: float) -> None:
        """Change the period (e.g. from the first-success retry period to the normal one)."""
        if interval != self.interval:
            self.interval = interval
            self._scheduler.reschedule_job(JOB_ID, trigger=self._trigger(interval))

    def shutdown(self) -> None:
        """Stop ticking; never waits for the (instant) job."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _trigger(self, interval: float) -> IntervalTrigger:
        return IntervalTrigger(seconds=interval, jitter=self._jitter or None, timezone=UTC)
