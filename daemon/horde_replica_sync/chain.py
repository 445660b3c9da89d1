"""The source chain: validated bytes for the layers of one category, from the best source.

    deliver(category, layers)
      -> PRIMARY: v2/{category} and v1/{name}, each layer on its own   (404 -> absent)
           keyed by the stamp it must be as new as (legacy: and its v2 body's digest), or,
           when the metadata cannot stamp the category, by the TTL window (still cacheable);
           a v2 body older than that stamp (evidence.py) is asked for again past every
           cache, and so is the rest of the category this run; still older: the PRIMARY's
           own, published but unproven (its stamp not recorded) unless the last run's was too;
           still the very bytes held: never recorded, counted (`unshown_runs`, /readyz)
      -> unavailable? GitHub, when the category has a GitHub copy:
           download the category's files once -> legacy layer as is
                                              -> v2 layer converted from them (convert/)
      -> per layer: a Delivery (validated files), ABSENT, or a Failure naming its source

GitHub is asked only when the PRIMARY is *unavailable* (never when it answered 404, which
means "no data there"). A failing endpoint fails its own category only; the PRIMARY counts
as down for the rest of a run (`RunScope.primary_down`, skipped instead of waited on) only on
evidence about the server rather than one endpoint: its metadata unreachable, or
connection-level failures (refused, reset, timed out) on `SERVER_DOWN_AFTER` different
categories. Nothing here writes: the engine publishes what comes back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, Layer, is_csv, spec_for
from horde_replica_sync.errors import (
    ErrorKind,
    InvalidPayload,
    ReplicaSyncError,
    SourceError,
    SourceName,
    SourceUnavailable,
)
from horde_replica_sync.evidence import Evidence, judge
from horde_replica_sync.freshness import UNSHOWN_CAUSE
from horde_replica_sync.ports import DataKey, Fetched, Github, NotModified, Operation, Primary
from horde_replica_sync.state import LayerState
from horde_replica_sync.store import sha256_hex
from horde_replica_sync.validation import (
    Payload,
    check_shrink,
    parse_json_records,
    parse_models_csv,
)

DIGEST_KEY_CHARS: Final = 16  # 64 bits of a sha256: a key nobody can name in advance
SERVER_DOWN_AFTER: Final = 2
"""Categories whose endpoints failed at the connection level before the server counts as down."""
CONNECTION_LEVEL: Final = frozenset({ErrorKind.CONNECTION, ErrorKind.TLS, ErrorKind.TIMEOUT})


class PublishedFiles(Protocol):
    """Where a category's published files are read, digested and compared (the publisher)."""

    def read(self, relpath: str) -> bytes | None:
        """The published bytes of `relpath`; None when missing."""
        ...

    def digest(self, relpath: str) -> str | None:
        """Their sha256, streamed."""
        ...

    def holds(self, relpath: str, content: bytes) -> bool:
        """Whether they are exactly `content`, compared a chunk at a time."""
        ...


class Published:
    """A category's published files, each read at most once per run, and only when needed.

    Lazily: the old bytes are read whole only where they are needed whole (a 304's body, the
    shrink guard without a recorded count); a digest or a comparison with the new bytes is
    streamed from the file, so a run never holds both copies of a large file.
    """

    def __init__(self, files: PublishedFiles) -> None:
        self._source = files
        self._files: dict[str, bytes | None] = {}

    def get(self, relpath: str) -> bytes | None:
        """The published bytes of `relpath` (None when missing), read on first use."""
        if relpath not in self._files:
            self._files[relpath] = self._source.read(relpath)
        return self._files[relpath]

    def digest(self, relpath: str) -> str | None:
        """The sha256 of `relpath` (None when missing), from memory if it was read."""
        if relpath in self._files:
            held = self._files[relpath]
            return None if held is None else sha256_hex(held)
        return self._source.digest(relpath)

    def holds(self, relpath: str, content: bytes) -> bool:
        """Whether `relpath` is exactly `content`, from memory if it was read."""
        if relpath in self._files:
            return self._files[relpath] == content
        return self._source.holds(relpath, content)


