"""Fetch and validate one layer of one category through the source chain.

The PRIMARY first; GitHub only when the PRIMARY is *unavailable* (never when it answered 404,
which means "no data there"). GitHub has legacy files only: the v2 layer is converted from
them (convert.py), and the legacy and v2 targets of one run share each download. Once the
PRIMARY is seen down in a run, the rest of the run skips it instead of waiting on it again.
Nothing here writes: a `Delivery` is validated bytes, ready for the store.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, Layer, spec_for
from horde_replica_sync.errors import InvalidPayload, SourceError, SourceName, SourceUnavailable
from horde_replica_sync.sources.github import GithubSource, NotModified
from horde_replica_sync.sources.primary import Fetched, PrimarySource
from horde_replica_sync.state import LayerState, ReplicaState
from horde_replica_sync.store import ReplicaStore, sha256_hex
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
    # One GitHub download per file per run, shared by a category's legacy and v2 targets.
    github_downloads: dict[str, asyncio.Future[Fetched]] = field(default_factory=dict)


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
        if self._primary is not None:
            try:
                return await self._from_primary(self._primary, category, layer, run)
            except SourceUnavailable as exc:
                run.primary_down = run.primary_down or exc
                if not self._can_fall_back(category, layer):
                    raise
        elif not self._can_fall_back(category, layer):
            return None  # GitHub-only, and GitHub has nothing for this layer
        try:
            if layer is Layer.LEGACY:
                return await self._legacy_from_github(category, run)
            return await self._v2_from_github(category, run)
        except SourceError as exc:
            if run.primary_down is None:
                raise
            raise _fallback_failed(exc, run.primary_down) from exc

    async def _from_primary(
        self,
        primary: PrimarySource,
        category: MODEL_REFERENCE_CATEGORY,
        layer: Layer,
        run: RunContext,
    ) -> Delivery | None:
        if run.primary_down is not None:  # seen down this run: don't wait on it again
            url = primary.v2_url(category)
            reason = f"skipped: the PRIMARY is unavailable this run ({run.primary_down})"
            skipped = SourceUnavailable(url, reason, kind=run.primary_down.kind)
            skipped.source = "primary"
            raise skipped
        fetch = primary.fetch_v2 if layer is Layer.V2 else primary.fetch_legacy
        fetched = await fetch(category)
        if fetched is None:
            return None
        relpath = spec_for(category).relpath(layer)
        return Delivery("primary", (self._validated(category, layer, relpath, fetched, "primary"),))

    def _can_fall_back(self, category: MODEL_REFERENCE_CATEGORY, layer: Layer) -> bool:
        # Every category GitHub holds converts to v2 (convert.convertible), so one test fits
        # both layers.
        return (
            self._github is not None
            and self._github_fallback
            and spec_for(category).github_repo is not None
        )

    async def _legacy_from_github(
        self, category: MODEL_REFERENCE_CATEGORY, run: RunContext
    ) -> Delivery:
        files = []
        for relpath, (fetched, downloaded) in (await self._github_files(category, run)).items():
            files.append(
                self._validated(
                    category, Layer.LEGACY, relpath, fetched, "github", downloaded=downloaded
                )
            )
        # The JSON file readers load is the layer's main file; publish it last.
        main = spec_for(category).relpath(Layer.LEGACY)
        files.sort(key=lambda f: f.relpath == main)
        return Delivery("github", tuple(files))

    async def _v2_from_github(
        self, category: MODEL_REFERENCE_CATEGORY, run: RunContext
    ) -> Delivery:
        # Imported here: the converter is only needed while the PRIMARY is away, and it costs
        # a few MiB of resident memory the daemon otherwise never needs.
        from horde_replica_sync.convert import convert_legacy

        legacy = await self._github_files(category, run)
        by_name = {
            relpath.rsplit("/", 1)[-1]: fetched.content for relpath, (fetched, _) in legacy.items()
        }
        try:
            # No `now`: deterministic bytes, so an unchanged legacy file never rewrites v2.
            converted = convert_legacy(category, by_name)
        except InvalidPayload as exc:
            exc.source = "github"
            raise
        urls = ", ".join(fetched.url for fetched, _ in legacy.values())
        source = Fetched(f"converted from {urls}", converted)
        relpath = spec_for(category).relpath(Layer.V2)
        downloaded = sum(size for _, size in legacy.values())
        return Delivery(
            "github",
            (
                self._validated(
                    category, Layer.V2, relpath, source, "github", downloaded=downloaded
                ),
            ),
        )

    async def _github_files(
        self, category: MODEL_REFERENCE_CATEGORY, run: RunContext
    ) -> dict[str, tuple[Fetched, int]]:
        """The category's legacy files from GitHub: relpath -> (body, bytes downloaded by us).

        A 304 yields the published copy (0 bytes downloaded). A download another target of
        this run started is awaited, not repeated, and counted only once.
        """
        spec = spec_for(category)
        files: dict[str, tuple[Fetched, int]] = {}
        for name in spec.github_files:
            relpath = spec_for(category).relpath(Layer.LEGACY, name)
            shared = run.github_downloads.get(relpath)
            if shared is not None:
                files[relpath] = (await shared, 0)
                continue
            future: asyncio.Future[Fetched] = asyncio.get_running_loop().create_future()
            run.github_downloads[relpath] = future
            try:
                fetched, downloaded = await self._github_file(category, name, relpath)
            except asyncio.CancelledError:
                future.cancel()
                raise
            except Exception as exc:
                future.set_exception(exc)
                future.exception()  # mark it retrieved: waiters re-raise it themselves
                raise
            future.set_result(fetched)
            files[relpath] = (fetched, downloaded)
        return files

    async def _github_file(
        self, category: MODEL_REFERENCE_CATEGORY, name: str, relpath: str
    ) -> tuple[Fetched, int]:
        github, repo = self._github, spec_for(category).github_repo
        assert github is not None and repo is not None  # by _can_fall_back
        etag, published = self._conditional(relpath, self._state.layer(category, Layer.LEGACY))
        answer = await github.fetch(repo, name, etag)
        if isinstance(answer, NotModified):  # re-validate what we hold; nothing came
            assert published is not None
            return Fetched(answer.url, published, answer.etag), 0
        return answer, len(answer.content)

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
        if guard is not None and relpath == spec_for(category).relpath(layer):
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


def _fallback_failed(github: SourceError, primary: SourceError) -> SourceError:
    """GitHub's error, with the PRIMARY's that sent us there, so both reasons are logged."""
    reason = f"{github.reason} (GitHub fallback, after the PRIMARY was unavailable: {primary})"
    error = type(github)(
        github.url, reason, kind=github.kind, status=github.status, retry_after=github.retry_after
    )
    error.source = github.source
    return error
