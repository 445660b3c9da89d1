"""What one sync run did: plain frozen data that the engine produces and logs and metrics read.

Nothing here does I/O or imports the engine, so consumers (logs.py, metrics.py, the CLI) depend
on the report's shape alone.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from horde_replica_sync.catalogs import Name
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, Layer
from horde_replica_sync.errors import ErrorKind, SourceName

LayerKey = tuple[Name, Layer]  # a category's layer, or a catalog and Layer.CATALOG


class Outcome(enum.StrEnum):
    """What happened to one layer of one category in one run."""

    UNCHANGED = "unchanged"  # verified (or still fresh in cache): nothing written
    UPDATED = "updated"  # new bytes published
    ABSENT = "absent"  # no source has data for it; nothing published
    REFUSED = "refused"  # a body arrived but failed validation; last good copy kept
    FAILED = "failed"  # no body could be fetched; last good copy kept

    @property
    def ok(self) -> bool:
        """Whether the replica is as fresh as upstream allows for this layer."""
        return self not in (Outcome.REFUSED, Outcome.FAILED)


class MissReason(enum.StrEnum):
    """Why the REPLICA backend's cache could not answer for a layer (a bounded label)."""

    FIRST_LOAD = "first_load"  # nothing held yet: `should_fetch_data` without `needs_refresh`
    CHANGED_UPSTREAM = "changed_upstream"  # the PRIMARY's metadata moved (mark_stale)
    EXPIRED = "expired"  # the cache TTL elapsed: a periodic re-verification
    EDITED_ON_DISK = "edited_on_disk"  # the published file changed under us
    FORCED = "forced"  # SIGUSR1 / --force
    FAILED_LAST_TIME = "failed_last_time"  # the previous attempt failed or was refused
    STALE = "stale"  # marked stale by someone else (an in-process caller)
    UNCONFIRMED = "unconfirmed"  # a catalog whose check could not confirm it (catalog_sync.py)
    REJECTED = "rejected"  # held and not stale, but the backend's own validation said fetch


@dataclass(frozen=True, slots=True)
class LayerResult:
    """The outcome of one layer of one category (or of one catalog) in one run."""

    category: Name
    layer: Layer
    outcome: Outcome
    miss: MissReason | None = None  # None: a cache hit, nothing fetched
    source: SourceName | None = None
    bytes_downloaded: int = 0
    bytes_written: int = 0
    files_written: int = 0
    duration_seconds: float = 0.0
    error: str | None = None
    error_kind: ErrorKind | None = None
    error_source: SourceName | None = None
    verified: bool = False  # confirmed current this run (fetched, or metadata unchanged)
    foreign_files: tuple[str, ...] = ()  # our files another process rewrote or removed
    # The first answer was older than its metadata (a cache), so it was asked for again.
    older_answer: str | None = None

    @property
    def cache_hit(self) -> bool:
        """Whether the cache answered and nothing was fetched."""
        return self.miss is None


@dataclass(frozen=True, slots=True)
class SyncReport:
    """Everything one run did."""

    results: tuple[LayerResult, ...]
    forced: bool
    dry_run: bool
    duration_seconds: float
    primary_error: str | None = None
    primary_error_kind: ErrorKind | None = None
    state_error: str | None = None  # the state file could not be written (data is fine)
    # The PRIMARY's metadata stamps seen this run (empty when it could not be read).
    upstream_last_updated: Mapping[MODEL_REFERENCE_CATEGORY, int] = field(default_factory=dict)
    # Categories whose metadata entry could not be used, with the reason (counted, logged).
    metadata_unusable: Mapping[MODEL_REFERENCE_CATEGORY, str] = field(default_factory=dict)
    # Set when the whole metadata was unusable (then every category is in `metadata_unusable`).
    metadata_error_kind: ErrorKind | None = None
    # Categories whose upstream stamp went back in time: (the stamp held, the stamp now).
    rollbacks: Mapping[MODEL_REFERENCE_CATEGORY, tuple[int, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every layer ended fresh or verifiably absent.

        A run that could not reach the PRIMARY is not ok unless every layer was verified
        another way: what it served from cache, it could not confirm.
        """
        if self.state_error is not None or not all(r.outcome.ok for r in self.results):
            return False
        return self.primary_error is None or all(r.verified for r in self.results)

    @property
    def failed(self) -> tuple[LayerResult, ...]:
        """The layers that failed or were refused."""
        return tuple(r for r in self.results if not r.outcome.ok)

    @property
    def changed(self) -> tuple[Name, ...]:
        """The categories with at least one layer updated, in run order, once each."""
        return tuple(
            dict.fromkeys(r.category for r in self.results if r.outcome is Outcome.UPDATED)
        )

    @property
    def nothing_served(self) -> bool:
        """Workers have no reference at all: every layer failed, none held from before."""
        return bool(self.results) and all(
            not r.outcome.ok and r.miss is MissReason.FIRST_LOAD for r in self.results
        )

    @property
    def held(self) -> tuple[Name, ...]:
        """The categories with at least one layer in the replica after this run (published or
        confirmed), in run order, once each."""
        kept = (Outcome.UPDATED, Outcome.UNCHANGED)
        return tuple(dict.fromkeys(r.category for r in self.results if r.outcome in kept))
