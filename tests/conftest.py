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
