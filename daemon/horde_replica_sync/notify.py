"""systemd's notify protocol: one datagram per message, nothing at all without NOTIFY_SOCKET.

Sends never block: a service manager that does not read its socket (its queue holds a few
datagrams) must not freeze the event loop, or SIGTERM would go unhandled. A message that
cannot be sent at once is dropped and counted (`on_drop`), never waited for.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING to the service manager, if there is one."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET") or None
        # An abstract socket is spelt with a leading "@" in the environment.
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address
        self.watchdog_seconds = _watchdog_seconds(environ)
        self.on_drop: Callable[[], None] = lambda: None

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening."""
        return self._address is not None

    def ready(self, status: str) -> None:
        """The replica is valid: the service is up."""
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        """A one-line summary for `systemctl status`."""
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        """The sync loop is alive."""
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        """Shutdown has begun."""
        self._send("STOPPING=1\nSTATUS=stopping")

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), socket.MSG_DONTWAIT, self._address)
        except BlockingIOError:  # the manager's queue is full: drop, never wait
            self.on_drop()
            log.debug("notify.dropped", message=message.split("\n", 1)[0])
        except OSError as exc:  # the manager went away; never fatal for the daemon
            self.on_drop()
            log.warning("notify.failed", error=str(exc))


def _watchdog_seconds(environ: Mapping[str, str]) -> float | None:
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    with contextlib.suppress(ValueError):
        seconds = int(usec) / 1_000_000
        return seconds if seconds > 0 else None
    return None
