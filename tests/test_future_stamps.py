"""A stored stamp in the future (written under a clock since stepped back) is never "age 0".

Public, long-standing entry points only: the staleness rule, the REPLICA backend's warm start
and TTL, and `status` over a real state file.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from prometheus_client import CollectorRegistry

from horde_replica_sync.backends.replica import ReplicaDirectoryBackend
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.config import load_settings
from horde_replica_sync.freshness import layer_keys, staleness
from horde_replica_sync.metrics import Metrics
from horde_replica_sync.publish import StorePublisher
from horde_replica_sync.state import ReplicaState
from horde_replica_sync.status import collect
from horde_replica_sync.store import ReplicaStore
from tests.fakes import FakeClock, MemoryPublisher, ScriptedPrimary, body, engine_for

HOUR = 3600.0
TTL = 3600
CATEGORIES = (C.esrgan,)
KEYS = layer_keys(CATEGORIES)


def synced_store(tmp_path: Path, clock: FakeClock) -> ReplicaStore:
    """A real replica directory and state file after one sync at `clock`'s time."""
    store = ReplicaStore(tmp_path / "replica", tmp_path / "state")
    cache = ReplicaDirectoryBackend(
        store, categories=CATEGORIES, cache_ttl_seconds=TTL, clock=clock
    )
    primary = ScriptedPrimary(
        stamps={C.esrgan: 100},
        v2={C.esrgan: body("a", "b")},
        legacy={C.esrgan: body("a", "b", extra="legacy")},
    )
    engine = engine_for(cache, MemoryPublisher(), primary=primary, clock=clock)
    engine.publisher = StorePublisher(store)
    assert asyncio.run(engine.run()).ok
    return store


def stamped_ahead(store: ReplicaStore, *, fetched: bool, verified: bool) -> ReplicaState:
    """The saved state with its stamps moved an hour ahead."""
    state = store.load_state()
    for key in KEYS:
        layer = state.layer(*key)
        assert layer.fetched_at is not None and layer.verified_at is not None
        if fetched:
            layer.fetched_at += HOUR
        if verified:
            layer.verified_at += HOUR
    return state


def test_a_future_verified_at_is_stale(tmp_path: Path) -> None:
    """Readiness and the staleness gauge: stale (+Inf), not confirmed "just now"."""
    clock = FakeClock()
    state = stamped_ahead(synced_store(tmp_path, clock), fetched=False, verified=True)
    verdict = staleness(state, KEYS, now=clock(), bound_seconds=7200)
    assert verdict.stale == ("esrgan/v2", "esrgan/legacy")
    registry = CollectorRegistry()
    Metrics(registry, clock=clock).track(KEYS, state)
    labels = {"category": "esrgan", "layer": "v2"}
    age = registry.get_sample_value("horde_replica_staleness_seconds", labels)
    assert age is not None and math.isinf(age)


def test_a_future_fetched_at_does_not_hold_the_ttl_off(tmp_path: Path) -> None:
    """A warm start from fetch stamps an hour ahead re-verifies at once (reason: expired)."""
    clock = FakeClock()
    store = synced_store(tmp_path, clock)
    state = stamped_ahead(store, fetched=True, verified=False)
    restarted = ReplicaDirectoryBackend(
        store, categories=CATEGORIES, cache_ttl_seconds=TTL, clock=clock
    )
    assert restarted.warm_from_disk(state) == [C.esrgan]  # the files themselves are fine
    assert restarted.needs_refresh(C.esrgan)
    assert not restarted.is_legacy_cache_valid(C.esrgan)


def test_status_calls_a_future_stamp_stale(tmp_path: Path) -> None:
    """`status` shows no age for a stamp from the future, and calls the layer stale."""
    clock = FakeClock()
    store = synced_store(tmp_path, clock)
    store.save_state(stamped_ahead(store, fetched=True, verified=True))
    settings = load_settings(
        None, replica_dir=tmp_path / "replica", state_dir=tmp_path / "state", categories="esrgan"
    )
    rows = collect(settings, now=clock())
    assert [(r.age_seconds, r.fetched_seconds_ago) for r in rows] == [(None, None)] * 2
    assert [(r.problem or "").split(" ")[0] for r in rows] == ["stale"] * 2
