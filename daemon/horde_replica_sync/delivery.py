"""Fetch and validate one layer of one category through the source chain.

The PRIMARY first; GitHub only when the PRIMARY is *unavailable* (never when it answered 404,
which means "no data there"). Once the PRIMARY is seen down in a run, the rest of the run
skips it instead of waiting on it again. Nothing here writes: a `Delivery` is validated
bytes, ready for the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, spec_for
from horde_replica_sync.errors import InvalidPayload, SourceError, SourceName, SourceUnavailable
from horde_replica_sync.sources.github import GithubSource, NotModified
from horde_replica_sync.sources.primary import Fetched, PrimarySource
from horde_replica_sync.state import Layer, LayerState, ReplicaState
from horde_replica_sync.store import ReplicaStore, relpath_for, sha256_hex
from horde_replica_sync.validation import (
    Payload,
    check_shrink,
    parse_json_records,
    parse_models_csv,
)


@dataclass(slots=True)
class RunContext:
    """Per-run facts shared by the category tasks of one run."""

    force: bool
    stamps: dict[MODEL_REFERENCE_CATEGORY, int] = field(default_factory=dict)
    primary_down: SourceError | None = None


@dataclass(frozen=True, slots=True)
class DeliveredFile:
    """One validated file of a delivery."""

    relpath: str
    payload: Payload
    etag: str | None
    downloaded: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """A layer's validated files from one source; the main file comes last."""

    source: SourceName
    files: tuple[DeliveredFile, ...]

    @property
    def main(self) -> DeliveredFile:
        """The file readers load for this layer."""
        return self.files[-1]


class Deliverer:
    """Turns (category, layer) into validated bytes from the best available source."""

    def __init__(
        self,
        store: ReplicaStore,
        state: ReplicaState,
        *,
        primary: PrimarySource | None,
        github: GithubSource | None,
        github_fallback: bool,
        max_shrink_fraction: float | None,
    ) -> None:
        self._store = store
        self._state = state
        self._primary = primary
        self._github = github
        self._github_fallback = github_fallback
        self._max_shrink_fraction = max_shrink_fraction  # None: the guard is off

    async def deliver(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, run: RunContext
    ) -> Delivery | None:
        """Validated files for the layer, or None when no source has data for it."""
        try:
            return await self._from_primary(category, layer, run)
        except SourceUnavailable as exc:
            run.primary_down = run.primary_down or exc
            if not self._can_fall_back(category, layer):
                raise
        return await self._from_github(category)

    async def _from_primary(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, run: RunContext
    ) -> Delivery | None:
        if self._primary is None:
            if layer is Layer.V2:  # GitHub serves no v2 layer: nothing to publish
                return None
            url, reason = "(none)", "no PRIMARY is configured"
            raise SourceUnavailable(url, reason)
        if run.primary_down is not None:  # seen down this run: don't wait on it again
            url = self._primary.v2_url(category)
            reason = f"skipped: the PRIMARY is unavailable this run ({run.primary_down})"
            raise SourceUnavailable(url, reason)
        fetch = self._primary.fetch_v2 if layer is Layer.V2 else self._primary.fetch_legacy
        fetched = await fetch(category)
        if fetched is None:
            return None
        relpath = relpath_for(category, layer)
        return Delivery("primary", (self._validated(category, layer, relpath, fetched, "primary"),))

    def _can_fall_back(self, category: MODEL_REFERENCE_CATEGORY, layer: Layer) -> bool:
        return (
            layer is Layer.LEGACY
            and self._github is not None
            and self._github_fallback
            and spec_for(category).github_repo is not None
        )

    async def _from_github(self, category: MODEL_REFERENCE_CATEGORY) -> Delivery:
        github, spec = self._github, spec_for(category)
        assert github is not None and spec.github_repo is not None  # by _can_fall_back
        state = self._state.layer(category, Layer.LEGACY)
        files = []
        for name in spec.github_files:
            relpath = relpath_for(category, Layer.LEGACY, name)
            etag, published = self._conditional(relpath, state)
            answer = await github.fetch(spec.github_repo, name, etag)
            downloaded = None
            if isinstance(answer, NotModified):  # re-validate what we hold; nothing came
                assert published is not None
                answer, downloaded = Fetched(answer.url, published, answer.etag), 0
            files.append(
                self._validated(
                    category, Layer.LEGACY, relpath, answer, "github", downloaded=downloaded
                )
            )
        # The JSON file readers load is the layer's main file; publish it last.
        main = relpath_for(category, Layer.LEGACY)
        files.sort(key=lambda f: f.relpath == main)
        return Delivery("github", tuple(files))

    def _conditional(self, relpath: str, state: LayerState) -> tuple[str | None, bytes | None]:
        """The ETag to send, only when the published file is exactly what it describes."""
        record = state.files.get(relpath)
        if record is None or record.etag is None:
            return None, None
        published = self._store.read(relpath)
        if published is None or sha256_hex(published) != record.sha256:
            return None, None
        return record.etag, published

    def _validated(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        layer: Layer,
        relpath: str,
        fetched: Fetched,
        source: SourceName,
        *,
        downloaded: int | None = None,
    ) -> DeliveredFile:
        what = f"{category.value} {layer.value} {relpath} from {fetched.url}"
        try:
            payload = self._checked(category, layer, relpath, what, fetched.content)
        except InvalidPayload as exc:
            exc.source = source
            raise
        size = len(fetched.content) if downloaded is None else downloaded
        return DeliveredFile(relpath, payload, fetched.etag, size)

    def _checked(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        layer: Layer,
        relpath: str,
        what: str,
        content: bytes,
    ) -> Payload:
        if relpath.endswith(".csv"):
            return parse_models_csv(what, content)
        payload = parse_json_records(what, content)
        guard = self._max_shrink_fraction
        if guard is not None and relpath == relpath_for(category, layer):
            previous = self._previous_records(category, layer, relpath)
            check_shrink(what, previous, payload.records, guard)
        return payload

    def _previous_records(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, relpath: str
    ) -> int | None:
        """Records in the last good copy: from the state, else counted from the file itself."""
        known = self._state.layer(category, layer).records
        if known is not None:
            return known
        published = self._store.read(relpath)
        try:
            return parse_json_records(relpath, published).records if published else None
        except InvalidPayload:
            return None
