"""Fixtures for the fleet tests: the site cache (real nginx) in front of a PRIMARY."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faultserver import FaultServer, running
from tests.harness.relay import Relay
from tests.harness.site_cache import SiteCache
from tests.interop.peer import Primary, start_primary


@pytest.fixture
def real_primary(tmp_path: Path) -> Iterator[Primary]:
    """The real upstream PRIMARY, this test's own (its data may change)."""
    server = start_primary(tmp_path / "primary")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def relay(real_primary: Primary) -> Iterator[Relay]:
    """A relay to `real_primary` that follows it to a new port when a restart moves it."""
    forward = Relay(lambda: real_primary.port)
    try:
        yield forward
    finally:
        forward.close()


@pytest.fixture
def site_cache(relay: Relay, tmp_path: Path) -> Iterator[SiteCache]:
    """nginx with the example config, in front of the real PRIMARY."""
    cache = SiteCache(tmp_path / "site-cache", f"http://127.0.0.1:{relay.port}")
    try:
        yield cache
    finally:
        cache.stop()


@pytest.fixture
def scripted() -> Iterator[FaultServer]:
    """A scripted PRIMARY (tests/faultserver.py); each test scripts the paths it asks for."""
    with running() as server:
        yield server


@pytest.fixture
def scripted_cache(scripted: FaultServer, tmp_path: Path) -> Iterator[SiteCache]:
    """nginx with the example config, in front of the scripted PRIMARY."""
    cache = SiteCache(tmp_path / "site-cache", scripted.url)
    try:
        yield cache
    finally:
        cache.stop()