@dataclass(slots=True)
class RunScope:
    """What the categories of one run share: the metadata stamps and whether the PRIMARY is up."""

    force: bool
    stamps: dict[MODEL_REFERENCE_CATEGORY, int] = field(default_factory=dict)
    operations: dict[MODEL_REFERENCE_CATEGORY, Operation] = field(default_factory=dict)
    # Categories whose stamp is a legacy write's (v1 metadata alone): see evidence.py.
    legacy_writes: frozenset[MODEL_REFERENCE_CATEGORY] = frozenset()
    # The key of data requests for categories the metadata cannot stamp (the start of the
    # cache TTL's current window on the wall clock): hosts of a site share it, so a cache
    # still answers them once per window instead of passing every host's request on.
    window: int | None = None
    moved: frozenset[MODEL_REFERENCE_CATEGORY] = frozenset()
    rollbacks: dict[MODEL_REFERENCE_CATEGORY, tuple[int, int]] = field(default_factory=dict)
    # Categories whose metadata entry was unusable: the cache TTL decides them, unconfirmed.
    unconfirmed: dict[MODEL_REFERENCE_CATEGORY, str] = field(default_factory=dict)
    # The PRIMARY answered its metadata with nothing usable: the TTL decides this run.
    metadata_error: SourceError | None = None
    primary_down: SourceError | None = None
    # Evidence that the server is a PRIMARY, so its 404 means "no data" (absence proved).
    primary_answered: bool = False
    connection_failures: set[MODEL_REFERENCE_CATEGORY] = field(default_factory=set)
    # Categories a cache answered with a body older than its metadata: asked past caches now.
    past_caches: set[MODEL_REFERENCE_CATEGORY] = field(default_factory=set)
    # Categories whose v2 body did not show its stamp even past the caches: unproven this run.
    unproven: set[MODEL_REFERENCE_CATEGORY] = field(default_factory=set)

    def primary_failed(self, category: MODEL_REFERENCE_CATEGORY, error: SourceUnavailable) -> None:
        """Count one endpoint's failure; enough of them, on enough categories, is the server."""
        if error.kind not in CONNECTION_LEVEL:
            return
        self.connection_failures.add(category)
        if len(self.connection_failures) >= SERVER_DOWN_AFTER and self.primary_down is None:
            self.primary_down = error


