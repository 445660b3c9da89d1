"""A real daemon process under test: started, signalled, scraped and stopped like in production."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.environment import clean_env
from tests.faultserver import FaultServer, running, script_primary
from tests.processes import DaemonProcess


@pytest.fixture(name="server")
def _server() -> Iterator[FaultServer]:
    with running() as server:
        script_primary(server)
        yield server


@pytest.fixture(name="daemon_env")
def _daemon_env(server: FaultServer, tmp_path: Path) -> dict[str, str]:
    """Settings through the environment, as a container or unit file would pass them."""
    env = clean_env(
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
