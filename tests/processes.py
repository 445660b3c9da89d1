"""A child process whose JSON log lines are collected, for tests that run the real CLI."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

Event = dict[str, Any]


class LoggedProcess:
    """A child process whose JSON log lines (stderr) are collected; stopped by its PID."""

    def __init__(
        self, argv: list[str], env: dict[str, str], *, cwd: Path | None = None, umask: int = -1
    ) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
            umask=umask,
        )
        self.events: list[Event] = []
        self.raw: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self.raw.append(line)
                if line.startswith("{"):
                    self.events.append(json.loads(line))

    def tail(self, lines: int = 20) -> str:
        """The last log lines, for failure messages."""
        with self._lock:
            return "".join(self.raw[-lines:])

    def matching(self, event: str, **fields: Any) -> list[Event]:
        """Logged events named `event` whose fields match."""
        with self._lock:
            return [
                e
                for e in self.events
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait_for(
        self, event: str, *, count: int = 1, timeout: float = 15.0, **fields: Any
    ) -> list[Event]:
        """Wait until `count` matching events were logged; fail with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching(event, **fields)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        pytest.fail(f"no {count}x {event} {fields} within {timeout} s; log tail:\n{self.tail()}")

    def close(self) -> None:
        """Kill (by PID) if still running, reap, and release the pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