@dataclass(frozen=True, slots=True)
class DeliveredFile:
    """One validated file of a delivery."""

    relpath: str
    payload: Payload
    etag: str | None
    downloaded: int  # body bytes this run downloaded for it (0 after a 304)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A layer's validated files from one source; the main file comes last."""

    source: SourceName
    files: tuple[DeliveredFile, ...]
    # Set when the first answer was older than its metadata and this one came past the caches.
    older_answer: str | None = None
    # Published, but its stamp not recorded: even the PRIMARY's answer does not show it.
    unproven: bool = False
    # Not recorded, ever: past every cache, still the bytes held though a write was announced.
    unshown: bool = False

    @property
    def main(self) -> DeliveredFile:
        """The file readers load for this layer."""
        return self.files[-1]


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a layer got no bytes, and which source to blame."""

    error: ReplicaSyncError
    source: SourceName | None


class Absent:
    """No source has data for the layer (the PRIMARY answered 404, or GitHub has no copy)."""


ABSENT: Final = Absent()
Answer = Delivery | Absent | Failure


class SourceChain:
    """Turns (category, layers) into one `Answer` per layer."""

    def __init__(
        self,
        primary: Primary | None,
        github: Github | None,
        *,
        github_fallback: bool,
        max_shrink_fraction: float | None,
    ) -> None:
        self._primary = primary
        self._github = github if github_fallback else None
        self._max_shrink_fraction = max_shrink_fraction  # None: the guard is off

    async def deliver(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        layers: Sequence[Layer],
        *,
        published: Published,
        states: Mapping[Layer, LayerState],
        scope: RunScope,
    ) -> dict[Layer, Answer]:
        """One answer for each of `layers`."""
        check = _Checker(category, published, states, self._max_shrink_fraction)
        return await _CategoryRun(category, check, scope, self._primary, self._github).deliver(
            layers
        )


@dataclass(frozen=True, slots=True)
class _CategoryRun:
    """One category's delivery in one run: what every step of it shares."""

    category: MODEL_REFERENCE_CATEGORY
    check: _Checker  # its bodies validated against what it has published
    scope: RunScope  # what the run's categories share
    primary: Primary | None
    github: Github | None  # None: no GitHub fallback

    async def deliver(self, layers: Sequence[Layer]) -> dict[Layer, Answer]:
        """One answer for each of `layers`."""
        answers: dict[Layer, Answer] = {}
        # Layers for GitHub, with the PRIMARY's error that sent each there (None: GitHub-only).
        fallback: dict[Layer, SourceError | None] = {}
        if self.primary is None:
            fallback = dict.fromkeys(layers)
        else:
            v2_digest = self.check.held_v2_digest()
            for layer in layers:  # one body in flight per category: max_concurrency bounds them
                answer = await self._from_primary(layer, v2_digest)
                if layer is Layer.V2 and isinstance(answer, Delivery):  # V2 comes first
                    v2_digest = _short_digest(answer.main.payload.content)
                if (
                    isinstance(answer, Failure)
                    and isinstance(answer.error, SourceUnavailable)
                    and self._can_fall_back()
                ):
                    fallback[layer] = answer.error
                else:
                    answers[layer] = answer
        if fallback:
            answers |= await self._from_github(fallback)
        return answers

    def _can_fall_back(self) -> bool:
        # Every category GitHub holds converts to v2, so one test fits both layers.
        return self.github is not None and spec_for(self.category).github_repo is not None

    # -- the PRIMARY --------------------------------------------------------------------

    def _primary_source(self) -> Primary:
        assert self.primary is not None  # the PRIMARY's steps run only when there is one
        return self.primary

    async def _from_primary(self, layer: Layer, v2_digest: str | None) -> Answer:
        category, scope = self.category, self.scope
        if scope.primary_down is not None:  # seen down this run: don't wait on it again
            down = scope.primary_down
            reason = f"skipped: the PRIMARY is unavailable this run ({down})"
            skipped = SourceUnavailable(
                self._primary_source().v2_url(category), reason, kind=down.kind
            )
            return Failure(skipped, SourceName.PRIMARY)
        stamp = scope.stamps.get(category, scope.window)
        key = DataKey(
            stamp,
            v2_digest if layer is Layer.LEGACY else None,
            # Forced runs, and categories a cache already misled this run, go past every cache.
            fresh=scope.force or category in scope.past_caches,
        )
        try:
            delivered = await self._primary_file(layer, key)
            if delivered is None:
                return ABSENT
            return await self._as_new_as_stamp(layer, key, delivered)
        except SourceUnavailable as exc:
            scope.primary_failed(category, exc)
            return Failure(exc, SourceName.PRIMARY)
        except ReplicaSyncError as exc:
            return Failure(exc, SourceName.PRIMARY)

    async def _as_new_as_stamp(
        self, layer: Layer, key: DataKey, delivered: DeliveredFile
    ) -> Answer:
        """The delivery of `delivered`, once it shows its stamp (evidence.py), else asked for
        again past every cache; the PRIMARY's own answer not showing it is unproven once,
        and the bytes held under a new stamp are never recorded."""
        category, scope, check = self.category, self.scope, self.check
        stamp = scope.stamps.get(category)  # None for a window key: nothing to show
        rule = _Judge(stamp, scope.operations.get(category), category in scope.legacy_writes)
        older = rule.older(delivered, check)
        if older is None:  # shown, or a legacy body (its v2 layer speaks for it)
            return Delivery(SourceName.PRIMARY, (delivered,), unproven=category in scope.unproven)
        if not key.fresh:  # a cache may have answered: ask past every cache
            scope.past_caches.add(category)
            fresh = dataclasses.replace(key, fresh=True)
            again = await self._primary_file(layer, fresh)
            if again is None:
                return ABSENT
            delivered = dataclasses.replace(
                again, downloaded=again.downloaded + delivered.downloaded
            )
            if rule.older(delivered, check) is None:
                return Delivery(SourceName.PRIMARY, (delivered,), older_answer=older)
        scope.unproven.add(category)
        if check.changed(delivered, stamp) is False:
            why = f"{delivered.relpath}, last_updated={stamp}: {UNSHOWN_CAUSE}; not recorded"
            return Delivery(
                SourceName.PRIMARY, (delivered,), older_answer=why, unproven=True, unshown=True
            )
        # The PRIMARY's own answer does not show the stamp. It may have announced the stamp
        # before writing the data, so the body is published (it is what the PRIMARY has) but
        # the stamp is not recorded: the next run asks again. Two runs in a row: taken.
        if check.unproven_last_run():
            scope.unproven.discard(category)
            taken = f"{older}; the PRIMARY's own answer, two runs in a row: taken"
            return Delivery(SourceName.PRIMARY, (delivered,), older_answer=taken)
        why = (
            f"{older}; even the PRIMARY's own answer does not show it: published, its stamp "
            "not recorded until a body shows it or the next run agrees"
        )
        return Delivery(SourceName.PRIMARY, (delivered,), older_answer=why, unproven=True)

    async def _primary_file(self, layer: Layer, key: DataKey) -> DeliveredFile | None:
        """One layer's validated body from the PRIMARY under `key`; None on 404."""
        primary = self._primary_source()
        fetch = primary.fetch_v2 if layer is Layer.V2 else primary.fetch_legacy
        fetched = await fetch(self.category, key)
        if fetched is None:
            return None
        self.scope.primary_answered = True
        return self.check.file(layer, spec_for(self.category).relpath(layer), fetched)

    # -- GitHub -------------------------------------------------------------------------

    async def _from_github(self, layers: Mapping[Layer, SourceError | None]) -> dict[Layer, Answer]:
        if not self._can_fall_back():
            return dict.fromkeys(layers, ABSENT)  # GitHub-only, and GitHub has no copy
        try:
            files = await self._github_files()
        except SourceError as exc:
            return {
                layer: Failure(_after_primary(exc, primary), SourceName.GITHUB)
                for layer, primary in layers.items()
            }
        answers: dict[Layer, Answer] = {}
        for layer in layers:
            try:
                answers[layer] = (
                    self._legacy_delivery(files)
                    if layer is Layer.LEGACY
                    else self._converted(files)
                )
            except InvalidPayload as exc:
                answers[layer] = Failure(exc, SourceName.GITHUB)
        return answers

    async def _github_files(self) -> dict[str, tuple[Fetched, int]]:
        """The category's GitHub files, each downloaded once: relpath -> (body, bytes fetched).

        A 304 yields the published copy (0 bytes downloaded).
        """
        github, spec = self.github, spec_for(self.category)
        assert github is not None and spec.github_repo is not None  # by _can_fall_back
        files: dict[str, tuple[Fetched, int]] = {}
        for relpath in spec.github_relpaths:
            etag, held = self.check.conditional(relpath)
            answer = await github.fetch(spec.github_repo, _file_name(relpath), etag)
            if isinstance(answer, NotModified):  # re-validates what we hold; nothing came
                assert held is not None
                files[relpath] = (Fetched(answer.url, held, answer.etag), 0)
            else:
                files[relpath] = (answer, len(answer.content))
        return files

    def _legacy_delivery(self, files: Mapping[str, tuple[Fetched, int]]) -> Delivery:
        delivered = tuple(
            self.check.file(Layer.LEGACY, relpath, fetched, downloaded=downloaded)
            for relpath, (fetched, downloaded) in files.items()
        )
        return Delivery(SourceName.GITHUB, delivered)

    def _converted(self, files: Mapping[str, tuple[Fetched, int]]) -> Delivery:
        # Imported here: the converter is only needed while the PRIMARY is away, and it costs
        # a few MiB of resident memory the daemon otherwise never needs.
        from horde_replica_sync.convert import convert_legacy

        by_name = {_file_name(relpath): fetched.content for relpath, (fetched, _) in files.items()}
        # No `now`: deterministic bytes, so an unchanged legacy file never rewrites v2.
        converted = convert_legacy(self.category, by_name)
        urls = ", ".join(fetched.url for fetched, _ in files.values())
        downloaded = sum(size for _, size in files.values())
        source = Fetched(f"converted from {urls}", converted)
        relpath = spec_for(self.category).relpath(Layer.V2)
        return Delivery(
            SourceName.GITHUB, (self.check.file(Layer.V2, relpath, source, downloaded=downloaded),)
        )


