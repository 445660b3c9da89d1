"""One run's side catalogs (catalogs.py): check each against the PRIMARY, publish what moved.

    decide(catalog)   forced / first load / failed last time / edited on disk / expired
                      -> a miss; else None: a check decides
    sync(catalog)     no PRIMARY configured  -> absent: no source (the last good copy stays)
                      the PRIMARY down       -> failed (the last good copy stays)
                      probe (large exports)  -> the revision held? a hit, nothing fetched
                      export (keyed by that revision; an older body is asked for once more
                      past every cache) -> validated, shrink guard -> files published,
                      each only when its bytes changed

The PRIMARY is their only source: GitHub has no copy, so nothing is converted or faked.
Results are ordinary `LayerResult`s keyed (catalog, Layer.CATALOG): metrics, logs, status,
freshness and the on-change hook read them like any layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from horde_replica_sync.catalogs import SPECS, Built, Catalog, CatalogSpec, probe_revision
from horde_replica_sync.categories import Layer
from horde_replica_sync.chain import RunScope
from horde_replica_sync.errors import (
    ErrorKind,
    InvalidPayload,
    ReplicaSyncError,
    SourceName,
    SourceRejected,
    SourceUnavailable,
    StoreError,
)
from horde_replica_sync.ports import Fetched, Primary, Publisher
from horde_replica_sync.report import LayerResult, MissReason, Outcome
from horde_replica_sync.state import FileRecord, LastOutcome, LayerState, ReplicaState
from horde_replica_sync.store import sha256_hex
from horde_replica_sync.validation import check_shrink

log = structlog.get_logger(__name__)

_PRIMARY = SourceName.PRIMARY


@dataclass(frozen=True, slots=True)
class CatalogRules:
    """The settings the catalogs share with the categories."""

    ttl_seconds: float | None = None  # a full fetch at least this often (None: never forced)
    max_shrink_fraction: float | None = None  # None: the shrink guard is off


class CatalogSync:
    """Syncs the catalogs of one replica; the engine runs `sync` as one of its tasks."""

    def __init__(
        self,
        primary: Primary | None,
        publisher: Publisher,
        rules: CatalogRules,
        *,
        clock: Callable[[], float],
    ) -> None:
        self._primary = primary
        self._publisher = publisher
        self._rules = rules
        self._clock = clock

    def decide(self, catalog: Catalog, state: LayerState, *, force: bool) -> MissReason | None:
        """Why the export must be fetched whatever the check says; None: the check decides."""
        if force:
            return MissReason.FORCED
        if state.last_failed:
            return MissReason.FAILED_LAST_TIME
        if not state.files:
            return MissReason.FIRST_LOAD
        if any(
            self._publisher.digest(relpath) != record.sha256
            for relpath, record in state.files.items()
        ):
            return MissReason.EDITED_ON_DISK
        ttl, fetched = self._rules.ttl_seconds, state.fetched_at
        if ttl is not None and (fetched is None or self._clock() - fetched > ttl):
            return MissReason.EXPIRED
        return None

    async def sync(
        self, catalog: Catalog, miss: MissReason | None, state: ReplicaState, scope: RunScope
    ) -> LayerResult:
        """Check, fetch and publish one catalog; never raises for a source or store failure."""
        started = time.perf_counter()
        layer = state.layer(catalog, Layer.CATALOG)
        if self._primary is None:
            return self._absent(
                catalog, layer, miss, "the PRIMARY is not used (use_primary = false)"
            )
        if scope.primary_down is not None:
            error = SourceUnavailable(  # worded like the chain's skip: root_cause reads both
                f"the {catalog.value} catalog (its only source is the PRIMARY; the last good "
                "copy is kept)",
                f"skipped: the PRIMARY is unavailable this run ({scope.primary_down})",
                kind=scope.primary_down.kind,
            )
            return self._failed(catalog, layer, miss, error, started)
        try:
            return await self._fetch(self._primary, SPECS[catalog], layer, miss, started)
        except _NotServed as exc:
            if not scope.primary_answered:  # a 404 from a server not shown to be a PRIMARY
                return self._failed(catalog, layer, miss, exc.error, started)
            reason = f"{exc.error.url} answered 404: this PRIMARY does not serve it"
            return self._absent(catalog, layer, miss, reason)
        except ReplicaSyncError as exc:
            return self._failed(catalog, layer, miss, exc, started)

    async def _fetch(
        self,
        primary: Primary,
        spec: CatalogSpec,
        layer: LayerState,
        miss: MissReason | None,
        started: float,
    ) -> LayerResult:
        held = _held_revision(spec, layer)
        revision, downloaded = None, 0
        if spec.probe is not None:
            page = await _required(primary, spec.probe, spec)
            downloaded += len(page.content)
            revision = probe_revision(f"the {spec.catalog.value} catalog's probe", page.content)
            if miss is None and revision == held:
                return self._confirmed(spec.catalog, layer, downloaded, started)
        export = await _required(primary, spec.export, spec, revision=revision)
        built = _parse(spec, export.url, export.content)
        downloaded += len(export.content)
        if revision is not None and built.revision != revision:
            # A cache stored another revision's body under this key: ask past every cache.
            export = await _required(primary, spec.export, spec, revision=revision, fresh=True)
            built = _parse(spec, export.url, export.content)
            downloaded += len(export.content)
        what = f"the {spec.catalog.value} catalog ({export.url})"
        if self._rules.max_shrink_fraction is not None:
            check_shrink(what, layer.records, built.records, self._rules.max_shrink_fraction)
        return self._publish(spec, layer, miss, built, downloaded, started, held)

    def _publish(
        self,
        spec: CatalogSpec,
        layer: LayerState,
        miss: MissReason | None,
        built: Built,
        downloaded: int,
        started: float,
        held: str | None,
    ) -> LayerResult:
        written = [
            (relpath, content)
            for relpath, content in built.files
            if self._publisher.publish(
                relpath, content, unchanged=self._publisher.holds(relpath, content)
            )
        ]
        now = self._clock()
        main = built.files[0][0]
        layer.source = _PRIMARY
        layer.files = {
            relpath: FileRecord(
                sha256=sha256_hex(content),
                size=len(content),
                etag=built.revision if relpath == main else None,
            )
            for relpath, content in built.files
        }
        layer.records = built.records
        layer.fetched_at = layer.verified_at = now
        layer.last_outcome, layer.last_error = LastOutcome.OK, None
        if miss is None and (written or built.revision != held):
            miss = MissReason.CHANGED_UPSTREAM  # the check found a change
        return LayerResult(
            spec.catalog,
            Layer.CATALOG,
            Outcome.UPDATED if written else Outcome.UNCHANGED,
            miss=miss,
            source=_PRIMARY,
            verified=True,
            bytes_downloaded=downloaded,
            bytes_written=sum(len(content) for _, content in written),
            files_written=len(written),
            duration_seconds=time.perf_counter() - started,
        )

    def _confirmed(
        self, catalog: Catalog, layer: LayerState, downloaded: int, started: float
    ) -> LayerResult:
        layer.verified_at = self._clock()
        return LayerResult(
            catalog,
            Layer.CATALOG,
            Outcome.UNCHANGED,
            source=_PRIMARY,
            verified=True,
            bytes_downloaded=downloaded,
            duration_seconds=time.perf_counter() - started,
        )

    def _absent(
        self, catalog: Catalog, layer: LayerState, miss: MissReason | None, why: str
    ) -> LayerResult:
        """No source has the catalog (like a category GitHub has no copy of): nothing is
        faked and nothing deleted; the result and the status say so."""
        kept = "the last good copy is kept" if layer.files else "none is held"
        error = (
            f"the {catalog.value} catalog comes only from the PRIMARY and {why}; {kept} "
            "(upstream's readers use their wheel's copy when none is)"
        )
        log.warning("sync.catalog_no_source", catalog=catalog.value, error=error)
        layer.last_outcome, layer.last_error = LastOutcome.ABSENT, error
        layer.verified_at = self._clock()
        return LayerResult(
            catalog,
            Layer.CATALOG,
            Outcome.ABSENT,
            miss=miss or MissReason.UNCONFIRMED,
            verified=True,
            error=error,
            # Counted only when a PRIMARY that served the catalog stops serving it.
            error_kind=ErrorKind.VANISHED if layer.files and self._primary else None,
        )

    def _failed(
        self,
        catalog: Catalog,
        layer: LayerState,
        miss: MissReason | None,
        error: ReplicaSyncError,
        started: float,
    ) -> LayerResult:
        outcome = Outcome.REFUSED if isinstance(error, InvalidPayload) else Outcome.FAILED
        layer.last_outcome, layer.last_error = LastOutcome.of(outcome), str(error)
        log.warning(
            "sync.catalog_kept",
            catalog=catalog.value,
            outcome=outcome.value,
            error=str(error),
            action="the last good copy is kept",
        )
        return LayerResult(
            catalog,
            Layer.CATALOG,
            outcome,
            miss=miss or MissReason.UNCONFIRMED,
            error=str(error),
            error_kind=error.kind,
            error_source=_PRIMARY if not isinstance(error, StoreError) else None,
            duration_seconds=time.perf_counter() - started,
        )


class _NotServed(Exception):
    """A catalog endpoint answered 404: a PRIMARY without the catalog, or a wrong URL."""

    def __init__(self, error: SourceRejected) -> None:
        self.error = error


async def _required(
    primary: Primary,
    path: str,
    spec: CatalogSpec,
    *,
    revision: str | None = None,
    fresh: bool = False,
) -> Fetched:
    fetched = await primary.fetch_catalog(path, revision=revision, fresh=fresh)
    if fetched is None:
        url = primary.catalog_url(path)
        reason = f"answered 404, and the {spec.catalog.value} catalog has no other source"
        raise _NotServed(SourceRejected(url, reason, kind=ErrorKind.HTTP_4XX, status=404))
    return fetched


def _parse(spec: CatalogSpec, url: str, content: bytes) -> Built:
    return spec.parse(f"the {spec.catalog.value} catalog ({url})", content)


def _held_revision(spec: CatalogSpec, layer: LayerState) -> str | None:
    record = layer.files.get(spec.relpaths[0])
    return record.etag if record else None
