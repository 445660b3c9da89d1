"""The sync engine: one run, top to bottom.

    run(force)
      1. change detection   PRIMARY metadata (v1 + v2, 2 requests) -> mark_stale(moved)
      2. decide             per category and layer, ask the REPLICA backend (seed API):
                              v2:     should_fetch_data? no -> hit
                                                        yes -> needs_refresh? refresh (why)
                                                               : first load / rejected
                              legacy: is_legacy_cache_valid? (its seed twin)
                            forced, changed upstream, expired, edited on disk, failed last time
      3. per category       one task: each published file read at most once
         (bounded)            -> SourceChain.deliver(layers to fetch)   (chain.py)
                              -> Publisher.publish (store, or a dry run's comparison)
                              -> LayerRun: the layer's state and cache entry, together
         catalogs           one task each, beside them: baselines, text_guidance, licensing
                              -> CatalogSync.sync (catalog_sync.py): checked, fetched when
                                 moved, published like a layer (their only source: the PRIMARY)
      4. report             state saved once, SyncReport (one LayerResult per layer)

    One deadline (run_timeout_seconds) bounds steps 1-3 together; each request has its own.

The engine imports neither prometheus nor apscheduler: metrics and logs read the report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import structlog

from horde_replica_sync.catalog_sync import CatalogRules, CatalogSync
from horde_replica_sync.catalogs import Catalog, Name, catalogs_of, categories_of
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, Layer, spec_for
from horde_replica_sync.chain import (
    Absent,
    Answer,
    Delivery,
    Failure,
    Published,
    RunScope,
    SourceChain,
)
from horde_replica_sync.clock import SYSTEM
from horde_replica_sync.errors import (
    ErrorKind,
    InvalidPayload,
    SourceError,
    SourceName,
    SourceRejected,
    SourceUnavailable,
    StoreError,
)
from horde_replica_sync.freshness import layer_keys
from horde_replica_sync.ports import Primary, Publisher, ReplicaCache
from horde_replica_sync.report import LayerKey, LayerResult, MissReason, Outcome, SyncReport
from horde_replica_sync.state import FileRecord, LastOutcome, LayerState, ReplicaState
from horde_replica_sync.store import sha256_hex

log = structlog.get_logger(__name__)

FLAP_SETTLE_RUNS: Final = 30
"""Runs in a row on the other stamp of a flapping pair before it counts as settled (followed)."""
FLAPPING_CAUSE: Final = (
    "two PRIMARY instances with different data behind one balancer or DNS name, so the "
    "metadata alternates between their stamps"
)
OTHER_WRITER = (
    "another writer on the replica directory, such as an upstream reader not in offline mode "
    "(HORDE_MODEL_REFERENCE_OFFLINE=true)"
)


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """How runs behave; built from the settings (which own every default) by runtime.py."""

    categories: tuple[Name, ...]  # categories and catalogs (catalogs.py)
    max_concurrency: int
    run_timeout_seconds: float
    # The window of data requests the metadata cannot stamp (chain.RunScope.window).
    cache_ttl_seconds: int = 3600
    catalog_rules: CatalogRules = dataclasses.field(default_factory=CatalogRules)


@dataclass(slots=True)
class LayerRun:
    """One layer in one run: why it is fetched, and where its state and cache entry change.

    "Which layer is held and current" is kept twice: in the state (saved, read by /readyz and
    `status`) and in the cache (which decides the next run). Every change goes through here,
    so the two move together; `agrees` is the check that they did.
    """

    category: Name
    layer: Layer
    miss: MissReason | None
    state: LayerState
    cache: ReplicaCache
    elapsed: float = 0.0  # the category's fetch time, shared by its layers

    def held(self, delivery: Delivery, now: float) -> None:
        """`delivery` was published: it is what the layer holds, current."""
        state, main = self.state, delivery.main
        state.source = delivery.source
        state.files = {
            f.relpath: FileRecord(
                sha256=sha256_hex(f.payload.content), size=len(f.payload.content), etag=f.etag
            )
            for f in delivery.files
        }
        state.records = main.payload.records
        state.fetched_at = now
        state.last_outcome, state.last_error = LastOutcome.OK, None
        self.cache.accept(*self._cache_key(), main.payload.content)

    def confirmed(self, now: float) -> None:
        """The metadata says the held bytes are still current (a cache hit, nothing moved)."""
        self.state.verified_at, self.state.unshown_runs = now, 0

    def absent(self, vanished: str | None, now: float) -> None:
        """No source has data: a copy held stays held (`vanished` says so), else none is."""
        state = self.state
        state.last_outcome, state.last_error = LastOutcome.ABSENT, vanished
        state.verified_at = now
        if not state.files:
            self.cache.accept(*self._cache_key(), None)

    def failed(self, outcome: Outcome, error: str) -> None:
        """Nothing new is held; the next run fetches again, even if the metadata is still."""
        self.state.last_outcome, self.state.last_error = LastOutcome.of(outcome), error
        if isinstance(self.category, MODEL_REFERENCE_CATEGORY):  # a catalog retries by its state
            self.cache.invalidate(self.category, self.layer)

    def agrees(self) -> bool:
        """Whether the cache holds the layer as the state's last outcome says: what was
        published ("ok") is held; what failed or was refused is fetched again next run.

        Whether held bytes are still current is the cache's own policy (its TTL, a backend's
        own validation), so "ok" asks only that they are held.
        """
        category = self.category
        if not isinstance(category, MODEL_REFERENCE_CATEGORY):
            return True  # a catalog has no cache entry: its state alone decides
        v2 = self.layer is Layer.V2
        if self.state.last_outcome is LastOutcome.OK:
            return (
                self.cache.has_cached_data(category) if v2 else self.cache.has_legacy_data(category)
            )
        if self.state.last_failed:
            return (
                self.cache.should_fetch_data(category)
                if v2
                else not self.cache.is_legacy_cache_valid(category)
            )
        return True  # absent: nothing, or the copy still held, either way

    def _cache_key(self) -> tuple[MODEL_REFERENCE_CATEGORY, Layer]:
        assert isinstance(self.category, MODEL_REFERENCE_CATEGORY)  # catalogs publish elsewhere
        return self.category, self.layer


class SyncEngine:
    """Runs syncs of one replica: decides through the cache, fetches through the chain."""

    def __init__(
        self,
        cache: ReplicaCache,
        chain: SourceChain,
        publisher: Publisher,
        *,
        primary: Primary | None,
        options: SyncOptions,
        state: ReplicaState,
        dry_run: bool = False,
        clock: Callable[[], float] = SYSTEM.now,
    ) -> None:
        self.cache = cache
        self.chain = chain
        self.publisher = publisher
        self.primary = primary
        self.options = options
        self.state = state  # the one record of what is published and when it was confirmed
        self.dry_run = dry_run
        self._clock = clock
        self._semaphore = asyncio.Semaphore(options.max_concurrency)
        self._catalogs = CatalogSync(primary, publisher, options.catalog_rules, clock=clock)
        # Whether the state holds more than new confirmations since it was last saved durably.
        self._dirty = False
        # Who, of the daemon's own children, changed these files (the hook): set by the daemon.
        self.witness: Callable[[Sequence[str]], str | None] | None = None

    async def run(self, *, force: bool = False) -> SyncReport:
        """One full run over the configured categories."""
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.options.run_timeout_seconds
        scope = await self._detect_changes(force, deadline)
        names = self.options.categories
        misses = {key: self._decide(key, scope) for key in layer_keys(categories_of(names))}
        checks = {
            catalog: self._catalogs.decide(
                catalog, self.state.layer(catalog, Layer.CATALOG), force=force
            )
            for catalog in catalogs_of(names)
        }
        hits = [self._hit(key, scope) for key, miss in misses.items() if miss is None]
        fetched = await self._fetch_all(
            {key: miss for key, miss in misses.items() if miss is not None},
            checks,
            scope,
            deadline,
        )
        by_key = {(r.category, r.layer): r for r in (*hits, *fetched)}
        state_error = self._save_state()
        down = scope.primary_down
        return SyncReport(
            results=tuple(by_key[key] for key in layer_keys(names)),
            forced=force,
            dry_run=self.dry_run,
            duration_seconds=time.perf_counter() - started,
            primary_error=str(down) if down else None,
            primary_error_kind=down.kind if down else None,
            state_error=state_error,
            upstream_last_updated=dict(scope.stamps),
            metadata_unusable=self._metadata_unusable(scope),
            metadata_error_kind=scope.metadata_error.kind if scope.metadata_error else None,
            rollbacks=dict(scope.rollbacks),
        )

    # -- 1. change detection ------------------------------------------------------------

    async def _detect_changes(self, force: bool, deadline: float) -> RunScope:
        ttl = self.options.cache_ttl_seconds
        scope = RunScope(force=force, window=int(self._clock() // ttl * ttl))
        if self.primary is None:
            return scope
        try:
            async with asyncio.timeout_at(deadline):  # the run's deadline covers this too
                stamps = await self.primary.fetch_last_updated()
        except TimeoutError:
            reason = f"not answered within the {self.options.run_timeout_seconds:g} s run timeout"
            scope.primary_down = SourceUnavailable(
                "the PRIMARY's metadata", reason, kind=ErrorKind.RUN_TIMEOUT
            )
            return scope
        except SourceUnavailable as exc:
            scope.primary_down = exc
            return scope
        except SourceError as exc:  # answered, but no usable metadata: fall back to the TTL
            scope.metadata_error = exc  # counted for every category, logged as an outage
            return scope
        scope.primary_answered = True  # usable metadata: this is a PRIMARY
        scope.stamps, scope.operations = self._unflapped(stamps.last_updated), stamps.operations
        scope.legacy_writes = stamps.legacy_writes
        wanted = categories_of(self.options.categories)
        # An unusable entry blinds its category as an unusable document does all: the cache
        # TTL decides (requests keyed by its window), logged as an outage (logs.py), not per run.
        scope.unconfirmed = {c: why for c, why in stamps.unusable.items() if c in wanted}
        scope.moved = frozenset(c for c in wanted if self._moved(c, scope))
        scope.rollbacks = self._rollbacks(scope)
        for category in scope.moved:
            self.cache.mark_stale(category)
        return scope

    def _unflapped(
        self, stamps: dict[MODEL_REFERENCE_CATEGORY, int]
    ) -> dict[MODEL_REFERENCE_CATEGORY, int]:
        """The stamps to follow. A stamp that returns to the one a rollback left is flapping
        between two PRIMARY instances: from then on the newer one's data is held, and the
        other stamp is not followed (no refetch, no rollback) until something else happens."""
        followed = dict(stamps)
        for category, stamp in stamps.items():
            both = self.state.categories.get(category)  # never created for a category not held
            if both is None:
                continue
            state = both.v2
            held, pair = state.upstream_last_updated, state.flapping
            if held is None or (pair is None and stamp != state.rolled_back_from):
                continue
            self._dirty = True
            if pair is None:  # back to the stamp a rollback left: followed, once more
                if stamp > held:
                    state.flapping = (held, stamp)
                    log.warning(
                        "sync.stamps_flapping",
                        category=category.value,
                        stamps=[held, stamp],
                        likely_cause=FLAPPING_CAUSE,
                        action=f"holding {stamp}'s data; {held} is no longer followed",
                    )
            elif stamp == held or (stamp in pair and stamp > held):  # the newer: followed
                state.flap_other_runs = 0
            elif stamp in pair and state.flap_other_runs + 1 < FLAP_SETTLE_RUNS:
                state.flap_other_runs += 1
                followed[category] = held
            else:  # a new stamp, or the other one long enough: no longer flapping
                state.flapping, state.flap_other_runs = None, 0
                log.info("sync.stamps_flapping_ended", category=category.value, upstream=stamp)
        return followed

    def _metadata_unusable(self, scope: RunScope) -> dict[MODEL_REFERENCE_CATEGORY, str]:
        """The categories change detection was blind to: one entry, or the whole document."""
        if scope.metadata_error is None:
            return dict(scope.unconfirmed)
        return dict.fromkeys(categories_of(self.options.categories), str(scope.metadata_error))

    def _rollbacks(self, scope: RunScope) -> dict[MODEL_REFERENCE_CATEGORY, tuple[int, int]]:
        """Categories whose stamp went back: the PRIMARY is followed, but it is made visible."""
        found = {}
        for category in scope.moved:
            held = self.state.layer(category, Layer.V2).upstream_last_updated
            now = scope.stamps[category]
            if held is not None and now < held:
                found[category] = (held, now)
                log.warning(
                    "sync.rollback",
                    category=category.value,
                    held=held,
                    upstream=now,
                    action="publishing what the PRIMARY serves (it is authoritative)",
                )
        return found

    def _moved(self, category: MODEL_REFERENCE_CATEGORY, scope: RunScope) -> bool:
        stamp = scope.stamps.get(category)
        if stamp is None:
            return False
        return any(
            self.state.layer(category, layer).upstream_last_updated != stamp
            for layer in spec_for(category).layers
        )

    # -- 2. decide ----------------------------------------------------------------------

    def _decide(self, key: LayerKey, scope: RunScope) -> MissReason | None:
        """None for a cache hit, else why the layer must be fetched (counted either way)."""
        category, layer = key
        assert isinstance(category, MODEL_REFERENCE_CATEGORY)  # catalogs decide in catalog_sync
        miss = MissReason.FORCED if scope.force else self._ask_cache(category, layer, scope)
        self.cache.count_lookup(category, layer, hit=miss is None)
        return miss

    def _ask_cache(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, scope: RunScope
    ) -> MissReason | None:
        if layer is Layer.V2:
            if not self.cache.should_fetch_data(category):
                return None
            held = self.cache.has_cached_data(category)
            refresh = self.cache.needs_refresh(category)
        else:
            if self.cache.is_legacy_cache_valid(category):
                return None
            held = refresh = self.cache.has_legacy_data(category)  # its seed twin has no more
        if self.state.layer(category, layer).last_failed:
            return MissReason.FAILED_LAST_TIME
        if not held:  # mark_stale on a never-loaded category still makes a first load
            return MissReason.FIRST_LOAD
        if not refresh:  # held and not stale, yet the backend wants it: its own validation
            return MissReason.REJECTED
        if category in scope.moved:
            return MissReason.CHANGED_UPSTREAM
        return self.cache.expiry_reason(category, layer) or MissReason.STALE

    def _hit(self, key: LayerKey, scope: RunScope) -> LayerResult:
        # The PRIMARY's metadata just said nothing moved: that confirms the cached copy.
        confirmed = bool(scope.stamps) and key[0] not in scope.unconfirmed
        if confirmed:
            self._layer_run(*key, None).confirmed(self._clock())
        return LayerResult(*key, Outcome.UNCHANGED, verified=confirmed)

    # -- 3. per category ----------------------------------------------------------------

    async def _fetch_all(
        self,
        misses: dict[LayerKey, MissReason],
        checks: dict[Catalog, MissReason | None],
        scope: RunScope,
        deadline: float,
    ) -> list[LayerResult]:
        wanted: dict[Name, dict[Layer, MissReason]] = {}
        tasks: dict[Name, asyncio.Task[list[LayerResult]]] = {}
        for (category, layer), miss in misses.items():
            wanted.setdefault(category, {})[layer] = miss
        for category, layers in wanted.items():
            assert isinstance(category, MODEL_REFERENCE_CATEGORY)  # layer_keys(categories_of)
            tasks[category] = asyncio.create_task(self._sync_category(category, layers, scope))
        for catalog, check in checks.items():
            # A check cut short by the run timeout was a miss nothing could confirm.
            wanted[catalog] = {Layer.CATALOG: check or MissReason.UNCONFIRMED}
            tasks[catalog] = asyncio.create_task(self._sync_catalog(catalog, check, scope))
        if not tasks:
            return []
        try:
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            done, _ = await asyncio.wait(tasks.values(), timeout=remaining)
        except BaseException:  # the run itself was cancelled (shutdown): keep what is done
            await _cancel(tasks.values())
            self._save_state()
            raise
        await _cancel(tasks.values())  # what the run timeout cut short
        results: list[LayerResult] = []
        for category, task in tasks.items():
            if task in done:
                results.extend(task.result())
            else:
                results.extend(
                    self._timed_out(self._layer_run(category, layer, miss))
                    for layer, miss in wanted[category].items()
                )
        return results

    async def _sync_category(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        layers: dict[Layer, MissReason],
        scope: RunScope,
    ) -> list[LayerResult]:
        async with self._semaphore:
            started = time.perf_counter()
            spec = spec_for(category)
            published = Published(self.publisher)
            answers = await self.chain.deliver(
                category,
                list(layers),
                published=published,
                states={layer: self.state.layer(category, layer) for layer in spec.layers},
                scope=scope,
            )
            elapsed = time.perf_counter() - started
        results = []
        for layer, miss in layers.items():
            run = self._layer_run(category, layer, miss, elapsed)
            foreign = self._foreign_files(run, published)  # before settling
            result = self._settle(run, answers[layer], published, scope)
            results.append(dataclasses.replace(result, foreign_files=foreign))
        return results

    async def _sync_catalog(
        self, catalog: Catalog, check: MissReason | None, scope: RunScope
    ) -> list[LayerResult]:
        async with self._semaphore:
            result = await self._catalogs.sync(catalog, check, self.state, scope)
        if not (result.cache_hit and result.outcome is Outcome.UNCHANGED):
            self._dirty = True  # more than a confirmation
        return [result]

    def _foreign_files(self, run: LayerRun, published: Published) -> tuple[str, ...]:
        """Our files that another process rewrote or removed since we published them.

        Only a layer this process holds can miss as `edited_on_disk` (its validation file's
        mtime moved), so a crash of ours between data and state is never taken for one; the
        bytes are compared too, so a mere touch is not one either.
        """
        if run.miss is not MissReason.EDITED_ON_DISK:
            return ()
        state = run.state
        changed = tuple(
            relpath
            for relpath, record in state.files.items()
            if published.digest(relpath) != record.sha256
        )
        if changed:
            state.foreign_changes += 1
            self._dirty = True
            state.last_foreign_change_at = self._clock()
            log.warning(
                "store.foreign_change",
                category=run.category.value,
                layer=run.layer.value,
                files=list(changed),
                likely_cause=(self.witness(changed) if self.witness else None) or OTHER_WRITER,
                action="repairing from upstream",
            )
        return changed

    def _settle(
        self, run: LayerRun, answer: Answer, published: Published, scope: RunScope
    ) -> LayerResult:
        self._dirty = True  # every answer changes the state: more than a confirmation
        if isinstance(answer, Failure):
            return self._failed(run, answer)
        if isinstance(answer, Absent):
            if self.primary is not None and not scope.primary_answered:
                return self._failed(run, _unproven(run))
            return self._absent(run)
        try:
            return self._publish(run, answer, published, scope)
        except StoreError as exc:
            return self._failed(run, Failure(exc, None))

    # -- publishing and bookkeeping -----------------------------------------------------

    def _publish(
        self, run: LayerRun, delivery: Delivery, published: Published, scope: RunScope
    ) -> LayerResult:
        written = [
            f
            for f in delivery.files
            if self.publisher.publish(
                f.relpath,
                f.payload.content,
                unchanged=published.holds(f.relpath, f.payload.content),
            )
        ]
        self._record_success(run, delivery, scope)
        return LayerResult(
            run.category,
            run.layer,
            Outcome.UPDATED if written else Outcome.UNCHANGED,
            miss=run.miss,
            verified=not delivery.unproven,
            source=delivery.source,
            bytes_downloaded=sum(f.downloaded for f in delivery.files),
            bytes_written=sum(len(f.payload.content) for f in written),
            files_written=len(written),
            duration_seconds=run.elapsed,
            older_answer=delivery.older_answer,
        )

    def _record_success(self, run: LayerRun, delivery: Delivery, scope: RunScope) -> None:
        now = self._clock()
        run.held(delivery, now)
        category, state = run.category, run.state
        assert isinstance(category, MODEL_REFERENCE_CATEGORY)  # catalogs: catalog_sync.py
        if delivery.unshown:  # the bytes held, under a stamp that announced a write
            state.unshown_runs += 1
        elif delivery.unproven:  # the PRIMARY's bytes, not yet shown to be as of its stamp
            state.unproven_stamp = scope.stamps.get(category)
        else:
            self._confirm(category, state, scope, now)

    def _confirm(
        self, category: MODEL_REFERENCE_CATEGORY, state: LayerState, scope: RunScope, now: float
    ) -> None:
        """Record that the layer's bytes are current as of the run's stamp."""
        state.upstream_last_updated = scope.stamps.get(category, state.upstream_last_updated)
        if category in scope.rollbacks:
            state.rolled_back_from = scope.rollbacks[category][0]
        elif category in scope.moved:
            state.rolled_back_from = None
        state.verified_at, state.unproven_stamp, state.unshown_runs = now, None, 0

    def _absent(self, run: LayerRun) -> LayerResult:
        category, layer = run.category, run.layer
        # Nothing is ever deleted: a copy we held stays published, and the loss is flagged.
        vanished = (
            f"upstream has no data for {category.value} {layer.value} any more; "
            "the last good copy is kept"
            if run.state.files
            else None
        )
        if vanished:
            log.warning("sync.data_vanished", category=category.value, layer=layer.value)
        run.absent(vanished, self._clock())
        source = SourceName.PRIMARY if self.primary is not None else None
        return LayerResult(
            category,
            layer,
            Outcome.ABSENT,
            miss=run.miss,
            source=source,
            verified=True,
            duration_seconds=run.elapsed,
            error=vanished,
            error_kind=ErrorKind.VANISHED if vanished else None,
            error_source=source if vanished else None,
        )

    def _failed(self, run: LayerRun, failure: Failure) -> LayerResult:
        error = failure.error
        outcome = Outcome.REFUSED if isinstance(error, InvalidPayload) else Outcome.FAILED
        run.failed(outcome, str(error))
        return LayerResult(
            run.category,
            run.layer,
            outcome,
            miss=run.miss,
            error=str(error),
            error_kind=error.kind,
            error_source=failure.source,
            duration_seconds=run.elapsed,
        )

    def _timed_out(self, run: LayerRun) -> LayerResult:
        error = f"run timed out after {self.options.run_timeout_seconds:g} s"
        run.failed(Outcome.FAILED, error)
        self._dirty = True
        return LayerResult(
            run.category,
            run.layer,
            Outcome.FAILED,
            miss=run.miss,
            error=error,
            error_kind=ErrorKind.RUN_TIMEOUT,
        )

    def _layer_run(
        self, name: Name, layer: Layer, miss: MissReason | None, elapsed: float = 0.0
    ) -> LayerRun:
        return LayerRun(name, layer, miss, self.state.layer(name, layer), self.cache, elapsed)

    def disagreements(self, report: SyncReport) -> list[LayerKey]:
        """The layers of `report` whose cache entry and state disagree (`LayerRun.agrees`).

        Tests check it after every engine run (tests/fakes.py); it asks the cache, so a
        cache that found an entry expired marks it stale, as the next run's decision would.
        """
        return [
            (r.category, r.layer)
            for r in report.results
            if self._recorded(r.category)
            and not self._layer_run(r.category, r.layer, r.miss).agrees()
        ]

    def _recorded(self, name: Name) -> bool:
        """Whether the state has a record of `name` (asking for one would create it)."""
        return name in self.state.categories or name in self.state.catalogs

    def _save_state(self) -> str | None:
        """Write the state; the error, if it could not be written."""
        try:
            self.publisher.save_state(self.state, durable=self._dirty)
        except StoreError as exc:
            # The data went out first, so the replica is fine; a lost state costs only a
            # re-verification at the next start. Tried again after the next run.
            log.error("state.save_failed", error=str(exc))
            return str(exc)
        self._dirty = False
        return None


async def _cancel(tasks: Iterable[asyncio.Task[list[LayerResult]]]) -> None:
    """Stop what is still fetching. A publish is synchronous: never interrupted half-way."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def _unproven(run: LayerRun) -> Failure:
    """A 404 from a server that answered nothing else: a wrong URL, not "no data"."""
    reason = (
        "answered 404, and nothing else from it this run (no usable metadata, no data) shows "
        "it is a PRIMARY: check primary_url"
    )
    error = SourceRejected(
        f"{run.category.value} {run.layer.value}", reason, kind=ErrorKind.UNPROVEN_ABSENCE
    )
    return Failure(error, SourceName.PRIMARY)
