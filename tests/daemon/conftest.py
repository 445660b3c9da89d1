"""A real daemon process under test: started, signalled, scraped and stopped like in production."""

from __future__ import annotations

import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.environment import free_port
from tests.faultserver import FaultServer, running, script_primary
from tests.processes import LoggedProcess


class DaemonProcess(LoggedProcess):
    """`horde-replica-sync run` as a child process, on a free metrics port."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "horde_replica_sync", "run", *args]
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


@pytest.fixture(name="server")
def _server() -> Iterator[FaultServer]:
    with running() as server:
        script_primary(server)
        yield server


@pytest.fixture(name="daemon_env")
def _daemon_env(server: FaultServer, tmp_path: Path) -> dict[str, str]:
    """Settings through the environment, as a container or unit file would pass them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HORDE_REPLICA_", "NOTIFY_"))}
    env.update(
        HORDE_REPLICA_PRIMARY_URL=f"{server.url}/api",
        HORDE_REPLICA_GITHUB_URL=server.url,
        HORDE_REPLICA_GITHUB_FALLBACK="false",
        HORDE_REPLICA_REPLICA_DIR=str(tmp_path / "replica"),
        HORDE_REPLICA_CATEGORIES="esrgan,blip",
        HORDE_REPLICA_INTERVAL_SECONDS="3600",
        HORDE_REPLICA_INIT_INTERVAL_SECONDS="1",
        HORDE_REPLICA_INTERVAL_JITTER_SECONDS="0",
        HORDE_REPLICA_RETRY_INITIAL_SECONDS="0.01",
        HORDE_REPLICA_RETRY_MAX_SECONDS="0.05",
        HORDE_REPLICA_REQUEST_TIMEOUT_SECONDS="5",
        HORDE_REPLICA_CONFIG=str(tmp_path / "config.toml"),
    )
    (tmp_path / "config.toml").write_text("# settings come from the environment in tests\n")
    return env


@pytest.fixture(name="start_daemon")
def _start_daemon(daemon_env: dict[str, str]) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(*args: str, **env: str) -> DaemonProcess:
        daemon = DaemonProcess(list(args), {**daemon_env, **env})
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()
