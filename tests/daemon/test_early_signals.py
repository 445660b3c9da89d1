"""Signals from the first instant: HUP/USR1/TERM during start-up are remembered, never fatal.

Each daemon is a real `run` process; the signal is sent a fixed time after `Popen`, before
(or while) the daemon imports, reads its settings, takes the lock and warms its cache.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from tests.environment import free_port
from tests.faultserver import FaultServer, Reply, records, v2_path
from tests.processes import DaemonProcess, LoggedProcess

Start = Callable[..., DaemonProcess]

# After Popen: inside our imports, settings, lock and cache warm-up (the interpreter's own
# start-up, before our first line, ends after 0.03-0.06 s here: see the README, Signals).
MOMENTS = (0.1, 0.2, 0.4, 0.8)


def _started_then_signalled(
    start_daemon: Start, signum: signal.Signals, after: float
) -> DaemonProcess:
    daemon = start_daemon()
    time.sleep(max(0.0, after - (time.monotonic() - daemon.started_at)))
    daemon.signal(signum)
    return daemon


@pytest.mark.parametrize("after", MOMENTS)
class TestSignalsDuringStartup:
    def test_sighup_is_a_reload_once_up(self, start_daemon: Start, after: float) -> None:
        """The daemon survives, and reloads its config once its loop runs."""
        daemon = _started_then_signalled(start_daemon, signal.SIGHUP, after)
        daemon.wait_for("config.reloaded")
        daemon.wait_for("sync.run_done", ok=True)
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0

    def test_sigusr1_is_a_forced_run_once_up(self, start_daemon: Start, after: float) -> None:
        """The daemon survives, and its first run is the forced one."""
        daemon = _started_then_signalled(start_daemon, signal.SIGUSR1, after)
        daemon.wait_for("sync.run_done", forced=True)
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0

    def test_sigterm_is_a_clean_exit_0(self, start_daemon: Start, after: float) -> None:
        """The daemon stops cleanly with 0: it finishes start-up, then leaves."""
        daemon = _started_then_signalled(start_daemon, signal.SIGTERM, after)
        assert daemon.proc.wait(timeout=15) == 0, daemon.tail()
        daemon.close()
        assert daemon.matching("daemon.stopped"), daemon.tail()


def test_the_console_script_holds_them_too(daemon_env: dict[str, str]) -> None:
    """`horde-replica-sync run` (the installed script, as systemd and the image start it)."""
    script = Path(sys.executable).with_name("horde-replica-sync")
    argv = [str(script), "run", "--metrics-addr", f"127.0.0.1:{free_port()}"]
    daemon = LoggedProcess(argv, daemon_env)
    try:
        time.sleep(0.1)
        os.kill(daemon.proc.pid, signal.SIGHUP)
        daemon.wait_for("config.reloaded")
        os.kill(daemon.proc.pid, signal.SIGTERM)
        assert daemon.proc.wait(timeout=15) == 0
    finally:
        daemon.close()


def test_sync_once_still_stops_at_once_on_sigterm(
    daemon_env: dict[str, str], server: FaultServer
) -> None:
    """`sync --once` does not defer signals: TERM ends it at once, as it always did."""
    server.script(v2_path(C.esrgan), Reply(body=records(C.esrgan, 4), delay=4.0))
    once = LoggedProcess([sys.executable, "-m", "horde_replica_sync", "sync", "--once"], daemon_env)
    try:
        time.sleep(0.3)
        sent = time.monotonic()
        os.kill(once.proc.pid, signal.SIGTERM)
        assert once.proc.wait(timeout=5) == -signal.SIGTERM
        assert time.monotonic() - sent < 1.0
    finally:
        once.close()
