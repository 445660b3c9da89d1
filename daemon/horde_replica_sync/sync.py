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
from dataclasses import dataclass, field

import structlog

from horde_replica_sync.backends.replica import ReplicaDirectoryBackend
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, spec_for
from horde_replica_sync.errors import (
    InvalidPayload,
    ReplicaSyncError,
    SourceError,
    SourceUnavailable,
)
from horde_replica_sync.sources.github import GithubSource, NotModified
from horde_replica_sync.sources.primary import Fetched, PrimarySource
from horde_replica_sync.state import FileRecord, Layer, LayerState, ReplicaState, SourceName
from horde_replica_sync.store import ReplicaStore, relpath_for, sha256_hex
from horde_replica_sync.validation import (
    Payload,
    check_shrink,
    parse_json_records,
    parse_models_csv,
)

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


@dataclass(frozen=True, slots=True)
class SyncReport:
    """Everything one run did."""

    results: tuple[LayerResult, ...]
    forced: bool
    dry_run: bool
    duration_seconds: float
    primary_error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every layer ended fresh or verifiably absent."""
        return all(r.outcome.ok for r in self.results)

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


@dataclass(slots=True)
class _Run:
    """Per-run facts shared by the category tasks."""

    force: bool
    stamps: dict[MODEL_REFERENCE_CATEGORY, int] = field(default_factory=dict)
    primary_down: SourceError | None = None


@dataclass(frozen=True, slots=True)
class _File:
    """One validated file of a delivery."""

    relpath: str
    payload: Payload
    etag: str | None
    downloaded: int


@dataclass(frozen=True, slots=True)
class _Delivery:
    """A layer's validated files from one source; the main file comes last."""

    source: SourceName
    files: tuple[_File, ...]


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
        self.github = github
        self.options = options
        self.state = state if state is not None else store.load_state()
        self._clock = clock
        self._dirty = False
        self._semaphore = asyncio.Semaphore(options.max_concurrency)

    async def run(self, *, force: bool = False) -> SyncReport:
        """One full run over the configured categories."""
        run = _Run(force=force)
        await self._detect_changes(run)
        return await self._sync(self.options.categories, run)

    async def refresh(
        self, categories: Iterable[MODEL_REFERENCE_CATEGORY], *, force: bool = False
    ) -> SyncReport:
        """Sync `categories` now, trusting the cache where it is valid (no metadata poll)."""
        return await self._sync(tuple(categories), _Run(force=force))

    # -- change detection ---------------------------------------------------------------

    async def _detect_changes(self, run: _Run) -> None:
        if self.primary is None:
            return
        try:
            run.stamps = await self.primary.fetch_last_updated()
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
        layers = [Layer.V2, Layer.LEGACY] if spec_for(category).has_legacy else [Layer.V2]
        return any(self.state.layer(category, lr).upstream_last_updated != stamp for lr in layers)

    # -- the run ------------------------------------------------------------------------

    async def _sync(
        self, categories: tuple[MODEL_REFERENCE_CATEGORY, ...], run: _Run
    ) -> SyncReport:
        started = time.perf_counter()
        targets = [
            (category, layer)
            for category in categories
            for layer in (Layer.V2, Layer.LEGACY)
            if layer is Layer.V2 or spec_for(category).has_legacy
        ]
        tasks = [asyncio.create_task(self._sync_target(c, lr, run)) for c, lr in targets]
        done, pending = await asyncio.wait(tasks, timeout=self.options.run_timeout_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        results = tuple(
            task.result() if task in done else self._timed_out(c, lr)
            for task, (c, lr) in zip(tasks, targets, strict=True)
        )
        self._save_state()
        return SyncReport(
            results=results,
            forced=run.force,
            dry_run=self.options.dry_run,
            duration_seconds=time.perf_counter() - started,
            primary_error=str(run.primary_down) if run.primary_down else None,
        )

    def _timed_out(self, category: MODEL_REFERENCE_CATEGORY, layer: Layer) -> LayerResult:
        error = f"run timed out after {self.options.run_timeout_seconds:g} s"
        self._record_error(category, layer, Outcome.FAILED, error)
        return LayerResult(category, layer, Outcome.FAILED, error=error)

    async def _sync_target(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, run: _Run
    ) -> LayerResult:
        started = time.perf_counter()
        if not run.force and self.backend.cached(category, layer):
            return LayerResult(category, layer, Outcome.UNCHANGED, cache_hit=True)
        async with self._semaphore:
            try:
                result = await self._fetch_and_publish(category, layer, run)
            except ReplicaSyncError as exc:
                outcome = Outcome.REFUSED if isinstance(exc, InvalidPayload) else Outcome.FAILED
                self._record_error(category, layer, outcome, str(exc))
                result = LayerResult(category, layer, outcome, error=str(exc))
        return _with_duration(result, time.perf_counter() - started)

    async def _fetch_and_publish(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, run: _Run
    ) -> LayerResult:
        delivery = await self._deliver(category, layer, run)
        if delivery is None:
            return self._absent(category, layer)
        written = [] if self.options.dry_run else self._publish(delivery)
        if not self.options.dry_run:
            self._record_success(category, layer, delivery, run)
        changed = written if not self.options.dry_run else self._would_change(delivery)
        return LayerResult(
            category,
            layer,
            Outcome.UPDATED if changed else Outcome.UNCHANGED,
            source=delivery.source,
            bytes_downloaded=sum(f.downloaded for f in delivery.files),
            bytes_written=sum(len(f.payload.content) for f in delivery.files if f in written),
            files_written=len(written),
        )

    # -- fetching -----------------------------------------------------------------------

    async def _deliver(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, run: _Run
    ) -> _Delivery | None:
        """Fetch and validate a layer: the PRIMARY first, GitHub only when it is unavailable."""
        try:
            return await self._from_primary(category, layer, run)
        except SourceUnavailable as exc:
            run.primary_down = run.primary_down or exc
            if not self._can_fall_back(category, layer):
                raise
        return await self._from_github(category)

    async def _from_primary(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, run: _Run
    ) -> _Delivery | None:
        if self.primary is None:
            if layer is Layer.V2:  # GitHub serves no v2 layer: nothing to publish
                return None
            url, reason = "(none)", "no PRIMARY is configured"
            raise SourceUnavailable(url, reason)
        if run.primary_down is not None:  # seen down this run: don't wait on it again
            url = self.primary.v2_url(category)
            reason = f"skipped: the PRIMARY is unavailable this run ({run.primary_down})"
            raise SourceUnavailable(url, reason)
        fetch = self.primary.fetch_v2 if layer is Layer.V2 else self.primary.fetch_legacy
        fetched = await fetch(category)
        if fetched is None:
            return None
        relpath = relpath_for(category, layer)
        return _Delivery("primary", (self._validated(category, layer, relpath, fetched),))

    def _can_fall_back(self, category: MODEL_REFERENCE_CATEGORY, layer: Layer) -> bool:
        return (
            layer is Layer.LEGACY
            and self.github is not None
            and self.options.github_fallback
            and spec_for(category).github_repo is not None
        )

    async def _from_github(self, category: MODEL_REFERENCE_CATEGORY) -> _Delivery:
        assert self.github is not None
        spec = spec_for(category)
        assert spec.github_repo is not None
        state = self.state.layer(category, Layer.LEGACY)
        files = []
        for name in spec.github_files:
            relpath = relpath_for(category, Layer.LEGACY, name)
            etag, published = self._conditional(relpath, state)
            answer = await self.github.fetch(spec.github_repo, name, etag)
            if isinstance(answer, NotModified):
                assert published is not None
                answer = Fetched(answer.url, published, answer.etag)
                files.append(self._validated(category, Layer.LEGACY, relpath, answer, downloaded=0))
            else:
                files.append(self._validated(category, Layer.LEGACY, relpath, answer))
        # The JSON file readers load is the layer's main file; publish it last.
        main = relpath_for(category, Layer.LEGACY)
        files.sort(key=lambda f: f.relpath == main)
        return _Delivery("github", tuple(files))

    def _conditional(self, relpath: str, state: LayerState) -> tuple[str | None, bytes | None]:
        """The ETag to send, only when the published file is exactly what it describes."""
        record = state.files.get(relpath)
        if record is None or record.etag is None:
            return None, None
        published = self.store.read(relpath)
        if published is None or sha256_hex(published) != record.sha256:
            return None, None
        return record.etag, published

    def _validated(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        layer: Layer,
        relpath: str,
        fetched: Fetched,
        *,
        downloaded: int | None = None,
    ) -> _File:
        what = f"{category.value} {layer.value} {relpath} from {fetched.url}"
        if relpath.endswith(".csv"):
            payload = parse_models_csv(what, fetched.content)
        else:
            payload = parse_json_records(what, fetched.content)
            if not self.options.allow_shrink and relpath == relpath_for(category, layer):
                previous = self.state.layer(category, layer).records
                check_shrink(what, previous, payload.records, self.options.max_shrink_fraction)
        size = len(fetched.content) if downloaded is None else downloaded
        return _File(relpath, payload, fetched.etag, size)

    # -- publishing and bookkeeping -----------------------------------------------------

    def _publish(self, delivery: _Delivery) -> list[_File]:
        return [f for f in delivery.files if self.store.publish(f.relpath, f.payload.content)]

    def _would_change(self, delivery: _Delivery) -> list[_File]:
        return [f for f in delivery.files if self.store.read(f.relpath) != f.payload.content]

    def _record_success(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        layer: Layer,
        delivery: _Delivery,
        run: _Run,
    ) -> None:
        now = self._clock()
        state = self.state.layer(category, layer)
        main = delivery.files[-1]
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

    def _absent(self, category: MODEL_REFERENCE_CATEGORY, layer: Layer) -> LayerResult:
        if not self.options.dry_run:
            state = self.state.layer(category, layer)
            state.last_outcome, state.last_error = Outcome.ABSENT.value, None
            state.verified_at = self._clock()
            self._dirty = True
            self.backend.accept(category, layer, None)
        return LayerResult(category, layer, Outcome.ABSENT, source="primary")

    def _record_error(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, outcome: Outcome, error: str
    ) -> None:
        if self.options.dry_run:
            return
        state = self.state.layer(category, layer)
        state.last_outcome, state.last_error = outcome.value, error
        self._dirty = True
        self.backend.invalidate(category, layer)  # retry next run, even if metadata is still

    def _save_state(self) -> None:
        if self._dirty and not self.options.dry_run:
            self.store.save_state(self.state)
            self._dirty = False


def _with_duration(result: LayerResult, seconds: float) -> LayerResult:
    return dataclasses.replace(result, duration_seconds=seconds)
