"""The console script's first lines: hold HUP/USR1/TERM before anything heavy is imported.

Until the daemon's loop takes them over (`signals.install`), these signals are only recorded,
so one sent during start-up is acted on once the daemon is up instead of killing it. Commands
other than `run` give them back (`release`): there they, and SIGINT, end the process at once.
Kept to the standard library's `signal`, so the window left is the interpreter's own start-up.
"""

from __future__ import annotations

import signal
from types import FrameType

HELD = (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM)
# What a one-shot command gets back: the default action, at once. SIGINT too: asyncio's own
# handler only cancels the run, and a cancelled request retry can outlast the operator's patience.
# Publishing is atomic, so a kill leaves at most a temp file (removed at the next start).
ONE_SHOT_DEFAULTS = (*HELD, signal.SIGINT)
_pending: list[signal.Signals] = []
_held = False


def _record(signum: int, _frame: FrameType | None) -> None:
    if signum not in _pending:  # each once: a storm must not grow the list for as long as it lasts
        _pending.append(signal.Signals(signum))


def hold() -> None:
    """Record the held signals instead of acting on them."""
    global _held  # one process-wide switch, like the handlers themselves
    _held = True
    for signum in HELD:
        signal.signal(signum, _record)


def rehold() -> None:
    """Hold again once the loop gave the signals back (shutting down), if this process held them."""
    if _held:
        hold()


def take() -> list[signal.Signals]:
    """The signals recorded since `hold`, in order, each once; clears them."""
    taken = list(dict.fromkeys(_pending))
    _pending.clear()
    return taken


def release() -> None:
    """Give the held signals their defaults back and deliver what arrived meanwhile."""
    global _held
    if not _held:  # e.g. `cli.main` called in-process: the handlers are not ours to reset
        return
    _held = False
    for signum in ONE_SHOT_DEFAULTS:
        signal.signal(signum, signal.SIG_DFL)
    for signum in take():
        signal.raise_signal(signum)


def main() -> int:
    """`horde-replica-sync` and `python -m horde_replica_sync`."""
    hold()
    from horde_replica_sync.cli import main as cli_main  # after hold, on purpose

    return cli_main()
