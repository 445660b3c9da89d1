"""Fixtures for the interop tests: real upstream PRIMARYs and a cold-synced replica.

Every fixture fails loudly (never skips) when the PRIMARY cannot start; `make peer` provisions
its venv before the tests run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.peer import Primary, SyncedReplica, run_sync, snapshot, start_primary


@pytest.fixture(scope="session")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Primary]:
    """One read-only PRIMARY for the session; tests must not change its data."""
    server = start_primary(tmp_path_factory.mktemp("primary"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mutable_primary(tmp_path: Path) -> Iterator[Primary]:
    """A PRIMARY of this test's own, whose data (and process) the test may change."""
    server = start_primary(tmp_path / "primary")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cold_replica(primary: Primary, tmp_path_factory: pytest.TempPathFactory) -> SyncedReplica:
    """A cold `sync --once --no-fallback` into an empty directory (shared; don't modify it)."""
    replica = tmp_path_factory.mktemp("cold") / "replica"
    before = primary.request_count()
    run = run_sync(primary.base_url, replica)
    requests = primary.request_count() - before
    return SyncedReplica(replica, run, requests, snapshot(replica))
