"""The Ticker keeps its period across a wall step of an hour either way (in-process).

APScheduler reads the wall clock through `datetime.now`; the test steps that while the event
loop's monotonic clock runs on, which is what an NTP step does to a process.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from horde_replica_sync.scheduler import Ticker
from tests.fakes import Wall

HOUR = 3600.0
INTERVAL = 0.5


@pytest.fixture(autouse=True)
def _stepped_wall(monkeypatch: pytest.MonkeyPatch) -> None:
    Wall.install(monkeypatch)


async def _ticks_around_steps(*steps: float) -> tuple[list[int], int]:
    """Ticks in the 3 s after each step, and how many clock steps the ticker noticed."""
    ticks, noticed = [0], [0]
    ticker = Ticker(
        lambda: ticks.__setitem__(0, ticks[0] + 1),
        interval=INTERVAL,
        jitter=0.0,
        misfire_grace=1.0,
        on_clock_step=lambda: noticed.__setitem__(0, noticed[0] + 1),
    )
    ticker.start()
    await asyncio.sleep(1.2)
    counts = []
    for step in steps:
        Wall.offset += step
        before = ticks[0]
        await asyncio.sleep(3.0)
        counts.append(ticks[0] - before)
    ticker.shutdown()
    return counts, noticed[0]


def test_a_step_back_keeps_ticking_and_is_noticed_once() -> None:
    (back,), noticed = asyncio.run(_ticks_around_steps(-HOUR))
    # the backstop fires 1.5 s after the last tick, then 0.5 s ticks resume: about 4 in 3 s
    assert back >= 3, back
    assert noticed == 1


def test_a_step_forward_is_one_tick_not_a_burst() -> None:
    (forward,), noticed = asyncio.run(_ticks_around_steps(HOUR))
    assert 4 <= forward <= 8, forward  # 6 expected; a backlog would be 7200
    assert noticed == 0


class Boot:
    """CLOCK_BOOTTIME as a test suspends the host: ahead of the loop's clock by the sleep."""

    slept = 0.0

    @classmethod
    def elapsed(cls) -> float:
        return time.monotonic() + cls.slept


async def _ticks_after_a_suspend(seconds: float) -> int:
    """Ticks in the 1.5 s after the host slept `seconds` (interval 5 s, grace 1 s)."""
    ticks = [0]
    ticker = Ticker(
        lambda: ticks.__setitem__(0, ticks[0] + 1),
        interval=5.0,
        jitter=0.0,
        misfire_grace=1.0,
        elapsed=Boot.elapsed,
    )
    ticker.start()
    await asyncio.sleep(0.3)  # the first tick, at once
    before = ticks[0]
    Wall.offset += seconds  # both the wall clock and CLOCK_BOOTTIME count a suspend...
    Boot.slept += seconds  # ...the loop's CLOCK_MONOTONIC does not
    await asyncio.sleep(1.5)
    ticker.shutdown()
    return ticks[0] - before


def test_a_suspend_longer_than_the_grace_is_a_run_at_once() -> None:
    """After a suspend the replica is as old as the sleep, but APScheduler drops the tick it
    missed by more than the grace and the backstop counts awake time only: no run for up to
    1.5 intervals (an hour and a half at `interval_seconds = 3600`). Noticed within a second."""
    Boot.slept = 0.0
    assert asyncio.run(_ticks_after_a_suspend(HOUR)) == 1
    assert asyncio.run(_ticks_after_a_suspend(0.0)) == 0  # no sleep, no extra run
