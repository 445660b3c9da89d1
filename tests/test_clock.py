"""Monotonic time: a wall step (an NTP correction) moves no age, no TTL and no stored date.

In-process, with clocks injected: `Clock(wall=..., monotonic=...)` is what the daemon runs on;
tests step its wall clock by an hour either way while the monotonic one runs on.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from horde_replica_sync.backends.replica import ReplicaDirectoryBackend
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.chain import SourceChain
from horde_replica_sync.clock import Clock
from horde_replica_sync.freshness import layer_keys, staleness
from horde_replica_sync.metrics import Metrics
from horde_replica_sync.publish import StorePublisher
from horde_replica_sync.state import ReplicaState
from horde_replica_sync.store import ReplicaStore
from horde_replica_sync.sync import SyncEngine, SyncOptions
from tests.fakes import ScriptedPrimary, body

HOUR = 3600.0
TTL = 3600
CATEGORIES = (C.esrgan,)
KEYS = layer_keys(CATEGORIES)


class Host:
    """A host's two clocks: the wall one can be stepped, both advance with elapsed time."""

    def __init__(self) -> None:
        self.wall_now, self.monotonic_now = 1_800_000_000.0, 5_000.0
        self.clock = Clock(wall=lambda: self.wall_now, monotonic=lambda: self.monotonic_now)

    def elapse(self, seconds: float) -> None:
        self.wall_now += seconds
        self.monotonic_now += seconds

    def step_wall(self, seconds: float) -> None:
        """What an NTP step does: the wall clock jumps, the monotonic one does not."""
        self.wall_now += seconds


@pytest.fixture(name="host")
def _host() -> Host:
    return Host()


def synced(tmp_path: Path, host: Host) -> tuple[SyncEngine, ReplicaStore]:
    """An engine on `host`'s clock over a real replica directory, after one sync."""
    store = ReplicaStore(tmp_path / "replica", tmp_path / "state")
    cache = ReplicaDirectoryBackend(
        store, categories=CATEGORIES, cache_ttl_seconds=TTL, clock=host.clock.now
    )
    primary = ScriptedPrimary(
        stamps={C.esrgan: 100},
        v2={C.esrgan: body("a", "b")},
        legacy={C.esrgan: body("a", "b", extra="legacy")},
    )
    engine = SyncEngine(
        cache,
        SourceChain(primary, None, github_fallback=False, max_shrink_fraction=0.5),
        StorePublisher(store, clock=host.clock),
        primary=primary,
        options=SyncOptions(categories=CATEGORIES, max_concurrency=2, run_timeout_seconds=5),
        state=ReplicaState(),
        clock=host.clock.now,
    )
    assert asyncio.run(engine.run()).ok
    return engine, store


def staleness_gauge(registry: CollectorRegistry) -> list[float | None]:
    name = "horde_replica_staleness_seconds"
    return [
        registry.get_sample_value(name, {"category": c, "layer": lay})
        for c, lay in [("esrgan", "v2"), ("esrgan", "legacy")]
    ]


@pytest.mark.parametrize("step", [-HOUR, HOUR], ids=["back", "forward"])
def test_a_wall_step_moves_neither_staleness_nor_ttl(
    tmp_path: Path, host: Host, step: float
) -> None:
    """An hour's step either way: the layer is as fresh as it was, and the TTL still counts."""
    engine, _ = synced(tmp_path, host)
    registry = CollectorRegistry()
    Metrics(registry, clock=host.clock.now, wall=host.clock.wall).track(KEYS, engine.state)
    host.elapse(10)
    host.step_wall(step)
    assert staleness(engine.state, KEYS, now=host.clock.now(), bound_seconds=60).fresh
    assert staleness_gauge(registry) == [pytest.approx(10), pytest.approx(10)]
    assert not engine.cache.needs_refresh(C.esrgan)  # 10 s into a 3600 s TTL
    host.elapse(TTL - 10 + 1)
    assert engine.cache.needs_refresh(C.esrgan)  # expired TTL seconds later, as measured


def test_stamps_are_saved_as_wall_dates_after_a_step(tmp_path: Path, host: Host) -> None:
    """After a step back of an hour, state.json stores the wall date each event had."""
    host.step_wall(-HOUR)
    engine, store = synced(tmp_path, host)
    saved = json.loads(store.state_path.read_text())
    assert saved["categories"]["esrgan"]["v2"]["verified_at"] == pytest.approx(host.wall_now)
    # In memory the stamp stays on the steady scale, where ages are measured.
    assert engine.state.layer(C.esrgan, Layer.V2).verified_at == pytest.approx(host.clock.now())


def test_last_success_is_a_wall_date(tmp_path: Path, host: Host) -> None:
    """The one date among the metrics follows the wall clock, step included."""
    host.step_wall(-HOUR)
    engine, _ = synced(tmp_path, host)
    registry = CollectorRegistry()
    metrics = Metrics(registry, clock=host.clock.now, wall=host.clock.wall)
    metrics.observe(asyncio.run(engine.run()))
    got = registry.get_sample_value("horde_replica_last_success_timestamp_seconds")
    assert got == pytest.approx(host.wall_now)