class _Checker:
    """Validation of one category's bodies against what it has published."""

    def __init__(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        published: Published,
        states: Mapping[Layer, LayerState],
        max_shrink_fraction: float | None,
    ) -> None:
        self._category = category
        self._published = published
        self._states = states
        self._max_shrink_fraction = max_shrink_fraction

    def file(
        self, layer: Layer, relpath: str, fetched: Fetched, *, downloaded: int | None = None
    ) -> DeliveredFile:
        """The validated file; raises `InvalidPayload` naming category, file and URL."""
        what = f"{self._category.value} {layer.value} {relpath} from {fetched.url}"
        if is_csv(relpath):
            payload = parse_models_csv(what, fetched.content)
        else:
            payload = parse_json_records(
                what, fetched.content, category=self._category, layer=layer
            )
            guard = self._max_shrink_fraction
            if guard is not None and relpath == spec_for(self._category).relpath(layer):
                check_shrink(what, self._previous_records(layer, relpath), payload.records, guard)
        size = len(fetched.content) if downloaded is None else downloaded
        return DeliveredFile(relpath, payload, fetched.etag, size)

    def held_v2_digest(self) -> str | None:
        """The short digest of the v2 body held, the legacy layer's companion key."""
        state = self._states.get(Layer.V2)
        record = state.files.get(spec_for(self._category).relpath(Layer.V2)) if state else None
        return None if record is None else record.sha256[:DIGEST_KEY_CHARS]

    def changed(self, delivered: DeliveredFile, stamp: int | None) -> bool | None:
        """Whether a v2 body differs from the bytes held at the last recorded stamp; None when
        nothing is held, or `stamp` is not later than that recorded stamp (no write announced
        since: the same stamp, or a rollback, which the same bytes may well be)."""
        state = self._states.get(Layer.V2)
        record = state.files.get(delivered.relpath) if state is not None else None
        if state is None or record is None or stamp is None:
            return None
        recorded = state.upstream_last_updated
        if recorded is not None and stamp <= recorded:
            return None
        if state.unproven_stamp is not None:  # published since the last recorded stamp:
            return True  # because its bytes had changed
        return sha256_hex(delivered.payload.content) != record.sha256

    def unproven_last_run(self) -> bool:
        """Whether the last run's v2 body from the PRIMARY did not show its stamp either.

        Any stamp: a PRIMARY whose stamp moves every run without its data still gets its
        bodies recorded every second run, so the staleness it causes stays bounded.
        """
        state = self._states.get(Layer.V2)
        return state is not None and state.unproven_stamp is not None

    def conditional(self, relpath: str) -> tuple[str | None, bytes | None]:
        """The ETag to send, only when the published file is exactly what it describes."""
        state = self._states.get(Layer.LEGACY)
        record = state.files.get(relpath) if state is not None else None
        if record is None or record.etag is None:
            return None, None
        if self._published.digest(relpath) != record.sha256:  # streamed: read only if it is
            return None, None
        held = self._published.get(relpath)
        return (None, None) if held is None else (record.etag, held)

    def _previous_records(self, layer: Layer, relpath: str) -> int | None:
        """Records in the last good copy: from the state, else counted from the file itself."""
        state = self._states.get(layer)
        if state is not None and state.records is not None:
            return state.records
        held = self._published.get(relpath)
        try:
            return parse_json_records(relpath, held).records if held else None
        except InvalidPayload:
            return None


