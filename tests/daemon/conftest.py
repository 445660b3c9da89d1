"""A real daemon process under test: started, signalled, scraped and stopped like in production."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.environment import daemon_env
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
    return daemon_env(server.url, tmp_path)


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
