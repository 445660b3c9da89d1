"""Wall-clock steps (an NTP correction) under a real daemon, through Debian's libfaketime.

The daemon's wall clock is driven by a file libfaketime re-reads at every call; its monotonic
clock is left alone (FAKETIME_DONT_FAKE_MONOTONIC=1), as an NTP step leaves CLOCK_MONOTONIC.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.processes import DaemonProcess

Start = Callable[..., DaemonProcess]
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
HOUR = 3600
WINDOW_SECONDS = 5.0


@pytest.fixture(name="wall_offset")
def _wall_offset(tmp_path: Path) -> Path:
    if not LIBFAKETIME.exists():
        pytest.fail(f"{LIBFAKETIME} missing: `make tools` installs Debian's faketime")
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    return offset


def _start_every_second(start_daemon: Start, offset: Path) -> DaemonProcess:
    return start_daemon(
        HORDE_REPLICA_INTERVAL_SECONDS="1",
        LD_PRELOAD=str(LIBFAKETIME),
        FAKETIME_TIMESTAMP_FILE=str(offset),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )


def _runs_within(daemon: DaemonProcess, seconds: float) -> int:
    before = len(daemon.matching("sync.run_done"))
    time.sleep(seconds)
    return len(daemon.matching("sync.run_done")) - before


def test_step_back_keeps_syncing_and_step_forward_does_not_burst(
    start_daemon: Start, wall_offset: Path
) -> None:
    """A 1 h step back neither stops the 1 s ticker nor a step forward floods it."""
    daemon = _start_every_second(start_daemon, wall_offset)
    daemon.wait_for("sync.run_done", count=2, ok=True)
    wall_offset.write_text(f"-{HOUR}\n")
    after_back = _runs_within(daemon, WINDOW_SECONDS)
    assert after_back >= WINDOW_SECONDS - 3, daemon.tail()  # at most one interval + margin lost
    (step,) = daemon.matching("scheduler.clock_step")  # logged once per step, measured
    assert step["wall_step_seconds"] == pytest.approx(-HOUR, abs=5)
    assert daemon.sample("horde_replica_scheduler_clock_steps_total") == 1
    wall_offset.write_text(f"+{HOUR}\n")  # two hours forward at once
    after_forward = _runs_within(daemon, WINDOW_SECONDS)
    assert 1 <= after_forward <= WINDOW_SECONDS + 1, daemon.tail()  # no backlog of 7200 ticks
    print(f"runs in {WINDOW_SECONDS} s: {after_back} after 1 h back, {after_forward} forward")
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0
