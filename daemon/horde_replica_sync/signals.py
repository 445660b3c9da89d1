"""Signals only set flags and wake the loop; the daemon's loop does the work.

SIGUSR1          forced sync (a storm coalesces: the flag is a flag, not a queue)
SIGHUP           reload the config file
SIGTERM, SIGINT  graceful stop; a second SIGINT exits at once
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field


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


def install(loop: asyncio.AbstractEventLoop, requests: Requests) -> None:
    """Route the daemon's signals into `requests`."""
    loop.add_signal_handler(signal.SIGUSR1, lambda: requests.request(force=True))
    loop.add_signal_handler(signal.SIGHUP, lambda: requests.request(reload=True))
    loop.add_signal_handler(signal.SIGTERM, requests.request_stop)
    loop.add_signal_handler(signal.SIGINT, _interrupt, requests)


def uninstall(loop: asyncio.AbstractEventLoop) -> None:
    """Give the signals back to their defaults."""
    for signum in (signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)


def _interrupt(requests: Requests) -> None:
    if requests.stop:  # the operator insists: leave now (a temp file may stay; never a torn file)
        os._exit(130)
    requests.request_stop()
