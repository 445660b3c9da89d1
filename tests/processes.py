"""Child processes: the CLI run to its end (`run_cli`), and those whose JSON log lines are
collected while they run: the real CLI, and the daemon (`run`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.environment import free_port

Event = dict[str, Any]
CLI = (sys.executable, "-m", "horde_replica_sync")
"""The CLI as the console script runs it, in a fresh interpreter."""
CLI_TIMEOUT_SECONDS = 120.0


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = CLI_TIMEOUT_SECONDS,
) -> subprocess.CompletedProcess[str]:
    """`horde-replica-sync ARGS` to its end in a fresh interpreter, output captured; `env`
    replaces the environment (None: this process's). A hang fails the test, naming the command."""
    try:
        return subprocess.run(
            [*CLI, *args],
            env=None if env is None else dict(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"horde-replica-sync {' '.join(args)} did not finish in {exc.timeout} s")


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
        self,
        event: str,
        *,
        count: int = 1,
        timeout: float = 15.0,
        poll: float = 0.02,
        **fields: Any,
    ) -> list[Event]:
        """Wait until `count` matching events were logged (checking every `poll` s); fail with
        the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching(event, **fields)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(poll)
        pytest.fail(f"no {count}x {event} {fields} within {timeout} s; log tail:\n{self.tail()}")

    def close(self) -> None:
        """Kill (by PID) if still running, reap, and release the pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


class DaemonProcess(LoggedProcess):
    """`horde-replica-sync run` as a child process, on a free metrics port."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        argv = [*CLI, "run", *args]
        super().__init__([*argv, "--metrics-addr", f"127.0.0.1:{self.port}"], env)

    def get(self, path: str) -> tuple[int, str]:
        """GET a path of the metrics/health server."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def sample(self, name: str, **labels: str) -> float | None:
        """One sample from /metrics, or None when absent."""
        _, text = self.get("/metrics")
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            metric, _, label_text = key.partition("{")
            got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
            if metric == name and got == wanted:
                return float(value)
        return None

    def signal(self, signum: signal.Signals) -> None:
        """Send `signum` to the daemon (by its PID, which we started)."""
        os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; return the exit code."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.close()
        return code

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM (the peak) from /proc/PID/status, in KiB."""
        found = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
        return found
