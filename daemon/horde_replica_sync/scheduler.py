"""The only module that imports APScheduler (3.x): one jittered interval job that asks for a run.

The job does not sync; it raises the "due" flag, and the daemon's loop runs syncs one at a
time. That keeps signal-triggered and scheduled runs on one path and makes overlap impossible.

APScheduler 3 reckons next run times on the wall clock, so a wall step back (an NTP
correction) would hold the next tick back by the step. A backstop on the event loop's
monotonic clock catches that: a tick overdue by more than the jitter and a margin is logged
(`scheduler.clock_step`), counted, and run at once, and the job is rescheduled from now. A
step forward needs none: `coalesce` makes the backlog one tick.

A suspend of the host moves the wall clock and CLOCK_BOOTTIME but not the loop's clock: the
tick it missed by more than the grace is dropped and the backstop counts awake time only, so
the run would wait up to 1.5 intervals. A check each second notices the sleep (BOOTTIME ahead
of the loop's clock by more than before): logged (`scheduler.resumed`), run at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from horde_replica_sync.clock import ELAPSED, SYSTEM, Clock

JOB_ID = "sync"
MIN_MARGIN_SECONDS = 1.0
SUSPEND_CHECK_SECONDS = 1.0

log = structlog.get_logger(__name__)


class Ticker:
    """Calls `on_due` now, then every `interval` seconds give or take `jitter`."""

    def __init__(
        self,
        on_due: Callable[[], None],
        *,
        interval: float,
        jitter: float,
        misfire_grace: float,
        on_clock_step: Callable[[], None] = lambda: None,
        clock: Clock = SYSTEM,
        elapsed: Callable[[], float] = ELAPSED,
    ) -> None:
        """`clock` tells wall steps apart (logged) and `elapsed` counts a suspend of the host
        (CLOCK_BOOTTIME); tests pass their own to step or suspend in-process."""
        self._on_due = on_due
        self._clock = clock
        self._elapsed = elapsed
        self._on_clock_step = on_clock_step
        self._jitter = jitter
        self._misfire_grace = misfire_grace
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._backstop: asyncio.TimerHandle | None = None
        self._suspend_check: asyncio.TimerHandle | None = None
        self._slept = 0.0  # seconds the host was suspended, as of the last check
        self._offset_at_tick = clock.offset()
        self.interval = interval

    def start(self) -> None:
        """Start ticking (inside the running event loop); the first tick is immediate."""
        self._scheduler.add_job(
            self._tick,  # a coroutine function: APScheduler runs it on the loop, not a thread
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
        self._arm_backstop()
        self._slept = self._suspended()
        self._check_suspend()

    def set_interval(self, interval: float) -> None:
        """Change the period (e.g. from the first-success retry period to the normal one)."""
        if interval != self.interval:
            self.interval = interval
            self._scheduler.reschedule_job(JOB_ID, trigger=self._trigger(interval))
            self._arm_backstop()

    def shutdown(self) -> None:
        """Stop ticking; never waits for the (instant) job."""
        for timer in (self._backstop, self._suspend_check):
            if timer is not None:
                timer.cancel()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    @property
    def overdue_after(self) -> float:
        """Seconds without a tick after which the wall clock is taken to have stepped back."""
        return self.interval + self._jitter + max(MIN_MARGIN_SECONDS, self.interval / 2)

    async def _tick(self) -> None:
        self._offset_at_tick = self._clock.offset()
        self._arm_backstop()
        self._on_due()

    def _arm_backstop(self) -> None:
        if self._backstop is not None:
            self._backstop.cancel()
        loop = asyncio.get_running_loop()  # call_later runs on the loop's monotonic clock
        self._backstop = loop.call_later(self.overdue_after, self._overdue)

    def _overdue(self) -> None:
        log.warning(
            "scheduler.clock_step",
            overdue_seconds=round(self.overdue_after, 3),
            wall_step_seconds=round(self._clock.offset() - self._offset_at_tick, 3),
            action="running now and rescheduling from now",
        )
        self._on_clock_step()
        self._run_now()

    def _check_suspend(self) -> None:
        total = self._suspended()
        slept, self._slept = total - self._slept, total
        if slept >= MIN_MARGIN_SECONDS:
            log.warning(
                "scheduler.resumed",
                suspended_seconds=round(slept, 3),
                action="running now and rescheduling from now",
            )
            self._run_now()
        loop = asyncio.get_running_loop()
        self._suspend_check = loop.call_later(SUSPEND_CHECK_SECONDS, self._check_suspend)

    def _run_now(self) -> None:
        # The trigger reckons the next run from this one, so the step is left behind.
        self._scheduler.modify_job(JOB_ID, next_run_time=datetime.now(UTC))
        self._arm_backstop()

    def _suspended(self) -> float:
        """Seconds the host was suspended since boot: CLOCK_BOOTTIME counts them, the loop's
        CLOCK_MONOTONIC does not (0 where there is no BOOTTIME)."""
        return self._elapsed() - asyncio.get_running_loop().time()

    def _trigger(self, interval: float) -> IntervalTrigger:
        return IntervalTrigger(seconds=interval, jitter=self._jitter or None, timezone=UTC)
