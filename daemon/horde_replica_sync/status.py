"""`horde-replica-sync status`: what the replica holds, read from the state file alone."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from horde_replica_sync.clock import SYSTEM
from horde_replica_sync.config import Settings
from horde_replica_sync.errors import by_origin, root_cause
from horde_replica_sync.freshness import (
    NEVER,
    STALE,
    UNSHOWN_CAUSE,
    UNSHOWN_RUNS_ALARM,
    Staleness,
    age_seconds,
    layer_keys,
    relpath_of,
    staleness,
)
from horde_replica_sync.report import LayerKey
from horde_replica_sync.state import LastOutcome, ReplicaState
from horde_replica_sync.store import ReplicaStore


@dataclass(frozen=True, slots=True)
class LayerStatus:
    """One row of the status table."""

    category: str
    layer: str
    file: str
    present: bool
    age_seconds: float | None  # since last confirmed current (the staleness readiness uses)
    fetched_seconds_ago: float | None  # since last downloaded
    source: str | None
    size: int | None
    sha256: str | None
    upstream_last_updated: int | None
    last_outcome: LastOutcome | None
    rolled_back_from: int | None  # upstream went back in time from this stamp (we followed)
    foreign_changes: int  # times another process rewrote our files (each repaired)
    last_error: str | None
    problem: str | None  # None when the layer is present and fresh


def collect(settings: Settings, *, now: float | None = None) -> list[LayerStatus]:
    """The status of every configured category and layer."""
    now = SYSTEM.now() if now is None else now
    store = ReplicaStore(
        settings.replica_dir, settings.effective_state_dir, max_file_bytes=settings.max_body_bytes
    )
    state = store.load_state()
    keys = layer_keys(settings.categories)
    verdict = staleness(state, keys, now=now, bound_seconds=settings.max_staleness_seconds)
    return [_row(store, state, key, verdict, now, settings) for key in keys]


def _row(
    store: ReplicaStore,
    state: ReplicaState,
    key: LayerKey,
    verdict: Staleness,
    now: float,
    settings: Settings,
) -> LayerStatus:
    category, layer = key
    relpath = relpath_of(key)
    layer_state = state.layer(category, layer)
    record = layer_state.files.get(relpath)
    present = store.path(relpath).is_file()
    return LayerStatus(
        category=category.value,
        layer=layer.value,
        file=str(store.path(relpath)),
        present=present,
        age_seconds=_rounded(age_seconds(layer_state.verified_at, now)),
        fetched_seconds_ago=_rounded(age_seconds(layer_state.fetched_at, now)),
        source=layer_state.source,
        size=record.size if record else None,
        sha256=record.sha256 if record else None,
        upstream_last_updated=layer_state.upstream_last_updated,
        last_outcome=layer_state.last_outcome,
        rolled_back_from=layer_state.rolled_back_from,
        foreign_changes=layer_state.foreign_changes,
        last_error=layer_state.last_error,
        problem=_problem(present, verdict.of(key), layer_state.last_outcome, settings)
        or _unshown(layer_state.unshown_runs),
    )


def _unshown(runs: int) -> str | None:
    """What /readyz fails on besides age: bodies that never show their stamp (freshness.py)."""
    return (
        f"stamp not shown for {runs} runs: {UNSHOWN_CAUSE}" if runs >= UNSHOWN_RUNS_ALARM else None
    )


def _rounded(seconds: float | None) -> float | None:
    # inf: a stamp from the future; it shows as unknown (and the layer as stale), JSON has no inf
    return None if seconds is None or math.isinf(seconds) else round(seconds, 1)


def _problem(
    present: bool, verdict: str | None, outcome: LastOutcome | None, settings: Settings
) -> str | None:
    if not present and outcome is not LastOutcome.ABSENT:
        return "missing"
    if verdict == NEVER:
        return "never synced"
    if verdict == STALE:
        return f"stale (older than {settings.max_staleness_seconds:g} s)"
    return None


def nothing_served(rows: list[LayerStatus]) -> str | None:
    """One plain line when workers have no reference at all, and why; None when they have one."""
    if any(r.present for r in rows):
        return None
    causes = sorted({by_origin(root_cause(r.last_error)) for r in rows if r.last_error})
    if causes:
        why = f"every source failed: {'; '.join(causes)}"
    else:
        why = "no sync has run yet (start the daemon, or run `horde-replica-sync sync --once`)"
    return f"workers have no model reference yet: nothing is published here; {why}"


def render_json(rows: list[LayerStatus], paths: dict[str, str] | None = None) -> str:
    """The rows (full errors), the paths they were read from and the verdict, for scripts."""
    document: dict[str, object] = {
        "layers": [asdict(r) for r in rows],
        "ok": not any(r.problem for r in rows),
        "nothing_served": nothing_served(rows),
    }
    if paths is not None:
        document["paths"] = paths
    return json.dumps(document, indent=2)


def render_table(rows: list[LayerStatus]) -> str:
    """The rows as a table for humans."""
    lines = [
        f"{'category':<21} {'layer':<7} {'age':>8} {'fetched':>8} {'source':<7} {'size':>8} "
        f"{'sha256':<12} {'upstream':>10}  problem / last error"
    ]
    for r in rows:
        age = "-" if r.age_seconds is None else _age(r.age_seconds)
        fetched = "-" if r.fetched_seconds_ago is None else _age(r.fetched_seconds_ago)
        rollback = f"rolled back from {r.rolled_back_from}" if r.rolled_back_from else None
        foreign = (
            f"rewritten by another process {r.foreign_changes}x (a reader not in offline mode?)"
            if r.foreign_changes
            else None
        )
        error = root_cause(r.last_error) if r.last_error else None  # in full: --json
        note = "; ".join(x for x in (r.problem, error, rollback, foreign) if x)
        lines.append(
            f"{r.category:<21} {r.layer:<7} {age:>8} {fetched:>8} {r.source or '-':<7} "
            f"{r.size or 0:>8} {(r.sha256 or '-')[:12]:<12} "
            f"{r.upstream_last_updated or '-':>10}  {note}".rstrip()
        )
    if (verdict := nothing_served(rows)) is not None:
        lines.append(verdict)
    return "\n".join(lines)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
