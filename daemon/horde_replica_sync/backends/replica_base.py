"""The caching layer shared by every backend: a v2 cache and an independent legacy cache.

Each cache entry is valid while it is not explicitly stale, has a timestamp, is no older than
the TTL (strictly older expires), and its validation file (if the subclass names one) has the
mtime recorded when the entry was stored. A v2 entry found expired by TTL or mtime is marked
stale through `mark_stale`, so invalidation listeners hear about it; legacy expiry is silent,
as upstream's is.

Storing None records "looked, found nothing" without refreshing the timestamp, so the next
read retries the source instead of serving a cached absence.

A v2 entry is the data, or the JSON bytes of an object, parsed at each read (a new dict each
time): the REPLICA backend holds what it published that way, because a parse tree is tens of
thousands of small objects that would stay resident between runs (as the legacy layer keeps
its text).
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from horde_replica_sync.backends.base import ModelReferenceBackend, ReplicateMode
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY
from horde_replica_sync.validation import load_json_object

if TYPE_CHECKING:
    from pathlib import Path

_Category = MODEL_REFERENCE_CATEGORY
_Counts = Mapping[MODEL_REFERENCE_CATEGORY, int]
_Entry = dict[str, Any] | bytes  # the data, or its JSON bytes (parsed at each read)


def _now() -> float:
    """Read `time.time()` at call time, so tests that patch `time.time` still steer the cache."""
    return time.time()


def _read_mtime(path: Path | None) -> float | None:
    """Return `path`'s mtime, or None when there is no path or no readable file."""
    if path is None:
        return None
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _mtime_changed(path: Path | None, recorded: float | None) -> bool:
    """Whether the validation file differs from what was recorded at store time.

    A file that appeared, changed, or vanished since it was recorded all count as changed.
    """
    if path is None:
        return False
    return _read_mtime(path) != recorded


def _frozen(counts: Counter[MODEL_REFERENCE_CATEGORY]) -> _Counts:
    """Copy a counter into a read-only mapping that later counting cannot alter."""
    return MappingProxyType(dict(counts))


@dataclass(frozen=True, slots=True)
class CacheCounters:
    """A snapshot of cache hits and misses per category, for v2 and legacy reads.

    Categories never read are absent (read them as 0).
    """

    hits: _Counts
    misses: _Counts
    legacy_hits: _Counts
    legacy_misses: _Counts


class _Freshness(enum.Enum):
    """What validation concluded about one v2 entry."""

    FRESH = enum.auto()
    STALE = enum.auto()  # explicitly marked stale
    UNLOADED = enum.auto()  # never stored, or no timestamp
    EXPIRED = enum.auto()  # TTL elapsed or validation file changed: must be marked stale
    REJECTED = enum.auto()  # the subclass hook said no


