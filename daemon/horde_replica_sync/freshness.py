"""How stale each layer is: one rule, read by `/readyz`, the staleness metric and `status`.

The one record of confirmations is `LayerState.verified_at` in the state: the engine sets it
whenever a layer is confirmed current (downloaded, re-validated, or the PRIMARY's metadata
showed no change) and saves the state after every run, so the daemon in memory and `status`
reading the file agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from horde_replica_sync.catalogs import SPECS as CATALOG_SPECS
from horde_replica_sync.catalogs import Catalog, Name
from horde_replica_sync.categories import Layer, spec_for
from horde_replica_sync.clock import past_or_long_ago
from horde_replica_sync.report import LayerKey
from horde_replica_sync.state import ReplicaState


def layer_keys(names: Iterable[Name]) -> tuple[LayerKey, ...]:
    """Every (category, layer) of `names`, in order; a catalog has one, `Layer.CATALOG`."""
    return tuple((n, layer) for n in names for layer in _layers(n))


def relpath_of(key: LayerKey) -> str:
    """The main file of a layer (the one status shows), relative to the replica."""
    name, layer = key
    if isinstance(name, Catalog):
        return CATALOG_SPECS[name].relpaths[0]
    return spec_for(name).relpath(layer)


def _layers(name: Name) -> tuple[Layer, ...]:
    return (Layer.CATALOG,) if isinstance(name, Catalog) else spec_for(name).layers


def age_seconds(verified_at: float | None, now: float) -> float | None:
    """Seconds since a layer was last confirmed; None when it never was.

    A stamp in the future (written under a wrong clock) is infinitely old, never "age 0".
    """
    return None if verified_at is None else max(0.0, now - past_or_long_ago(verified_at, now))


def age_or_nan(state: ReplicaState, key: LayerKey, now: float) -> float:
    """`age_seconds` for the metric, where "never" is NaN."""
    age = age_seconds(state.layer(*key).verified_at, now)
    return math.nan if age is None else age


NEVER: Final = "never confirmed"
STALE: Final = "stale"
UNSHOWN_RUNS_ALARM: Final = 3
"""Runs in a row whose body, asked past every cache, was still the one held under a moved
stamp (chain.py) before /readyz fails: a cache that ignores query strings never heals."""
UNSHOWN_CAUSE: Final = (
    "the PRIMARY's metadata announced a write, but every answer, even with a one-off key "
    "(&fresh=), is the body already held: most likely a cache between here and the PRIMARY "
    "that ignores query strings (a CDN's legacy cache key, nginx proxy_cache_key $uri)"
)


@dataclass(frozen=True, slots=True)
class Staleness:
    """Which layers are not confirmed within the bound."""

    never_confirmed: tuple[str, ...]
    stale: tuple[str, ...]
    # Categories whose bodies keep failing to show their stamp past every cache.
    unshown: tuple[str, ...] = ()

    @property
    def fresh(self) -> bool:
        """Whether every layer was confirmed within the bound (and shows its stamp)."""
        return not self.never_confirmed and not self.stale and not self.unshown

    def of(self, key: LayerKey) -> str | None:
        """`NEVER`, `STALE` or None (fresh) for one layer."""
        name = _name(*key)
        if name in self.never_confirmed:
            return NEVER
        return STALE if name in self.stale else None


def staleness(
    state: ReplicaState, keys: Iterable[LayerKey], *, now: float, bound_seconds: float
) -> Staleness:
    """Classify `keys` against `bound_seconds` of allowed age."""
    never, stale, unshown = [], [], []
    for category, layer in keys:
        layer_state = state.layer(category, layer)
        age = age_seconds(layer_state.verified_at, now)
        name = _name(category, layer)
        if age is None:
            never.append(name)
        elif age > bound_seconds:
            stale.append(name)
        if layer_state.unshown_runs >= UNSHOWN_RUNS_ALARM:
            unshown.append(category.value)
    return Staleness(tuple(never), tuple(stale), tuple(unshown))


def _name(category: Name, layer: Layer) -> str:
    return f"{category.value}/{layer.value}"
