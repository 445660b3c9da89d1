"""Signals only set flags and wake the loop; the daemon's loop does the work.

From the console script's first line until `install`, `early` only records them; `install`
replays what it recorded, so a signal sent during start-up is acted on once the loop is up.

SIGUSR1          forced sync (a storm coalesces: the flag is a flag, not a queue)
SIGHUP           reload the config file
SIGTERM, SIGINT  graceful stop; a second SIGINT exits at once
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from horde_replica_sync import early


@dataclass(slots=True)
class Requests:
    """What the outside world asked for since the loop last looked."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    due: bool = False
    force: bool = False
    reload: bool = False
    stop: bool = False

    def request(self, *, due: bool = False, force: bool = False, reload: bool = False) -> None:
        """Raise flags and wake the loop."""
        self.due |= due
        self.force |= force
        self.reload |= reload
        self.wake.set()

    def request_stop(self) -> None:
        """Ask the loop to finish."""
        self.stop = True
        self.stopped.set()
        self.wake.set()

    def take_run(self) -> tuple[bool, bool]:
        """(a run is wanted, it is forced), clearing both flags."""
        wanted, forced = self.due or self.force, self.force
        self.due = self.force = False
        return wanted, forced

    def take_reload(self) -> bool:
        """Whether a reload was asked for, clearing the flag."""
        wanted, self.reload = self.reload, False
        return wanted


def _actions(requests: Requests) -> dict[signal.Signals, Callable[[], None]]:
    return {
        signal.SIGUSR1: lambda: requests.request(force=True),
        signal.SIGHUP: lambda: requests.request(reload=True),
        signal.SIGTERM: requests.request_stop,
        signal.SIGINT: lambda: _interrupt(requests),
    }


def install(loop: asyncio.AbstractEventLoop, requests: Requests) -> None:
    """Route the daemon's signals into `requests`, then replay those held during start-up."""
    actions = _actions(requests)
    for signum, action in actions.items():
        loop.add_signal_handler(signum, action)
    for signum in early.take():
        actions[signum]()


def uninstall(loop: asyncio.AbstractEventLoop) -> None:
    """Take the signals off the loop (held again while the daemon shuts down, as at start)."""
    for signum in (signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)
    early.rehold()


def _interrupt(requests: Requests) -> None:
    if requests.stop:  # the operator insists: leave now (a temp file may stay; never a torn file)
        os._exit(130)
    requests.request_stop()