class ReplicaBackendBase(ModelReferenceBackend):
    """Caching infrastructure for model reference backends, whatever their replicate mode.

    Subclasses read through `_fetch_with_cache` (or `_get_from_cache` + `_store_in_cache`)
    and `_get_legacy_from_cache` + `_store_legacy_in_cache`, and may override
    `_get_file_path_for_validation`, `_get_legacy_file_path_for_validation` and
    `_additional_cache_validation`. All state is guarded by one re-entrant `_lock`;
    invalidation listeners are called outside it so a listener that takes its own lock
    cannot deadlock against a reader.
    """

    def __init__(
        self,
        *,
        mode: ReplicateMode = ReplicateMode.REPLICA,
        cache_ttl_seconds: int | None = None,
        clock: Callable[[], float] = _now,
    ) -> None:
        """Start with empty caches; `cache_ttl_seconds=None` means entries never expire.

        `clock` supplies every timestamp and TTL reading (seconds), so tests can step time.
        """
        super().__init__(mode=mode)
        self._cache_ttl_seconds = cache_ttl_seconds
        self._clock = clock
        self._cache: dict[_Category, _Entry | None] = {}
        self._category_timestamps: dict[_Category, float] = {}
        self._last_known_mtimes: dict[_Category, float] = {}
        self._stale_categories: set[_Category] = set()
        self._legacy_json_cache: dict[_Category, dict[str, Any] | None] = {}
        self._legacy_json_string_cache: dict[_Category, str | None] = {}
        self._legacy_cache_timestamps: dict[_Category, float] = {}
        self._legacy_last_known_mtimes: dict[_Category, float] = {}
        self._stale_legacy_categories: set[_Category] = set()
        # Why an entry last expired ("ttl" or "mtime"), until it is stored fresh again.
        self._expired_why: dict[_Category, str] = {}
        self._legacy_expired_why: dict[_Category, str] = {}
        self._hits: Counter[_Category] = Counter()
        self._misses: Counter[_Category] = Counter()
        self._legacy_hits: Counter[_Category] = Counter()
        self._legacy_misses: Counter[_Category] = Counter()
        self._lock = threading.RLock()
        self._async_lock = asyncio.Lock()

    # --- configuration -------------------------------------------------------------------

    @property
    def cache_ttl_seconds(self) -> int | None:
        """The TTL applied to cache entries, or None when they never expire."""
        return self._cache_ttl_seconds

    def _set_cache_ttl_seconds(self, ttl_seconds: int | None) -> None:
        """Change the TTL; it applies to existing entries at their next validation."""
        with self._lock:
            self._cache_ttl_seconds = ttl_seconds

    @property
    def lock(self) -> threading.RLock:
        """The re-entrant lock guarding all cache state, for subclasses' critical sections."""
        return self._lock

    @property
    def async_lock(self) -> asyncio.Lock:
        """An asyncio lock for subclasses that coordinate coroutines (the cache does not use it)."""
        return self._async_lock

    # --- subclass hooks ------------------------------------------------------------------

    def _get_file_path_for_validation(self, category: MODEL_REFERENCE_CATEGORY) -> Path | None:
        """Name the file whose mtime guards `category`'s v2 entry; None disables the check."""
        return None

    def _get_legacy_file_path_for_validation(
        self, category: MODEL_REFERENCE_CATEGORY
    ) -> Path | None:
        """Name the file whose mtime guards `category`'s legacy entry; None disables it."""
        return None

    def _additional_cache_validation(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        """Extra v2 check run last by `is_cache_valid`; False rejects the entry (silently)."""
        return True

    # --- expiry --------------------------------------------------------------------------

    def _ttl_elapsed(self, stored_at: float) -> bool:
        """Whether an entry stored at `stored_at` is strictly older than the TTL."""
        ttl = self._cache_ttl_seconds
        return ttl is not None and self._clock() - stored_at > ttl

    def _v2_freshness(self, category: MODEL_REFERENCE_CATEGORY) -> _Freshness:
        """Classify `category`'s v2 timestamp state; call with `_lock` held."""
        if category in self._stale_categories:
            return _Freshness.STALE
        stored_at = self._category_timestamps.get(category)
        if stored_at is None:
            return _Freshness.UNLOADED
        path = self._get_file_path_for_validation(category)
        why = _expiry(self._ttl_elapsed(stored_at), path, self._last_known_mtimes.get(category))
        if why is None:
            return _Freshness.FRESH
        self._expired_why[category] = why
        return _Freshness.EXPIRED

    def _v2_validity(self, category: MODEL_REFERENCE_CATEGORY) -> _Freshness:
        """`is_cache_valid`'s verdict: freshness plus presence and the subclass hook."""
        if category not in self._cache:
            return _Freshness.UNLOADED
        freshness = self._v2_freshness(category)
        if freshness is _Freshness.FRESH and not self._additional_cache_validation(category):
            return _Freshness.REJECTED
        return freshness

    def _settle(self, category: MODEL_REFERENCE_CATEGORY, verdict: _Freshness) -> None:
        """Turn an EXPIRED verdict into `mark_stale`; called after `_lock` is released."""
        if verdict is _Freshness.EXPIRED:
            self.mark_stale(category)

    # --- v2 cache queries ----------------------------------------------------------------

    def has_cached_data(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        """Whether anything (even None) was ever stored for `category`, fresh or not."""
        with self._lock:
            return category in self._cache

    def is_cache_valid(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        """Whether the v2 entry can be served as is; False for both missing and stale.

        Checks, in order: explicit staleness, presence, timestamp, TTL, validation-file mtime,
        then `_additional_cache_validation`. TTL or mtime expiry calls `mark_stale`.
        """
        with self._lock:
            verdict = self._v2_validity(category)
        self._settle(category, verdict)
        return verdict is _Freshness.FRESH

    def needs_refresh(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        """Whether loaded v2 data went stale; False for a never-loaded category.

        TTL or mtime expiry calls `mark_stale`. The subclass hook is not consulted.
        """
        with self._lock:
            verdict = self._v2_freshness(category)
        self._settle(category, verdict)
        return verdict in (_Freshness.STALE, _Freshness.EXPIRED)

    def should_fetch_data(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        """Whether a read must go to the source: initial load or refresh alike."""
        return not self.is_cache_valid(category)

    # --- v2 cache bookkeeping ------------------------------------------------------------

    def _mark_stale_impl(self, category: MODEL_REFERENCE_CATEGORY) -> None:
        """Flag the v2 entry stale; it stays readable through `has_cached_data`."""
        with self._lock:
            self._stale_categories.add(category)

    def _mark_category_fresh(self, category: MODEL_REFERENCE_CATEGORY) -> None:
        """Stamp the v2 entry now, clear its stale flag and record its validation mtime."""
        with self._lock:
            self._category_timestamps[category] = self._clock()
            self._stale_categories.discard(category)
            self._expired_why.pop(category, None)
            _record_mtime(
                self._last_known_mtimes, category, self._get_file_path_for_validation(category)
            )

    def _invalidate_category_timestamp(self, category: MODEL_REFERENCE_CATEGORY) -> None:
        """Forget when `category` was stored, leaving its payload in place."""
        with self._lock:
            self._category_timestamps.pop(category, None)

    def _get_from_cache(self, category: MODEL_REFERENCE_CATEGORY) -> dict[str, Any] | None:
        """Return the v2 data if valid, else None; counts a hit or a miss.

        Validation and read happen under one lock hold, so the data returned is the data
        that was validated. An entry held as bytes is parsed after the lock is released.
        """
        with self._lock:
            verdict = self._v2_validity(category)
            entry = self._cache.get(category) if verdict is _Freshness.FRESH else None
            (self._hits if entry is not None else self._misses)[category] += 1
        self._settle(category, verdict)
        return _parsed(entry)

    def _store_in_cache(self, category: MODEL_REFERENCE_CATEGORY, data: _Entry | None) -> None:
        """Store `data` (or the JSON bytes of an object); only non-None data is marked fresh,
        so None is retried next read."""
        with self._lock:
            self._cache[category] = data
            if data is not None:
                self._mark_category_fresh(category)

    def _invalidate_cache(self, category: MODEL_REFERENCE_CATEGORY) -> None:
        """Mark `category` stale and drop its timestamp, without notifying listeners."""
        with self._lock:
            self._stale_categories.add(category)
            self._category_timestamps.pop(category, None)

    def _fetch_with_cache(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        fetch_fn: Callable[[], dict[str, Any] | None],
        *,
        force_refresh: bool = False,
    ) -> dict[str, Any] | None:
        """Serve valid cached data, else call `fetch_fn`, store its result (even None), return it.

        `fetch_fn` runs outside the lock: it may be slow I/O. A forced refresh counts as a miss.
        """
        if not force_refresh:
            cached = self._get_from_cache(category)
            if cached is not None:
                return cached
        else:
            self._count(self._misses, category)
        data = fetch_fn()
        self._store_in_cache(category, data)
        return data

    # --- legacy cache --------------------------------------------------------------------

    def _legacy_valid(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        """Legacy validity; call with `_lock` held. Expiry here does not call `mark_stale`."""
        if category in self._stale_legacy_categories:
            return False
        if category not in self._legacy_json_cache and (
            category not in self._legacy_json_string_cache
        ):
            return False
        stored_at = self._legacy_cache_timestamps.get(category)
        if stored_at is None:
            return False
        path = self._get_legacy_file_path_for_validation(category)
        recorded = self._legacy_last_known_mtimes.get(category)
        why = _expiry(self._ttl_elapsed(stored_at), path, recorded)
        if why is not None:
            self._legacy_expired_why[category] = why
        return why is None

    def is_legacy_cache_valid(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        """Whether the legacy entry (dict and/or string) can be served as is."""
        with self._lock:
            return self._legacy_valid(category)

    def _mark_legacy_category_fresh(self, category: MODEL_REFERENCE_CATEGORY) -> None:
        """Stamp the legacy entry now, clear its stale flag and record its validation mtime."""
        with self._lock:
            self._legacy_cache_timestamps[category] = self._clock()
            self._stale_legacy_categories.discard(category)
            self._legacy_expired_why.pop(category, None)
            path = self._get_legacy_file_path_for_validation(category)
            _record_mtime(self._legacy_last_known_mtimes, category, path)

    def _get_legacy_from_cache(
        self, category: MODEL_REFERENCE_CATEGORY
    ) -> tuple[dict[str, Any] | None, str | None]:
        """Return `(dict, string)` if the legacy entry is valid, else `(None, None)`."""
        with self._lock:
            if not self._legacy_valid(category):
                self._legacy_misses[category] += 1
                return None, None
            pair = (
                self._legacy_json_cache.get(category),
                self._legacy_json_string_cache.get(category),
            )
            hit = pair != (None, None)
            (self._legacy_hits if hit else self._legacy_misses)[category] += 1
            return pair

    def _store_legacy_in_cache(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        legacy_dict: dict[str, Any] | None,
        legacy_string: str | None,
    ) -> None:
        """Store both legacy forms; fresh only when at least one of them is not None."""
        with self._lock:
            self._legacy_json_cache[category] = legacy_dict
            self._legacy_json_string_cache[category] = legacy_string
            if legacy_dict is not None or legacy_string is not None:
                self._mark_legacy_category_fresh(category)

    def _invalidate_legacy_cache(self, category: MODEL_REFERENCE_CATEGORY) -> None:
        """Mark the legacy entry stale and drop its timestamp; the v2 entry is untouched."""
        with self._lock:
            self._stale_legacy_categories.add(category)
            self._legacy_cache_timestamps.pop(category, None)

    # --- statistics ----------------------------------------------------------------------

    def _count(self, counter: Counter[MODEL_REFERENCE_CATEGORY], category: _Category) -> None:
        """Increment one hit/miss counter under the lock."""
        with self._lock:
            counter[category] += 1

    def cache_counters(self) -> CacheCounters:
        """Return a consistent snapshot of hit and miss counts per category."""
        with self._lock:
            return CacheCounters(
                hits=_frozen(self._hits),
                misses=_frozen(self._misses),
                legacy_hits=_frozen(self._legacy_hits),
                legacy_misses=_frozen(self._legacy_misses),
            )

    def supports_statistics(self) -> bool:
        """True: the caching layer always counts hits and misses."""
        return True

    def get_statistics(self) -> dict[str, Any]:
        """Return hit/miss counts keyed by category value, plus how many categories are cached.

        `cached_categories` counts categories for which `has_cached_data` is True.
        Subclasses adding their own counters should extend this dict.
        """
        with self._lock:
            counters = self.cache_counters()
            cached = len(self._cache)
        return {
            "cache_hits": _by_value(counters.hits),
            "cache_misses": _by_value(counters.misses),
            "legacy_cache_hits": _by_value(counters.legacy_hits),
            "legacy_cache_misses": _by_value(counters.legacy_misses),
            "cached_categories": cached,
        }


def _parsed(entry: _Entry | None) -> dict[str, Any] | None:
    """A v2 entry as readers get it: held bytes are parsed, into a new dict at each read."""
    if isinstance(entry, bytes):
        return load_json_object("a cached v2 body", entry.decode())
    return entry


def _expiry(ttl_elapsed: bool, path: Path | None, recorded: float | None) -> str | None:
    """Why an entry expired: "ttl", "mtime" (its validation file changed), or None."""
    if ttl_elapsed:
        return "ttl"
    return "mtime" if _mtime_changed(path, recorded) else None


def _record_mtime(
    mtimes: dict[MODEL_REFERENCE_CATEGORY, float],
    category: MODEL_REFERENCE_CATEGORY,
    path: Path | None,
) -> None:
    """Remember `path`'s current mtime, or forget it when there is no file to watch."""
    mtime = _read_mtime(path)
    if mtime is None:
        mtimes.pop(category, None)
    else:
        mtimes[category] = mtime


def _by_value(counts: _Counts) -> dict[str, int]:
    """Key counts by category value, the form JSON and logs want."""
    return {category.value: n for category, n in counts.items()}
