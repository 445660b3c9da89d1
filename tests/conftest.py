"""Fixtures shared by every test directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.environment import shared_dir


@pytest.fixture(name="shared_dir", scope="session")
def _shared_dir_fixture() -> Path:
    """The team's shared folder (beside the project root; CI lays it there too)."""
    path = shared_dir()
    if not (path / "reference-data" / "legacy").is_dir():
        pytest.fail(f"shared dir {path} has no reference-data/legacy (set HRS_SHARED_DIR)")
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The in-process daemon loop tests run last. After them, in the same interpreter,
    `test_health.py::TestBounds::test_when_every_connection_is_being_answered_a_new_one_is_closed`
    fails (the third client is not closed within 1 s); alone, or before them, it passes. The
    cause is not found yet (threads, signals, rlimits and the default socket timeout are as
    before): until it is, the order keeps both meaningful. A stable sort: all else keeps
    its order."""
    items.sort(key=lambda item: item.path.name == "test_daemon_loop.py")
