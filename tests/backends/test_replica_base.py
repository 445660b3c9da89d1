"""Tests of the `ReplicaBackendBase` caching layer: validity, expiry, legacy cache, counters."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from horde_replica_sync.backends import CacheCounters, ReplicaBackendBase, ReplicateMode
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY

C = MODEL_REFERENCE_CATEGORY
TTL = 10


class FakeClock:
    """A settable clock: tests step time instead of sleeping."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Probe(ReplicaBackendBase):
    """A concrete backend whose validation files and extra check are set by the test."""

    def __init__(
        self,
        *,
        ttl: int | None = TTL,
        clock: Callable[[], float] | None = None,
        mode: ReplicateMode = ReplicateMode.REPLICA,
    ) -> None:
        kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
        super().__init__(mode=mode, cache_ttl_seconds=ttl, **kwargs)
        self.v2_paths: dict[MODEL_REFERENCE_CATEGORY, Path] = {}
        self.legacy_paths: dict[MODEL_REFERENCE_CATEGORY, Path] = {}
        self.extra_valid = True
        self.invalidated: list[MODEL_REFERENCE_CATEGORY] = []
        self.register_invalidation_callback(self.invalidated.append)

    def _get_file_path_for_validation(self, category: MODEL_REFERENCE_CATEGORY) -> Path | None:
        return self.v2_paths.get(category)

    def _get_legacy_file_path_for_validation(
        self, category: MODEL_REFERENCE_CATEGORY
    ) -> Path | None:
        return self.legacy_paths.get(category)

    def _additional_cache_validation(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        return self.extra_valid

    def fetch_category(
        self, category: MODEL_REFERENCE_CATEGORY, *, force_refresh: bool = False
    ) -> dict[str, Any] | None:
        return self._fetch_with_cache(category, lambda: None, force_refresh=force_refresh)

    def fetch_all_categories(
        self, *, force_refresh: bool = False
    ) -> dict[MODEL_REFERENCE_CATEGORY, dict[str, Any] | None]:
        return {c: self.fetch_category(c, force_refresh=force_refresh) for c in C}

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
        return self.v2_paths.get(category)

    def get_all_category_file_paths(self) -> dict[MODEL_REFERENCE_CATEGORY, Path | None]:
        return {c: self.get_category_file_path(c) for c in C}

    def get_legacy_json(
        self, category: MODEL_REFERENCE_CATEGORY, redownload: bool = False
    ) -> dict[str, Any] | None:
        return self._get_legacy_from_cache(category)[0]

    def get_legacy_json_string(
        self, category: MODEL_REFERENCE_CATEGORY, redownload: bool = False
    ) -> str | None:
        return self._get_legacy_from_cache(category)[1]


class Source:
    """A fetch function that counts its calls and returns a new payload each time."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return {"model": {"version": self.calls}}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def probe(clock: FakeClock) -> Probe:
    return Probe(clock=clock)


def _file(path: Path, mtime: float) -> Path:
    """Create `path` with an explicit mtime, so mtime checks never depend on clock granularity."""
    path.write_text("{}")
    os.utime(path, (mtime, mtime))
    return path


class TestConstruction:
    def test_defaults(self) -> None:
        """By default the backend is a REPLICA whose entries never expire."""
        backend = Probe(ttl=None)
        assert backend.get_replicate_mode() is ReplicateMode.REPLICA
        assert backend.cache_ttl_seconds is None

    def test_mode_and_ttl(self) -> None:
        """Mode and TTL given to the constructor are reported back."""
        backend = Probe(ttl=30, mode=ReplicateMode.PRIMARY)
        assert backend.get_replicate_mode() is ReplicateMode.PRIMARY
        assert backend.cache_ttl_seconds == 30

    def test_locks(self, probe: Probe) -> None:
        """`_lock` is re-entrant and `async_lock` is one asyncio.Lock for the backend's life."""
        with probe._lock, probe._lock:
            pass
        assert isinstance(probe.async_lock, asyncio.Lock)
        assert probe.async_lock is probe.async_lock
        assert probe.lock is probe._lock

    def test_default_clock_reads_time_at_call_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a clock argument, timestamps come from `time.time()` as it is when stamped."""
        backend = Probe()
        monkeypatch.setattr(time, "time", lambda: 4242.0)
        backend._store_in_cache(C.blip, {})
        assert backend._category_timestamps[C.blip] == 4242.0

    def test_clock_stamps_entries(self, probe: Probe, clock: FakeClock) -> None:
        """Both caches stamp their entries with the injected clock."""
        probe._store_in_cache(C.blip, {})
        clock.advance(5)
        probe._store_legacy_in_cache(C.blip, {}, "{}")
        assert probe._category_timestamps[C.blip] == clock.now - 5
        assert probe._legacy_cache_timestamps[C.blip] == clock.now


class TestNeverLoaded:
    def test_queries(self, probe: Probe) -> None:
        """A never-loaded category needs fetching, but not refreshing, and has no data."""
        assert probe.has_cached_data(C.blip) is False
        assert probe.is_cache_valid(C.blip) is False
        assert probe.needs_refresh(C.blip) is False
        assert probe.should_fetch_data(C.blip) is True
        assert probe.is_legacy_cache_valid(C.blip) is False

    def test_reads_are_empty(self, probe: Probe) -> None:
        """Reading a never-loaded category yields None (v2) and (None, None) (legacy)."""
        assert probe._get_from_cache(C.blip) is None
        assert probe._get_legacy_from_cache(C.blip) == (None, None)
        assert probe.invalidated == []


class TestStore:
    def test_stored_dict_is_served(self, probe: Probe) -> None:
        """A stored dict makes the entry valid and is returned as is."""
        data = {"m": {"name": "m"}}
        probe._store_in_cache(C.esrgan, data)
        assert probe.has_cached_data(C.esrgan) is True
        assert probe.is_cache_valid(C.esrgan) is True
        assert probe.needs_refresh(C.esrgan) is False
        assert probe.should_fetch_data(C.esrgan) is False
        assert probe._get_from_cache(C.esrgan) is data

    def test_empty_dict_is_data(self, probe: Probe) -> None:
        """An empty dict is a real (empty) category, cached like any other."""
        probe._store_in_cache(C.lora, {})
        assert probe.is_cache_valid(C.lora) is True
        assert probe._get_from_cache(C.lora) == {}

    def test_other_categories_unaffected(self, probe: Probe) -> None:
        """Storing one category leaves the others unloaded."""
        probe._store_in_cache(C.esrgan, {})
        assert probe.has_cached_data(C.gfpgan) is False

    def test_none_is_not_fresh(self, probe: Probe) -> None:
        """Storing None records the lookup but leaves the category to be fetched again."""
        probe._store_in_cache(C.clip, None)
        assert probe.has_cached_data(C.clip) is True
        assert probe.is_cache_valid(C.clip) is False
        assert probe.should_fetch_data(C.clip) is True
        assert probe.needs_refresh(C.clip) is False
        assert C.clip not in probe._category_timestamps

    def test_none_is_retried(self, probe: Probe) -> None:
        """A fetch that returned None is retried on the next read."""
        calls: list[int] = []

        def missing() -> dict[str, Any] | None:
            calls.append(1)
            return None

        assert probe._fetch_with_cache(C.clip, missing) is None
        assert probe._fetch_with_cache(C.clip, missing) is None
        assert len(calls) == 2

    def test_none_after_data_is_retried(self, probe: Probe) -> None:
        """None stored over good data keeps its old timestamp (upstream) yet is still retried."""
        probe._store_in_cache(C.clip, {"a": {}})
        probe._store_in_cache(C.clip, None)
        assert probe._get_from_cache(C.clip) is None
        source = Source()
        assert probe._fetch_with_cache(C.clip, source) == {"model": {"version": 1}}
        assert source.calls == 1

    def test_store_clears_stale(self, probe: Probe) -> None:
        """Storing new data over a stale entry makes it valid again."""
        probe._store_in_cache(C.ti, {})
        probe.mark_stale(C.ti)
        probe._store_in_cache(C.ti, {"x": {}})
        assert probe.is_cache_valid(C.ti) is True
        assert probe.needs_refresh(C.ti) is False


class TestTtl:
    def test_exactly_ttl_is_valid(self, probe: Probe, clock: FakeClock) -> None:
        """An entry exactly TTL seconds old is still valid and fires nothing."""
        probe._store_in_cache(C.blip, {})
        clock.advance(TTL)
        assert probe.is_cache_valid(C.blip) is True
        assert probe.needs_refresh(C.blip) is False
        assert probe.invalidated == []

    def test_past_ttl_expires_and_notifies(self, probe: Probe, clock: FakeClock) -> None:
        """Just past the TTL the entry is invalid, marked stale, and listeners hear once."""
        probe._store_in_cache(C.blip, {})
        clock.advance(TTL + 1e-3)
        assert probe.is_cache_valid(C.blip) is False
        assert probe.invalidated == [C.blip]
        assert C.blip in probe._stale_categories
        assert probe.needs_refresh(C.blip) is True
        assert probe.is_cache_valid(C.blip) is False
        assert probe.invalidated == [C.blip]

    def test_needs_refresh_detects_expiry(self, probe: Probe, clock: FakeClock) -> None:
        """`needs_refresh` alone notices expiry and marks the category stale."""
        probe._store_in_cache(C.blip, {})
        clock.advance(TTL + 1)
        assert probe.needs_refresh(C.blip) is True
        assert probe.invalidated == [C.blip]
        assert probe.has_cached_data(C.blip) is True

    def test_expired_read_returns_none(self, probe: Probe, clock: FakeClock) -> None:
        """`_get_from_cache` returns None for an expired entry and notifies listeners."""
        probe._store_in_cache(C.blip, {"m": {}})
        clock.advance(TTL + 1)
        assert probe._get_from_cache(C.blip) is None
        assert probe.invalidated == [C.blip]

    def test_no_ttl_never_expires(self, clock: FakeClock) -> None:
        """With TTL None an entry stays valid however much time passes."""
        backend = Probe(ttl=None, clock=clock)
        backend._store_in_cache(C.blip, {})
        clock.advance(10**9)
        assert backend.is_cache_valid(C.blip) is True
        assert backend.needs_refresh(C.blip) is False

    def test_zero_ttl(self, clock: FakeClock) -> None:
        """With TTL 0 an entry is valid only while no time has passed."""
        backend = Probe(ttl=0, clock=clock)
        backend._store_in_cache(C.blip, {})
        assert backend.is_cache_valid(C.blip) is True
        clock.advance(1e-6)
        assert backend.is_cache_valid(C.blip) is False

    def test_changing_ttl_applies_to_existing_entries(self, clock: FakeClock) -> None:
        """`_set_cache_ttl_seconds` re-judges entries already stored."""
        backend = Probe(ttl=None, clock=clock)
        backend._store_in_cache(C.blip, {})
        clock.advance(100)
        backend._set_cache_ttl_seconds(TTL)
        assert backend.cache_ttl_seconds == TTL
        assert backend.is_cache_valid(C.blip) is False


class TestMtime:
    def test_unchanged_file_keeps_entry(self, probe: Probe, tmp_path: Path) -> None:
        """An entry whose validation file is untouched stays valid."""
        probe.v2_paths[C.blip] = _file(tmp_path / "blip.json", 1000)
        probe._store_in_cache(C.blip, {})
        assert probe._last_known_mtimes[C.blip] == 1000
        assert probe.is_cache_valid(C.blip) is True

    def test_changed_mtime_invalidates(self, probe: Probe, tmp_path: Path) -> None:
        """A new mtime on the validation file invalidates the entry and notifies listeners."""
        path = probe.v2_paths[C.blip] = _file(tmp_path / "blip.json", 1000)
        probe._store_in_cache(C.blip, {})
        os.utime(path, (2000, 2000))
        assert probe.is_cache_valid(C.blip) is False
        assert probe.invalidated == [C.blip]
        assert probe.needs_refresh(C.blip) is True

    def test_older_mtime_also_invalidates(self, probe: Probe, tmp_path: Path) -> None:
        """Any mtime difference counts, even going back in time (a restored file)."""
        path = probe.v2_paths[C.blip] = _file(tmp_path / "blip.json", 1000)
        probe._store_in_cache(C.blip, {})
        os.utime(path, (500, 500))
        assert probe.is_cache_valid(C.blip) is False

    def test_needs_refresh_detects_mtime(self, probe: Probe, tmp_path: Path) -> None:
        """`needs_refresh` alone notices a changed file and marks the category stale."""
        path = probe.v2_paths[C.blip] = _file(tmp_path / "blip.json", 1000)
        probe._store_in_cache(C.blip, {})
        os.utime(path, (2000, 2000))
        assert probe.needs_refresh(C.blip) is True
        assert probe.invalidated == [C.blip]

    def test_deleted_file_invalidates(self, probe: Probe, tmp_path: Path) -> None:
        """Deleting the validation file after it was recorded counts as a change."""
        path = probe.v2_paths[C.blip] = _file(tmp_path / "blip.json", 1000)
        probe._store_in_cache(C.blip, {})
        path.unlink()
        assert probe.is_cache_valid(C.blip) is False
        assert probe.invalidated == [C.blip]

    def test_restore_after_deletion(self, probe: Probe, tmp_path: Path) -> None:
        """Storing again while the file is gone forgets the old mtime, so the entry is valid."""
        path = probe.v2_paths[C.blip] = _file(tmp_path / "blip.json", 1000)
        probe._store_in_cache(C.blip, {})
        path.unlink()
        probe._store_in_cache(C.blip, {"new": {}})
        assert probe.is_cache_valid(C.blip) is True

    def test_absent_file_is_not_a_change(self, probe: Probe, tmp_path: Path) -> None:
        """A validation file that never existed does not invalidate the entry."""
        probe.v2_paths[C.blip] = tmp_path / "missing.json"
        probe._store_in_cache(C.blip, {})
        assert probe.is_cache_valid(C.blip) is True

    def test_file_appearing_is_a_change(self, probe: Probe, tmp_path: Path) -> None:
        """A validation file created after the store invalidates the entry."""
        probe.v2_paths[C.blip] = tmp_path / "blip.json"
        probe._store_in_cache(C.blip, {})
        _file(tmp_path / "blip.json", 1000)
        assert probe.is_cache_valid(C.blip) is False

    def test_restore_records_new_mtime(self, probe: Probe, tmp_path: Path) -> None:
        """Storing after a change records the new mtime, making the entry valid again."""
        path = probe.v2_paths[C.blip] = _file(tmp_path / "blip.json", 1000)
        probe._store_in_cache(C.blip, {})
        os.utime(path, (2000, 2000))
        probe._store_in_cache(C.blip, {"v": {}})
        assert probe.is_cache_valid(C.blip) is True
        assert probe._last_known_mtimes[C.blip] == 2000


class TestAdditionalValidation:
    def test_hook_false_rejects(self, probe: Probe) -> None:
        """A hook returning False makes the entry invalid without notifying listeners."""
        probe._store_in_cache(C.blip, {"m": {}})
        probe.extra_valid = False
        assert probe.is_cache_valid(C.blip) is False
        assert probe.should_fetch_data(C.blip) is True
        assert probe._get_from_cache(C.blip) is None
        assert probe.invalidated == []

    def test_hook_not_consulted_by_needs_refresh(self, probe: Probe) -> None:
        """`needs_refresh` looks at staleness, TTL and mtime only, as upstream's does."""
        probe._store_in_cache(C.blip, {})
        probe.extra_valid = False
        assert probe.needs_refresh(C.blip) is False

    def test_hook_false_forces_fetch(self, probe: Probe) -> None:
        """`_fetch_with_cache` refetches while the hook rejects the entry."""
        source = Source()
        probe._fetch_with_cache(C.blip, source)
        probe.extra_valid = False
        probe._fetch_with_cache(C.blip, source)
        assert source.calls == 2


class TestExplicitStaleness:
    def test_mark_stale(self, probe: Probe) -> None:
        """`mark_stale` invalidates the entry, keeps its data and notifies listeners."""
        probe._store_in_cache(C.blip, {})
        probe.mark_stale(C.blip)
        assert probe.is_cache_valid(C.blip) is False
        assert probe.needs_refresh(C.blip) is True
        assert probe.has_cached_data(C.blip) is True
        assert probe.invalidated == [C.blip]

    def test_mark_stale_never_loaded(self, probe: Probe) -> None:
        """Marking a never-loaded category stale makes it need a refresh."""
        probe.mark_stale(C.blip)
        assert probe.needs_refresh(C.blip) is True
        assert probe.should_fetch_data(C.blip) is True

    def test_invalidate_cache_is_silent(self, probe: Probe) -> None:
        """`_invalidate_cache` marks stale and drops the timestamp without notifying."""
        probe._store_in_cache(C.blip, {})
        probe._invalidate_cache(C.blip)
        assert probe.is_cache_valid(C.blip) is False
        assert probe.needs_refresh(C.blip) is True
        assert C.blip not in probe._category_timestamps
        assert probe.has_cached_data(C.blip) is True
        assert probe.invalidated == []

    def test_invalidate_timestamp(self, probe: Probe) -> None:
        """Without a timestamp the entry is invalid but, like a never-loaded one, not refreshed."""
        probe._store_in_cache(C.blip, {})
        probe._invalidate_category_timestamp(C.blip)
        assert probe.is_cache_valid(C.blip) is False
        assert probe.needs_refresh(C.blip) is False
        assert probe.has_cached_data(C.blip) is True

    def test_mark_fresh(self, probe: Probe, clock: FakeClock) -> None:
        """`_mark_category_fresh` restamps the entry and clears its stale flag."""
        probe._store_in_cache(C.blip, {})
        probe.mark_stale(C.blip)
        clock.advance(3)
        probe._mark_category_fresh(C.blip)
        assert probe.is_cache_valid(C.blip) is True
        assert probe._category_timestamps[C.blip] == clock.now


class TestFetchWithCache:
    def test_lifecycle(self, probe: Probe, clock: FakeClock) -> None:
        """First fetch, hit, forced refresh and expiry call the source 1, 1, 2, 3 times."""
        source = Source()
        first = probe._fetch_with_cache(C.blip, source)
        assert (first, source.calls) == ({"model": {"version": 1}}, 1)
        assert probe._fetch_with_cache(C.blip, source) is first
        assert source.calls == 1
        forced = probe._fetch_with_cache(C.blip, source, force_refresh=True)
        assert (forced, source.calls) == ({"model": {"version": 2}}, 2)
        clock.advance(TTL + 1)
        assert probe._fetch_with_cache(C.blip, source) == {"model": {"version": 3}}
        assert source.calls == 3

    def test_refetch_after_mark_stale(self, probe: Probe) -> None:
        """A stale entry is refetched on the next non-forced read."""
        source = Source()
        probe._fetch_with_cache(C.blip, source)
        probe.mark_stale(C.blip)
        probe._fetch_with_cache(C.blip, source)
        assert source.calls == 2
        assert probe.is_cache_valid(C.blip) is True

    def test_fetch_error_propagates_and_keeps_cache(self, probe: Probe, clock: FakeClock) -> None:
        """A raising fetch function leaves the previous payload in place."""
        probe._fetch_with_cache(C.blip, Source())
        clock.advance(TTL + 1)

        def failing() -> dict[str, Any] | None:
            raise OSError("down")

        with pytest.raises(OSError, match="down"):
            probe._fetch_with_cache(C.blip, failing)
        assert probe._cache[C.blip] == {"model": {"version": 1}}


class TestLegacyCache:
    def test_dict_and_string(self, probe: Probe) -> None:
        """Both legacy forms are stored and served together."""
        probe._store_legacy_in_cache(C.blip, {"m": {}}, '{"m": {}}')
        assert probe.is_legacy_cache_valid(C.blip) is True
        assert probe._get_legacy_from_cache(C.blip) == ({"m": {}}, '{"m": {}}')
        assert probe.get_legacy_json(C.blip) == {"m": {}}

    def test_string_only(self, probe: Probe) -> None:
        """A string alone is enough to make the legacy entry valid."""
        probe._store_legacy_in_cache(C.blip, None, "{}")
        assert probe.is_legacy_cache_valid(C.blip) is True
        assert probe._get_legacy_from_cache(C.blip) == (None, "{}")

    def test_dict_only(self, probe: Probe) -> None:
        """A dict alone is enough to make the legacy entry valid."""
        probe._store_legacy_in_cache(C.blip, {}, None)
        assert probe._get_legacy_from_cache(C.blip) == ({}, None)

    def test_both_none_not_fresh(self, probe: Probe) -> None:
        """Storing neither form leaves the legacy entry to be fetched again."""
        probe._store_legacy_in_cache(C.blip, None, None)
        assert probe.is_legacy_cache_valid(C.blip) is False
        assert C.blip not in probe._legacy_cache_timestamps

    def test_independent_of_v2(self, probe: Probe) -> None:
        """Each cache can be invalidated without touching the other."""
        probe._store_in_cache(C.blip, {})
        probe._store_legacy_in_cache(C.blip, {}, "{}")
        probe._invalidate_legacy_cache(C.blip)
        assert probe.is_legacy_cache_valid(C.blip) is False
        assert probe.is_cache_valid(C.blip) is True
        probe._store_legacy_in_cache(C.blip, {}, "{}")
        probe._invalidate_cache(C.blip)
        assert probe.is_legacy_cache_valid(C.blip) is True
        assert probe.is_cache_valid(C.blip) is False

    def test_mark_stale_leaves_legacy(self, probe: Probe) -> None:
        """`mark_stale` concerns the v2 cache only."""
        probe._store_legacy_in_cache(C.blip, {}, "{}")
        probe.mark_stale(C.blip)
        assert probe.is_legacy_cache_valid(C.blip) is True

    def test_v2_data_does_not_make_legacy_valid(self, probe: Probe) -> None:
        """Holding v2 data says nothing about the legacy cache."""
        probe._store_in_cache(C.blip, {})
        assert probe.is_legacy_cache_valid(C.blip) is False

    def test_ttl_boundary_is_silent(self, probe: Probe, clock: FakeClock) -> None:
        """Legacy entries expire strictly after the TTL, without notifying listeners."""
        probe._store_legacy_in_cache(C.blip, {}, "{}")
        clock.advance(TTL)
        assert probe.is_legacy_cache_valid(C.blip) is True
        clock.advance(1e-3)
        assert probe.is_legacy_cache_valid(C.blip) is False
        assert probe._get_legacy_from_cache(C.blip) == (None, None)
        assert probe.invalidated == []

    def test_no_ttl(self, clock: FakeClock) -> None:
        """With TTL None legacy entries never expire."""
        backend = Probe(ttl=None, clock=clock)
        backend._store_legacy_in_cache(C.blip, {}, "{}")
        clock.advance(10**9)
        assert backend.is_legacy_cache_valid(C.blip) is True

    def test_mtime_change_is_silent(self, probe: Probe, tmp_path: Path) -> None:
        """A changed legacy file invalidates the legacy entry without notifying listeners."""
        path = probe.legacy_paths[C.blip] = _file(tmp_path / "legacy.json", 1000)
        probe._store_legacy_in_cache(C.blip, {}, "{}")
        assert probe.is_legacy_cache_valid(C.blip) is True
        os.utime(path, (2000, 2000))
        assert probe.is_legacy_cache_valid(C.blip) is False
        assert probe.invalidated == []

    def test_deleted_file(self, probe: Probe, tmp_path: Path) -> None:
        """Deleting the recorded legacy file invalidates the legacy entry."""
        path = probe.legacy_paths[C.blip] = _file(tmp_path / "legacy.json", 1000)
        probe._store_legacy_in_cache(C.blip, {}, "{}")
        path.unlink()
        assert probe.is_legacy_cache_valid(C.blip) is False

    def test_files_are_separate(self, probe: Probe, tmp_path: Path) -> None:
        """Touching the legacy file leaves the v2 entry valid, and vice versa."""
        legacy = probe.legacy_paths[C.blip] = _file(tmp_path / "legacy.json", 1000)
        v2 = probe.v2_paths[C.blip] = _file(tmp_path / "v2.json", 1000)
        probe._store_in_cache(C.blip, {})
        probe._store_legacy_in_cache(C.blip, {}, "{}")
        os.utime(legacy, (2000, 2000))
        assert probe.is_cache_valid(C.blip) is True
        probe._store_legacy_in_cache(C.blip, {}, "{}")
        os.utime(v2, (3000, 3000))
        assert probe.is_legacy_cache_valid(C.blip) is True

    def test_restore_after_invalidation(self, probe: Probe, clock: FakeClock) -> None:
        """Storing again clears the legacy stale flag and restamps the entry."""
        probe._store_legacy_in_cache(C.blip, {}, "{}")
        probe._invalidate_legacy_cache(C.blip)
        clock.advance(1)
        probe._store_legacy_in_cache(C.blip, {"n": {}}, None)
        assert probe.is_legacy_cache_valid(C.blip) is True
        assert probe._legacy_cache_timestamps[C.blip] == clock.now


class TestCounters:
    def test_v2_hits_and_misses(self, probe: Probe) -> None:
        """A fetch is a miss, a cached read a hit, and a forced refresh a miss."""
        source = Source()
        probe._fetch_with_cache(C.blip, source)
        probe._fetch_with_cache(C.blip, source)
        probe._fetch_with_cache(C.blip, source)
        probe._fetch_with_cache(C.blip, source, force_refresh=True)
        probe._get_from_cache(C.clip)
        counters = probe.cache_counters()
        assert counters.hits == {C.blip: 2}
        assert counters.misses == {C.blip: 2, C.clip: 1}

    def test_legacy_hits_and_misses(self, probe: Probe) -> None:
        """Legacy reads count separately from v2 reads."""
        probe._get_legacy_from_cache(C.blip)
        probe._store_legacy_in_cache(C.blip, {}, "{}")
        probe._get_legacy_from_cache(C.blip)
        probe._get_legacy_from_cache(C.blip)
        counters = probe.cache_counters()
        assert counters.legacy_hits == {C.blip: 2}
        assert counters.legacy_misses == {C.blip: 1}
        assert counters.hits == {}
        assert counters.misses == {}

    def test_valid_none_is_a_miss(self, probe: Probe) -> None:
        """A valid entry holding None serves no data, so it counts as a miss."""
        probe._store_in_cache(C.blip, {})
        probe._store_in_cache(C.blip, None)
        probe._get_from_cache(C.blip)
        assert probe.cache_counters().misses == {C.blip: 1}

    def test_snapshot_is_frozen(self, probe: Probe) -> None:
        """A snapshot neither changes with later reads nor can be modified."""
        snapshot = probe.cache_counters()
        probe._get_from_cache(C.blip)
        assert isinstance(snapshot, CacheCounters)
        assert snapshot.misses == {}
        with pytest.raises(TypeError):
            snapshot.misses[C.blip] = 1  # type: ignore[index]

    def test_statistics(self, probe: Probe) -> None:
        """`get_statistics` reports counters keyed by category value and the cached count."""
        assert probe.supports_statistics() is True
        probe._fetch_with_cache(C.blip, Source())
        probe._fetch_with_cache(C.blip, Source())
        probe._store_in_cache(C.clip, None)
        probe._get_legacy_from_cache(C.esrgan)
        assert probe.get_statistics() == {
            "cache_hits": {"blip": 1},
            "cache_misses": {"blip": 1},
            "legacy_cache_hits": {},
            "legacy_cache_misses": {"esrgan": 1},
            "cached_categories": 2,
        }


class TestConcurrency:
    def test_threads_see_whole_payloads(self, clock: FakeClock) -> None:
        """8 threads x 500 rounds of store/read/mark_stale never raise nor see a torn payload."""
        backend = Probe(clock=clock)
        categories = (C.blip, C.clip, C.esrgan)
        errors: list[BaseException] = []
        start = threading.Barrier(8)

        def work(worker: int) -> None:
            try:
                start.wait()
                for i in range(500):
                    category = categories[i % len(categories)]
                    backend._store_in_cache(category, {"n": i, "twice": 2 * i, "w": worker})
                    _check(backend._get_from_cache(category))
                    _check(backend._fetch_with_cache(category, lambda: {"n": 0, "twice": 0}))
                    backend._store_legacy_in_cache(category, {"n": i}, str(i))
                    _check_legacy(*backend._get_legacy_from_cache(category))
                    if i % 7 == worker:
                        backend.mark_stale(category)
                    backend.get_statistics()
            except BaseException as exc:  # collected and re-raised in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        counters = backend.cache_counters()
        # two v2 reads and one legacy read per round, each counted exactly once
        assert sum(counters.hits.values()) + sum(counters.misses.values()) == 8 * 500 * 2
        assert sum(counters.legacy_hits.values()) + sum(counters.legacy_misses.values()) == 8 * 500


def _check(data: dict[str, Any] | None) -> None:
    """A read is None or a payload exactly as one writer stored it."""
    if data is not None:
        assert data["twice"] == 2 * data["n"]


def _check_legacy(legacy_dict: dict[str, Any] | None, legacy_string: str | None) -> None:
    """Legacy reads are (None, None) or a dict with its string, stored together."""
    if legacy_dict is None:
        assert legacy_string is None
    else:
        assert legacy_string == str(legacy_dict["n"])


class TestAsyncLock:
    async def test_mutual_exclusion(self, probe: Probe) -> None:
        """Coroutines holding `async_lock` never overlap, even when they yield inside it."""
        inside = 0
        peak = 0
        order: list[int] = []

        async def task(n: int) -> None:
            nonlocal inside, peak
            async with probe.async_lock:
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0)
                order.append(n)
                inside -= 1

        await asyncio.gather(*(task(n) for n in range(10)))
        assert peak == 1
        assert sorted(order) == list(range(10))
