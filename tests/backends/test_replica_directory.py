"""The REPLICA backend over a replica directory: warm start, disk reads, in-process fetches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from horde_replica_sync.backends import ReplicaBackendBase, ReplicateMode
from horde_replica_sync.backends.replica import ReplicaDirectoryBackend
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.report import MissReason
from horde_replica_sync.state import FileRecord, ReplicaState
from horde_replica_sync.store import ReplicaStore, sha256_hex

ESRGAN = b'{"a": {"name": "a"}}'
LEGACY = b'{"a": {"name": "a", "type": "x"}}'


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="store")
def _store(tmp_path: Path) -> ReplicaStore:
    store = ReplicaStore(tmp_path / "replica", tmp_path / "state")
    store.write("esrgan.json", ESRGAN)
    store.write("legacy/esrgan.json", LEGACY)
    return store


def backend_for(
    store: ReplicaStore, *, cache_ttl_seconds: int | None = 3600, clock: FakeClock | None = None
) -> ReplicaDirectoryBackend:
    """The backend over every category, as the daemon builds it."""
    return ReplicaDirectoryBackend(
        store,
        categories=tuple(C),
        cache_ttl_seconds=cache_ttl_seconds,
        clock=clock or FakeClock(),
    )


def verified_state(verified_at: float) -> ReplicaState:
    """A state that describes the published esrgan files exactly."""
    state = ReplicaState()
    for layer, relpath, content in (
        (Layer.V2, "esrgan.json", ESRGAN),
        (Layer.LEGACY, "legacy/esrgan.json", LEGACY),
    ):
        record = state.layer(C.esrgan, layer)
        record.files[relpath] = FileRecord(sha256=sha256_hex(content), size=len(content))
        record.fetched_at = record.verified_at = verified_at
    return state


class TestIdentity:
    """It is a REPLICA-mode ReplicaBackendBase pointing at the published files."""

    def test_mode_and_paths(self, store: ReplicaStore) -> None:
        """v2 paths are the published files, with upstream's names."""
        backend = backend_for(store)
        assert isinstance(backend, ReplicaBackendBase)
        assert backend.get_replicate_mode() is ReplicateMode.REPLICA
        paths = backend.get_all_category_file_paths()
        assert paths[C.image_generation] == store.path("stable_diffusion.json")
        assert len(paths) == 15
        assert not backend.supports_writes()


class TestWarmStart:
    """A restart serves what is on disk and still fresh, without fetching it again."""

    def test_matching_files_are_warm_with_their_verification_time(
        self, store: ReplicaStore
    ) -> None:
        """Files matching the state are cached; the TTL counts from their last verification."""
        clock = FakeClock()
        backend = backend_for(store, cache_ttl_seconds=100, clock=clock)
        assert backend.warm_from_disk(verified_state(clock.now - 60)) == [C.esrgan]
        assert backend.is_cache_valid(C.esrgan)
        assert backend.is_legacy_cache_valid(C.esrgan)
        clock.now += 41  # 101 s after verification: past the TTL
        assert backend.should_fetch_data(C.esrgan)

    def test_edited_file_is_not_warm(self, store: ReplicaStore) -> None:
        """A file changed while the daemon was down is re-verified, not trusted."""
        store.write("esrgan.json", b"{}")
        backend = backend_for(store)
        assert backend.warm_from_disk(verified_state(FakeClock().now)) == []
        assert not backend.is_cache_valid(C.esrgan)

    def test_layer_whose_last_refresh_failed_is_not_warm(self, store: ReplicaStore) -> None:
        """A layer with a recorded error is retried at the next run."""
        state = verified_state(FakeClock().now)
        state.layer(C.esrgan, Layer.V2).last_error = "boom"
        backend = backend_for(store)
        assert backend.warm_from_disk(state) == []
        assert backend.is_legacy_cache_valid(C.esrgan)


