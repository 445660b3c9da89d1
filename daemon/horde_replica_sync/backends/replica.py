"""The REPLICA backend: a `ReplicaBackendBase` whose cache mirrors the replica directory.

Its cache validity is the daemon's notion of "fresh", and the sync engine decides what to
fetch by asking it (`should_fetch_data`, `needs_refresh`, `is_legacy_cache_valid`): mtime
validation points at the published files (a file edited or deleted by hand is noticed and
repaired on the next run), the TTL forces a periodic re-verification, and `mark_stale`
(driven by the PRIMARY's metadata) invalidates both layers of a category. In-process readers
(`fetch_category`, `get_legacy_json`) are served the published files; keeping them fresh is
the engine's job, never the reader's.

What the engine publishes is held as published, and parsed only when a reader asks: v2 as its
bytes, legacy as its text. The parsed forms would cost several times as much resident memory
(db.json alone megabytes), and the daemon itself never reads the records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import httpx

from horde_replica_sync.backends.base import ReplicateMode
from horde_replica_sync.backends.replica_base import ReplicaBackendBase
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, Layer, spec_for
from horde_replica_sync.clock import SYSTEM, past_or_long_ago
from horde_replica_sync.errors import InvalidPayload
from horde_replica_sync.report import MissReason
from horde_replica_sync.state import LayerState, ReplicaState
from horde_replica_sync.store import ReplicaStore, sha256_hex
from horde_replica_sync.validation import decode_utf8, load_json_object

_EXPIRY_REASONS: Final = {"ttl": MissReason.EXPIRED, "mtime": MissReason.EDITED_ON_DISK}


class ReplicaDirectoryBackend(ReplicaBackendBase):
    """Serves the replica directory's data and keeps it fresh through a refresher."""

    def __init__(
        self,
        store: ReplicaStore,
        *,
        categories: Iterable[MODEL_REFERENCE_CATEGORY],
        cache_ttl_seconds: int | None,
        clock: Callable[[], float] = SYSTEM.now,
    ) -> None:
        super().__init__(
            mode=ReplicateMode.REPLICA, cache_ttl_seconds=cache_ttl_seconds, clock=clock
        )
        self._store = store
        self.categories = tuple(categories)

    def reconfigure(
        self, categories: Iterable[MODEL_REFERENCE_CATEGORY], cache_ttl_seconds: int | None
    ) -> None:
        """Apply reloaded settings without dropping the cache or its counters."""
        self.categories = tuple(categories)
        self._set_cache_ttl_seconds(cache_ttl_seconds)

    # -- warm start ---------------------------------------------------------------------

    def warm_from_disk(self, state: ReplicaState) -> list[MODEL_REFERENCE_CATEGORY]:
        """Load every published file that still matches the state; return the warm categories.

        A file that differs from what the state recorded (edited while we were down), or
        whose last refresh failed, is not loaded, so the next run re-verifies it. The cache
        timestamp is the last fetch, so a restart does not reset the TTL.
        """
        warm = []
        for category in self.categories:
            if self._warm_v2(category, state.layer(category, Layer.V2)):
                warm.append(category)
            if spec_for(category).has_legacy:
                self._warm_legacy(category, state.layer(category, Layer.LEGACY))
        return warm

    def _warm_v2(self, category: MODEL_REFERENCE_CATEGORY, layer: LayerState) -> bool:
        loaded = self._load_verified(spec_for(category).relpath(Layer.V2), layer)
        if loaded is None or layer.fetched_at is None:
            return False
        self._store_in_cache(category, loaded)
        with self._lock:
            self._category_timestamps[category] = self._trusted(layer.fetched_at)
        return True

    def _warm_legacy(self, category: MODEL_REFERENCE_CATEGORY, layer: LayerState) -> None:
        loaded = self._load_verified(spec_for(category).relpath(Layer.LEGACY), layer)
        if loaded is None or layer.fetched_at is None:
            return
        self._store_legacy_in_cache(category, None, loaded.decode())
        with self._lock:
            self._legacy_cache_timestamps[category] = self._trusted(layer.fetched_at)

    def _trusted(self, fetched_at: float) -> float:
        """A fetch stamp from the future would hold the TTL off: it counts as long expired."""
        return past_or_long_ago(fetched_at, self._clock())

    def _load_verified(self, relpath: str, layer: LayerState) -> bytes | None:
        """The published file's bytes when they are what the state recorded, a JSON object."""
        record = layer.files.get(relpath)
        if layer.last_error is not None:
            return None
        content = self._store.read(relpath)
        if record is None or content is None or sha256_hex(content) != record.sha256:
            return None
        return None if _parse_object(content)[0] is None else content

    # -- the engine's view of the cache -------------------------------------------------

    def has_legacy_data(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        """Whether legacy data was ever loaded (so a miss is a refresh, not a first load)."""
        with self._lock:
            return (
                self._legacy_json_cache.get(category) is not None
                or self._legacy_json_string_cache.get(category) is not None
            )

    def expiry_reason(self, category: MODEL_REFERENCE_CATEGORY, layer: Layer) -> MissReason | None:
        """Why a loaded entry expired; legacy invalidated by a v2 expiry shares its reason."""
        with self._lock:
            why = self._expired_why.get(category)
            if layer is Layer.LEGACY:
                why = self._legacy_expired_why.get(category) or why
        return None if why is None else _EXPIRY_REASONS[why]

    def count_lookup(self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, *, hit: bool) -> None:
        """Count the engine's decision as a cache hit or miss (`get_statistics`)."""
        if layer is Layer.V2:
            self._count(self._hits if hit else self._misses, category)
        else:
            self._count(self._legacy_hits if hit else self._legacy_misses, category)

    def accept(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, content: bytes | None
    ) -> None:
        """Cache the bytes just published, a validated JSON object (or None: looked, nothing
        there, retry later): v2 as the bytes themselves, legacy as their text."""
        if layer is Layer.V2:
            self._store_in_cache(category, content)
        else:
            text = None if content is None else content.decode()
            self._store_legacy_in_cache(category, None, text)

    def invalidate(self, category: MODEL_REFERENCE_CATEGORY, layer: Layer) -> None:
        """Make the next run re-fetch `layer` (after a failed attempt); data stays served."""
        if layer is Layer.V2:
            self._invalidate_cache(category)
        else:
            self._invalidate_legacy_cache(category)

    def _mark_stale_impl(self, category: MODEL_REFERENCE_CATEGORY) -> None:
        # A category that moved upstream moved in both layers.
        super()._mark_stale_impl(category)
        self._invalidate_legacy_cache(category)

    # -- file paths ---------------------------------------------------------------------

    def _get_file_path_for_validation(self, category: MODEL_REFERENCE_CATEGORY) -> Path | None:
        return self.get_category_file_path(category)

    def _get_legacy_file_path_for_validation(
        self, category: MODEL_REFERENCE_CATEGORY
    ) -> Path | None:
        if not spec_for(category).has_legacy:
            return None
        return self._store.path(spec_for(category).relpath(Layer.LEGACY))

    def get_category_file_path(self, category: MODEL_REFERENCE_CATEGORY) -> Path | None:
        """The published v2 file of `category`."""
        return self._store.path(spec_for(category).relpath(Layer.V2))

    def get_all_category_file_paths(self) -> dict[MODEL_REFERENCE_CATEGORY, Path | None]:
        """The published v2 file of every category."""
        return {c: self.get_category_file_path(c) for c in MODEL_REFERENCE_CATEGORY}

    # -- ModelReferenceBackend ----------------------------------------------------------

    async def fetch_category_async(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        *,
        httpx_client: httpx.AsyncClient | None = None,
        force_refresh: bool = False,
    ) -> dict[str, Any] | None:
        """The v2 data of `category`, from the cache or else the published file.

        The daemon's engine owns all network access, so `httpx_client` is accepted for
        interface compatibility and not needed; `force_refresh` re-reads the file.
        """
        return self._fetch_with_cache(
            category, lambda: self._read_published(category), force_refresh=force_refresh
        )

    async def fetch_all_categories_async(
        self,
        *,
        httpx_client: httpx.AsyncClient | None = None,
        force_refresh: bool = False,
    ) -> dict[MODEL_REFERENCE_CATEGORY, dict[str, Any] | None]:
        """Refresh and return every category, concurrently."""
        categories = tuple(MODEL_REFERENCE_CATEGORY)
        results = await asyncio.gather(
            *(self.fetch_category_async(c, force_refresh=force_refresh) for c in categories)
        )
        return dict(zip(categories, results, strict=True))

    def fetch_category(
        self, category: MODEL_REFERENCE_CATEGORY, *, force_refresh: bool = False
    ) -> dict[str, Any] | None:
        """The v2 data of `category` (it reads a local file; nothing blocks on the network)."""
        return self._fetch_with_cache(
            category, lambda: self._read_published(category), force_refresh=force_refresh
        )

    def fetch_all_categories(
        self, *, force_refresh: bool = False
    ) -> dict[MODEL_REFERENCE_CATEGORY, dict[str, Any] | None]:
        """The v2 data of every category."""
        return {
            c: self.fetch_category(c, force_refresh=force_refresh) for c in MODEL_REFERENCE_CATEGORY
        }

    def get_legacy_json(
        self, category: MODEL_REFERENCE_CATEGORY, redownload: bool = False
    ) -> dict[str, Any] | None:
        """The legacy data of `category` (for text: the db.json shape)."""
        return self._legacy(category, redownload)[0]

    def get_legacy_json_string(
        self, category: MODEL_REFERENCE_CATEGORY, redownload: bool = False
    ) -> str | None:
        """The legacy file of `category` as published, as text."""
        return self._legacy(category, redownload)[1]

    def _legacy(
        self, category: MODEL_REFERENCE_CATEGORY, redownload: bool
    ) -> tuple[dict[str, Any] | None, str | None]:
        if not spec_for(category).has_legacy:
            return None, None
        cached = (None, None) if redownload else self._get_legacy_from_cache(category)
        if cached == (None, None):
            self._store_legacy_in_cache(category, None, self._read_published_text(category))
            with self._lock:
                cached = (
                    self._legacy_json_cache.get(category),
                    self._legacy_json_string_cache.get(category),
                )
        data, text = cached
        return (data if data is not None else _parse_object_text(text)), text

    def _read_published(self, category: MODEL_REFERENCE_CATEGORY) -> dict[str, Any] | None:
        return _parse_object(self._store.read(spec_for(category).relpath(Layer.V2)))[0]

    def _read_published_text(self, category: MODEL_REFERENCE_CATEGORY) -> str | None:
        return _parse_object(self._store.read(spec_for(category).relpath(Layer.LEGACY)))[1]


def _parse_object(content: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    """A published file as (object, text); (None, None) when missing or unreadable."""
    if content is None:
        return None, None
    try:
        text = decode_utf8("published file", content)
    except InvalidPayload:
        return None, None
    data = _parse_object_text(text)
    return (data, text) if data is not None else (None, None)


def _parse_object_text(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        return load_json_object("published file", text)
    except InvalidPayload:
        return None
