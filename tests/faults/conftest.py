"""Fixtures for fault tests: a scriptable server and a one-call sync against it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from horde_replica_sync.config import Settings, load_settings
from horde_replica_sync.report import SyncReport
from horde_replica_sync.runtime import RunFlags, open_engine
from horde_replica_sync.state import ReplicaState
from horde_replica_sync.store import ReplicaStore
from tests.faultserver import FaultServer, running

SyncFn = Callable[..., Awaitable[SyncReport]]


@pytest.fixture(name="server")
def _server() -> Iterator[FaultServer]:
    with running() as server:
        yield server


@pytest.fixture(name="replica")
def _replica(tmp_path: Path) -> Path:
    return tmp_path / "replica"


@pytest.fixture(name="settings_for")
def _settings_for(server: FaultServer, replica: Path) -> Callable[..., Settings]:
    def settings_for(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "primary_url": f"{server.url}/api",
            "github_url": server.url,
            "replica_dir": replica,
            "request_timeout_seconds": 2.0,
            "retry_attempts": 3,
            "retry_initial_seconds": 0.001,
            "retry_max_seconds": 0.01,
        }
        values.update(overrides)
        return load_settings(**values)

    return settings_for


@pytest.fixture(name="sync")
def _sync(settings_for: Callable[..., Settings]) -> SyncFn:
    """Run one sync like `sync --once` does: a fresh engine warmed from disk, under the lock."""

    async def sync(
        *, force: bool = False, allow_shrink: bool = False, **overrides: Any
    ) -> SyncReport:
        settings = settings_for(**overrides)
        flags = RunFlags(force=force, allow_shrink=allow_shrink)
        store = ReplicaStore(settings.replica_dir, settings.effective_state_dir)
        with store.locked():
            async with open_engine(settings, flags) as engine:
                return await engine.run(force=force)

    return sync


@pytest.fixture(name="state_of")
def _state_of(replica: Path) -> Callable[[], ReplicaState]:
    def state_of() -> ReplicaState:
        return ReplicaStore(replica, replica / ".horde-replica-sync").load_state()

    return state_of