class TestReads:
    """For in-process callers, it is a local reader of the published files."""

    def test_fetch_reads_the_published_file(self, store: ReplicaStore) -> None:
        """fetch_category returns the file's records and caches them (a second read is a hit)."""
        backend = backend_for(store)
        assert backend.fetch_category(C.esrgan) == json.loads(ESRGAN)
        assert backend.fetch_category(C.esrgan) == json.loads(ESRGAN)
        counters = backend.cache_counters()
        assert (counters.misses[C.esrgan], counters.hits[C.esrgan]) == (1, 1)
        assert backend.fetch_category(C.blip) is None  # never published

    def test_legacy_text_and_parsed_form(self, store: ReplicaStore) -> None:
        """The legacy layer is served as published text, parsed on demand."""
        backend = backend_for(store)
        assert backend.get_legacy_json_string(C.esrgan) == LEGACY.decode()
        assert backend.get_legacy_json(C.esrgan) == json.loads(LEGACY)
        assert backend.get_legacy_json(C.lora) is None  # no legacy format at all

    def test_published_v2_is_held_as_its_bytes_and_parsed_per_read(
        self, store: ReplicaStore
    ) -> None:
        """What the engine publishes is held as bytes (issue 22: resident memory); every read
        gets its own parsed dict, so one reader's changes never reach another."""
        backend = backend_for(store)
        backend.accept(C.esrgan, Layer.V2, ESRGAN)
        first = backend.fetch_category(C.esrgan)
        assert first == json.loads(ESRGAN)
        assert first is not backend.fetch_category(C.esrgan)
        assert backend.cache_counters().hits[C.esrgan] == 2  # served from the cache

    def test_warm_start_holds_bytes_too(self, store: ReplicaStore) -> None:
        """A warm entry reads like a fetched one."""
        backend = backend_for(store)
        backend.warm_from_disk(verified_state(FakeClock().now))
        assert backend.fetch_category(C.esrgan) == json.loads(ESRGAN)
        assert backend.get_legacy_json_string(C.esrgan) == LEGACY.decode()
        assert backend.cache_counters().hits[C.esrgan] == 1

    def test_unreadable_file_is_none(self, store: ReplicaStore) -> None:
        """A corrupt published file reads as None rather than raising."""
        store.path("clip.json").write_bytes(b"{broken")
        assert backend_for(store).fetch_category(C.clip) is None


class TestEngineQueries:
    """What the sync engine asks besides the seed API: legacy presence, expiry reasons."""

    def test_expiry_reasons(self, store: ReplicaStore) -> None:
        """TTL expiry and an edited file are told apart; legacy shares a v2 expiry's reason."""
        clock = FakeClock()
        backend = backend_for(store, cache_ttl_seconds=100, clock=clock)
        backend.warm_from_disk(verified_state(clock.now))
        clock.now += 101
        assert backend.should_fetch_data(C.esrgan)
        assert backend.expiry_reason(C.esrgan, Layer.V2) is MissReason.EXPIRED
        assert backend.expiry_reason(C.esrgan, Layer.LEGACY) is MissReason.EXPIRED
        assert backend.has_legacy_data(C.esrgan)
        backend.accept(C.esrgan, Layer.V2, ESRGAN)
        assert backend.expiry_reason(C.esrgan, Layer.V2) is None  # stored fresh again
        store.write("esrgan.json", b'{"b": {"name": "b"}}')
        assert backend.should_fetch_data(C.esrgan)
        assert backend.expiry_reason(C.esrgan, Layer.V2) is MissReason.EDITED_ON_DISK

    def test_lookups_are_counted_per_layer(self, store: ReplicaStore) -> None:
        """The engine's decisions feed the seed API's statistics."""
        backend = backend_for(store)
        backend.count_lookup(C.esrgan, Layer.V2, hit=True)
        backend.count_lookup(C.esrgan, Layer.LEGACY, hit=False)
        stats = backend.get_statistics()
        assert stats["cache_hits"] == {"esrgan": 1}
        assert stats["legacy_cache_misses"] == {"esrgan": 1}

    async def test_async_read_never_touches_the_network(self, store: ReplicaStore) -> None:
        """The async variant serves the published file too (the engine owns all fetching)."""
        backend = backend_for(store)
        assert await backend.fetch_category_async(C.esrgan) == json.loads(ESRGAN)
        assert (await backend.fetch_all_categories_async())[C.blip] is None
