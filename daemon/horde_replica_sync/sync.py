"""One sync run: change detection, fetch what is stale, validate, publish, report.

    run()  -> PRIMARY metadata (2 requests) -> mark_stale() what moved upstream
           -> per category and layer: valid cache? -> hit, nothing to do
                                      else         -> fetch (PRIMARY; GitHub when unavailable)
                                                   -> validate -> publish -> state -> cache
           -> SyncReport (one LayerResult per category and layer)

The engine imports neither prometheus nor apscheduler: metrics and logs consume the report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from horde_replica_sync.backends.replica import ReplicaDirectoryBackend
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, Layer, spec_for
from horde_replica_sync.delivery import DeliveredFile, Deliverer, Delivery, RunContext
from horde_replica_sync.errors import (
    InvalidPayload,
    ReplicaSyncError,
    SourceError,
    SourceName,
    SourceUnavailable,
    StoreError,
)
from horde_replica_sync.sources.github import GithubSource
from horde_replica_sync.sources.primary import PrimarySource
from horde_replica_sync.state import FileRecord, ReplicaState
from horde_replica_sync.store import ReplicaStore, sha256_hex

log = structlog.get_logger(__name__)


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


@dataclass(frozen=True, slots=True)
class LayerResult:
    """The outcome of one layer of one category in one run."""

    category: MODEL_REFERENCE_CATEGORY
    layer: Layer
    outcome: Outcome
    source: SourceName | None = None
    cache_hit: bool = False
    bytes_downloaded: int = 0
    bytes_written: int = 0
    files_written: int = 0
    duration_seconds: float = 0.0
    error: str | None = None
    error_kind: str | None = None  # bounded: timeout, http_5xx, invalid, shrink, ...
    error_source: SourceName | None = None
    verified: bool = False  # confirmed current this run (fetched, or metadata unchanged)


@dataclass(frozen=True, slots=True)
class SyncReport:
    """Everything one run did."""

    results: tuple[LayerResult, ...]
    forced: bool
    dry_run: bool
    duration_seconds: float
    primary_error: str | None = None
    primary_error_kind: str | None = None
    state_error: str | None = None  # the state file could not be written (data is fine)

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


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """How runs behave; built from the settings by the composition root."""

    categories: tuple[MODEL_REFERENCE_CATEGORY, ...] = tuple(MODEL_REFERENCE_CATEGORY)
    github_fallback: bool = True
    max_concurrency: int = 4
    run_timeout_seconds: float = 300.0
    max_shrink_fraction: float = 0.5
    allow_shrink: bool = False
    dry_run: bool = False


class SyncEngine:
    """Runs syncs of one replica from its sources."""

    def __init__(
        self,
        backend: ReplicaDirectoryBackend,
        store: ReplicaStore,
        *,
        primary: PrimarySource | None,
        github: GithubSource | None,
        options: SyncOptions,
        state: ReplicaState | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.store = store
        self.primary = primary
        self.options = options
        self.state = state if state is not None else store.load_state()
        self._clock = clock
        self._dirty = False
        # When each layer was last confirmed current; a metadata poll that shows no change
        # confirms cached layers without touching the state file.
        self.confirmed_at: dict[tuple[MODEL_REFERENCE_CATEGORY, Layer], float] = {
            (category, layer): layer_state.verified_at
            for category, category_state in self.state.categories.items()
            for layer in Layer
            if (layer_state := category_state.layer(layer)).verified_at is not None
        }
        self.upstream_last_updated: dict[MODEL_REFERENCE_CATEGORY, int] = {}
        self._semaphore = asyncio.Semaphore(options.max_concurrency)
        self._deliverer = Deliverer(
            store,
            self.state,
            primary=primary,
            github=github,
            github_fallback=options.github_fallback,
            max_shrink_fraction=None if options.allow_shrink else options.max_shrink_fraction,
        )

    async def run(self, *, force: bool = False) -> SyncReport:
        """One full run over the configured categories."""
        run = RunContext(force=force)
        await self._detect_changes(run)
        return await self._sync(self.options.categories, run)

    async def refresh(
        self, categories: Iterable[MODEL_REFERENCE_CATEGORY], *, force: bool = False
    ) -> SyncReport:
        """Sync `categories` now, trusting the cache where it is valid (no metadata poll)."""
        return await self._sync(tuple(categories), RunContext(force=force))

    # -- change detection ---------------------------------------------------------------

    async def _detect_changes(self, run: RunContext) -> None:
        if self.primary is None:
            return
        try:
            run.stamps = await self.primary.fetch_last_updated()
            self.upstream_last_updated = dict(run.stamps)
        except SourceUnavailable as exc:
            run.primary_down = exc
            return
        except SourceError as exc:  # answered, but no usable metadata: fall back to the TTL
            log.warning("sync.metadata_unusable", error=str(exc))
            return
        for category in self.options.categories:
            if self._moved(category, run.stamps.get(category)):
                self.backend.mark_stale(category)

    def _moved(self, category: MODEL_REFERENCE_CATEGORY, stamp: int | None) -> bool:
        if stamp is None:
            return False
        return any(
            self.state.layer(category, layer).upstream_last_updated != stamp
            for layer in spec_for(category).layers
        )

    # -- the run ------------------------------------------------------------------------

    async def _sync(
        self, categories: tuple[MODEL_REFERENCE_CATEGORY, ...], run: RunContext
    ) -> SyncReport:
        started = time.perf_counter()
        targets = [
            (category, layer) for category in categories for layer in spec_for(category).layers
        ]
        tasks = [asyncio.create_task(self._sync_target(c, lr, run)) for c, lr in targets]
        try:
            done, _ = await asyncio.wait(tasks, timeout=self.options.run_timeout_seconds)
        except BaseException:  # the run itself was cancelled (shutdown): keep what is done
            await _cancel(tasks)
            self._save_state()
            raise
        await _cancel(tasks)  # what the run timeout cut short
        results = tuple(
            task.result() if task in done else self._timed_out(c, lr)
            for task, (c, lr) in zip(tasks, targets, strict=True)
        )
        state_error = self._save_state()
        now = self._clock()
        self.confirmed_at.update({(r.category, r.layer): now for r in results if r.verified})
        return SyncReport(
            results=results,
            forced=run.force,
            dry_run=self.options.dry_run,
            duration_seconds=time.perf_counter() - started,
            primary_error=str(run.primary_down) if run.primary_down else None,
            primary_error_kind=run.primary_down.kind if run.primary_down else None,
            state_error=state_error,
        )

    def _timed_out(self, category: MODEL_REFERENCE_CATEGORY, layer: Layer) -> LayerResult:
        error = f"run timed out after {self.options.run_timeout_seconds:g} s"
        self._record_error(category, layer, Outcome.FAILED, error)
        return LayerResult(category, layer, Outcome.FAILED, error=error, error_kind="run_timeout")

    async def _sync_target(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, run: RunContext
    ) -> LayerResult:
        started = time.perf_counter()
        if not run.force and self.backend.cached(category, layer):
            confirmed = bool(run.stamps)  # the PRIMARY just said nothing moved
            return LayerResult(
                category, layer, Outcome.UNCHANGED, cache_hit=True, verified=confirmed
            )
        async with self._semaphore:
            try:
                result = await self._fetch_and_publish(category, layer, run)
            except ReplicaSyncError as exc:
                result = self._failure(category, layer, exc)
        return dataclasses.replace(result, duration_seconds=time.perf_counter() - started)

    def _failure(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, exc: ReplicaSyncError
    ) -> LayerResult:
        outcome = Outcome.REFUSED if isinstance(exc, InvalidPayload) else Outcome.FAILED
        self._record_error(category, layer, outcome, str(exc))
        return LayerResult(
            category, layer, outcome, error=str(exc), error_kind=exc.kind, error_source=exc.source
        )

    async def _fetch_and_publish(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, run: RunContext
    ) -> LayerResult:
        delivery = await self._deliverer.deliver(category, layer, run)
        if delivery is None:
            return self._absent(category, layer, "primary" if self.primary else None)
        written = [] if self.options.dry_run else self._publish(delivery)
        if not self.options.dry_run:
            self._record_success(category, layer, delivery, run)
        changed = written if not self.options.dry_run else self._would_change(delivery)
        return LayerResult(
            category,
            layer,
            Outcome.UPDATED if changed else Outcome.UNCHANGED,
            verified=True,
            source=delivery.source,
            bytes_downloaded=sum(f.downloaded for f in delivery.files),
            bytes_written=sum(len(f.payload.content) for f in delivery.files if f in written),
            files_written=len(written),
        )

    # -- publishing and bookkeeping -----------------------------------------------------

    def _publish(self, delivery: Delivery) -> list[DeliveredFile]:
        return [f for f in delivery.files if self.store.publish(f.relpath, f.payload.content)]

    def _would_change(self, delivery: Delivery) -> list[DeliveredFile]:
        return [f for f in delivery.files if self.store.read(f.relpath) != f.payload.content]

    def _record_success(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        layer: Layer,
        delivery: Delivery,
        run: RunContext,
    ) -> None:
        now = self._clock()
        state = self.state.layer(category, layer)
        main = delivery.main
        state.source = delivery.source
        state.files = {
            f.relpath: FileRecord(
                sha256=sha256_hex(f.payload.content), size=len(f.payload.content), etag=f.etag
            )
            for f in delivery.files
        }
        state.records = main.payload.records
        state.upstream_last_updated = run.stamps.get(category, state.upstream_last_updated)
        if any(f.downloaded for f in delivery.files):
            state.fetched_at = now
        state.verified_at = now
        state.last_outcome, state.last_error = "ok", None
        self._dirty = True
        text = main.payload.content.decode("utf-8") if main.payload.data is not None else None
        self.backend.accept(category, layer, main.payload.data, text)

    def _absent(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, source: SourceName | None
    ) -> LayerResult:
        if not self.options.dry_run:
            state = self.state.layer(category, layer)
            state.last_outcome, state.last_error = Outcome.ABSENT.value, None
            state.verified_at = self._clock()
            self._dirty = True
            self.backend.accept(category, layer, None)
        return LayerResult(category, layer, Outcome.ABSENT, source=source, verified=True)

    def _record_error(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, outcome: Outcome, error: str
    ) -> None:
        if self.options.dry_run:
            return
        state = self.state.layer(category, layer)
        state.last_outcome, state.last_error = outcome.value, error
        self._dirty = True
        self.backend.invalidate(category, layer)  # retry next run, even if metadata is still

    def _save_state(self) -> str | None:
        """Write the state if it changed; the error, if it could not be written."""
        if not self._dirty or self.options.dry_run:
            return None
        try:
            self.store.save_state(self.state)
        except StoreError as exc:
            # The data went out first, so the replica is fine; a lost state costs only a
            # re-verification at the next start. Tried again after the next run.
            log.error("state.save_failed", error=str(exc))
            return str(exc)
        self._dirty = False
        return None


async def _cancel(tasks: list[asyncio.Task[LayerResult]]) -> None:
    """Stop what is still fetching. A publish is synchronous: never interrupted half-way."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