def _short_digest(content: bytes) -> str:
    return sha256_hex(content)[:DIGEST_KEY_CHARS]


@dataclass(frozen=True, slots=True)
class _Judge:
    """The evidence rule (evidence.py) for one category's stamp this run."""

    stamp: int | None
    operation: Operation | None
    legacy_write: bool

    def older(self, delivered: DeliveredFile, check: _Checker) -> str | None:
        """Why a v2 body is older than the stamp it was fetched for; None when it is not."""
        data, stamp = delivered.payload.data, self.stamp
        if stamp is None or data is None:
            return None
        changed = check.changed(delivered, stamp)
        verdict = judge(
            data, stamp, self.operation, changed=changed, legacy_write=self.legacy_write
        )
        if verdict is not Evidence.OLDER:
            return None
        what = "is the body already held" if changed is False else "has no record updated since"
        return (
            f"{delivered.relpath}: the answer for last_updated={stamp} {what} (a cache or the "
            "PRIMARY served a body older than its metadata); asked again past every cache"
        )


def _file_name(relpath: str) -> str:
    """The upstream file name of a published relpath (`legacy/db.json` -> `db.json`)."""
    return relpath.rsplit("/", 1)[-1]


def _after_primary(github: SourceError, primary: SourceError | None) -> SourceError:
    """GitHub's error, with the PRIMARY's that sent us there, so both reasons are logged."""
    if primary is None:
        return github
    reason = f"{github.reason} (GitHub fallback, after the PRIMARY was unavailable: {primary})"
    return type(github)(
        github.url, reason, kind=github.kind, status=github.status, retry_after=github.retry_after
    )
