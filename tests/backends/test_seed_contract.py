"""The seed's contract for `ReplicaBackendBase`, as upstream's own four tests pin it.

Written from the API reference alone: a probe subclass implements only the abstract read
methods, uses the documented subclass helpers (`_store_in_cache`, `_fetch_with_cache`), has a
10 s TTL, and steers time by patching `time.time`, as upstream's tests do.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from horde_replica_sync.backends import ReplicaBackendBase
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY

CATEGORY = MODEL_REFERENCE_CATEGORY.miscellaneous


class ProbeBackend(ReplicaBackendBase):
    """The smallest concrete backend: the seed's abstract methods, nothing else."""

    def fetch_category(
        self, category: MODEL_REFERENCE_CATEGORY, *, force_refresh: bool = False
    ) -> dict[str, Any] | None:
        return self._fetch_with_cache(category, lambda: None, force_refresh=force_refresh)

    def fetch_all_categories(
        self, *, force_refresh: bool = False
    ) -> dict[MODEL_REFERENCE_CATEGORY, dict[str, Any] | None]:
        return {
            c: self.fetch_category(c, force_refresh=force_refresh) for c in MODEL_REFERENCE_CATEGORY
        }

    async def fetch_category_async(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        *,
        httpx_client: httpx.AsyncClient | None = None,
        force_refresh: bool = False,
    ) -> dict[str, Any] | None:
        return self.fetch_category(category, force_refresh=force_refresh)

    async def fetch_all_categories_async(
        self, *, httpx_client: httpx.AsyncClient | None = None, force_refresh: bool = False
    ) -> dict[MODEL_REFERENCE_CATEGORY, dict[str, Any] | None]:
        return self.fetch_all_categories(force_refresh=force_refresh)

    def get_category_file_path(self, category: MODEL_REFERENCE_CATEGORY) -> Path | None:
        return None

    def get_all_category_file_paths(self) -> dict[MODEL_REFERENCE_CATEGORY, Path | None]:
        return dict.fromkeys(MODEL_REFERENCE_CATEGORY)

    def get_legacy_json(
        self, category: MODEL_REFERENCE_CATEGORY, redownload: bool = False
    ) -> dict[str, Any] | None:
        return None

    def get_legacy_json_string(
        self, category: MODEL_REFERENCE_CATEGORY, redownload: bool = False
    ) -> str | None:
        return None


class WallClock:
    """Replaces `time.time` with a value the test moves forward."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1_700_000_000.0
        monkeypatch.setattr(time, "time", lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> WallClock:
    return WallClock(monkeypatch)


class TestSeedContract:
    def test_cache_lifecycle(self, wall: WallClock) -> None:
        """Unloaded, stored, expired past the TTL, restored then marked stale: validity follows."""
        backend = ProbeBackend(cache_ttl_seconds=10)
        assert backend.is_cache_valid(CATEGORY) is False
        assert backend.needs_refresh(CATEGORY) is False

        backend._store_in_cache(CATEGORY, {"model": {"name": "model"}})
        assert backend.is_cache_valid(CATEGORY) is True
        assert backend.needs_refresh(CATEGORY) is False

        wall.advance(11)
        assert backend.is_cache_valid(CATEGORY) is False
        assert backend.needs_refresh(CATEGORY) is True

        backend._store_in_cache(CATEGORY, {"model": {"name": "model"}})
        backend.mark_stale(CATEGORY)
        assert backend.needs_refresh(CATEGORY) is True

    def test_without_ttl(self, wall: WallClock) -> None:
        """With no TTL a stored entry stays valid after 10 000 s."""
        backend = ProbeBackend(cache_ttl_seconds=None)
        backend._store_in_cache(CATEGORY, {"model": {}})
        wall.advance(10_000)
        assert backend.is_cache_valid(CATEGORY) is True
        assert backend.needs_refresh(CATEGORY) is False

    def test_helper_methods(self, wall: WallClock) -> None:
        """`has_cached_data` ignores expiry while `should_fetch_data` follows it."""
        backend = ProbeBackend(cache_ttl_seconds=10)
        assert backend.has_cached_data(CATEGORY) is False
        assert backend.should_fetch_data(CATEGORY) is True

        backend._store_in_cache(CATEGORY, {"model": {}})
        assert backend.has_cached_data(CATEGORY) is True
        assert backend.should_fetch_data(CATEGORY) is False

        wall.advance(11)
        assert backend.has_cached_data(CATEGORY) is True
        assert backend.should_fetch_data(CATEGORY) is True

    def test_fetch_with_cache_helper(self, wall: WallClock) -> None:
        """The fetch function runs on first use, not on a hit, on force_refresh, and on expiry."""
        backend = ProbeBackend(cache_ttl_seconds=10)
        calls = 0

        def fetch() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            return {"model": {"call": calls}}

        first = backend._fetch_with_cache(CATEGORY, fetch)
        assert (first, calls) == ({"model": {"call": 1}}, 1)

        assert backend._fetch_with_cache(CATEGORY, fetch) == first
        assert calls == 1

        forced = backend._fetch_with_cache(CATEGORY, fetch, force_refresh=True)
        assert (forced, calls) == ({"model": {"call": 2}}, 2)

        wall.advance(11)
        assert backend._fetch_with_cache(CATEGORY, fetch) == {"model": {"call": 3}}
        assert calls == 3
