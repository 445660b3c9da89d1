"""The one owner of "now": ages, TTLs and deadlines on the monotonic clock, dates on the wall's.

Inside the process every stamp (a layer's `verified_at`, `fetched_at`, the cache's
timestamps) is on the *steady* scale: the wall clock as it read when the process started,
advanced by the monotonic clock since. A wall step (an NTP correction, by an hour or more)
therefore moves no age and no TTL. The state file stores wall dates, so they stay meaningful
across restarts and for `status`: a stamp loaded at start is already on the steady scale
(the two agree then), and a saved one is moved by however far the wall clock stepped since
(`wall_step`). A stored stamp in the future was written under a wrong clock: it is not
trusted (`past_or_long_ago`), rather than read as "confirmed just now".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

# A stored stamp this far ahead of now is not trusted. Generous: stamps come from this host.
FUTURE_TOLERANCE_SECONDS: Final = 60.0
# Wall and monotonic clocks are slewed alike; below this a difference is noise, not a step.
STEP_TOLERANCE_SECONDS: Final = 1.0


def _elapsed() -> float:
    """CLOCK_BOOTTIME where there is one: monotonic too, and it counts a suspend of the host,
    so an age measured across one stays true (CLOCK_MONOTONIC stops while suspended)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


ELAPSED: Final[Callable[[], float]] = (
    _elapsed if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic
)


class Clock:
    """Monotonic time on the wall clock's scale at start; the wall clock itself for dates."""

    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = ELAPSED,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._origin = wall() - monotonic()

    def now(self) -> float:
        """The steady now: what every in-process stamp and age is measured with."""
        return self._monotonic() + self._origin

    def wall(self) -> float:
        """The wall clock, for what is shown or stored as a date."""
        return self._wall()

    def offset(self) -> float:
        """Wall minus steady now: 0 at start, moved only by steps of the wall clock."""
        return self._wall() - self.now()

    def wall_step(self) -> float:
        """How far the wall clock stepped since start (0 below `STEP_TOLERANCE_SECONDS`)."""
        step = self.offset()
        return step if abs(step) >= STEP_TOLERANCE_SECONDS else 0.0


def past_or_long_ago(stamp: float, now: float) -> float:
    """`stamp`, or -inf ("too long ago") when it lies beyond the tolerance in the future."""
    return stamp if stamp <= now + FUTURE_TOLERANCE_SECONDS else -math.inf


SYSTEM: Final = Clock()
"""The process's clock, started at import (the console script imports it before any stamp)."""
