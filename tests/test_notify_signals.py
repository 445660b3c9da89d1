"""The notify protocol and the signal flags, without a daemon around them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tracemalloc
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from horde_replica_sync import early
from horde_replica_sync.notify import Notifier
from horde_replica_sync.signals import Requests


class TestNotifier:
    """One datagram per message, to a path or an abstract socket, or nothing at all."""

    def test_messages_reach_a_path_socket(self, tmp_path: Path) -> None:
        """READY carries a STATUS; STOPPING and WATCHDOG are separate datagrams."""
        path = str(tmp_path / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            notifier = Notifier({"NOTIFY_SOCKET": path})
            notifier.ready("replica synced")
            notifier.watchdog()
            notifier.stopping()
            got = [sock.recv(1024).decode() for _ in range(3)]
        assert got == [
            "READY=1\nSTATUS=replica synced",
            "WATCHDOG=1",
            "STOPPING=1\nSTATUS=stopping",
        ]

    def test_abstract_socket(self) -> None:
        """An address starting with @ names an abstract socket."""
        name = f"hrs-test-{os.getpid()}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("\0" + name)
            Notifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
            assert sock.recv(1024) == b"STATUS=hello"

    def test_silent_without_socket(self) -> None:
        """Without NOTIFY_SOCKET nothing is sent and nothing fails."""
        notifier = Notifier({})
        assert not notifier.enabled
        notifier.ready("x")

    def test_gone_manager_is_not_fatal(self, tmp_path: Path) -> None:
        """A socket path with no listener is logged, not raised."""
        with capture_logs() as logged:
            Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")}).status("x")
        assert [e["event"] for e in logged] == ["notify.failed"]

    def test_watchdog_interval(self) -> None:
        """WATCHDOG_USEC is honoured only for this process (WATCHDOG_PID) and when positive."""
        assert Notifier({"WATCHDOG_USEC": "2000000"}).watchdog_seconds == 2.0
        mine = {"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}
        assert Notifier(mine).watchdog_seconds == 0.5
        assert Notifier({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"}).watchdog_seconds is None
        assert Notifier({"WATCHDOG_USEC": "nope"}).watchdog_seconds is None
        assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_seconds is None


class TestRequests:
    """Flags coalesce: many requests before the loop looks are one request."""

    async def test_storm_is_one_forced_run(self) -> None:
        """A thousand force requests are taken as a single forced run."""
        requests = Requests()
        for _ in range(1000):
            requests.request(force=True)
        await asyncio.wait_for(requests.wake.wait(), 1)
        assert requests.take_run() == (True, True)
        assert requests.take_run() == (False, False)

    async def test_due_and_reload(self) -> None:
        """A scheduled tick is an unforced run; a reload is taken once."""
        requests = Requests()
        requests.request(due=True, reload=True)
        assert requests.take_reload()
        assert not requests.take_reload()
        assert requests.take_run() == (True, False)

    async def test_stop_sets_both_events(self) -> None:
        """A stop wakes the loop and releases whoever waits for the stop."""
        requests = Requests()
        requests.request_stop()
        assert requests.stop
        await asyncio.wait_for(requests.stopped.wait(), 1)
        assert requests.wake.is_set()


class TestHeldSignals:
    """`early`: what start-up records while the daemon cannot act yet."""

    def test_a_storm_during_start_up_is_remembered_in_bounded_memory(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """100,000 SIGHUP before the loop is up are one reload, held in a few bytes: each was
        one more list entry (8 bytes a signal, for as long as start-up lasts)."""
        monkeypatch.setattr(early, "_held", early._held)  # put back as it was
        previous = {signum: signal.getsignal(signum) for signum in early.HELD}
        early.hold()
        try:
            tracemalloc.start()
            for _ in range(100_000):
                signal.raise_signal(signal.SIGHUP)
            grown, _ = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            signal.raise_signal(signal.SIGUSR1)
            assert early.take() == [signal.SIGHUP, signal.SIGUSR1]
            assert grown < 10_000, f"{grown} bytes held for 100,000 signals"
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
