"""Fixtures shared by every test directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(name="shared_dir", scope="session")
def _shared_dir() -> Path:
    """The team's shared folder (beside the project root; CI lays it there too)."""
    configured = os.environ.get("HRS_SHARED_DIR")
    path = Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared"
    if not (path / "reference-data" / "legacy").is_dir():
        pytest.fail(f"shared dir {path} has no reference-data/legacy (set HRS_SHARED_DIR)")
    return path
