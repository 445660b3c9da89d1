"""The seams of the sync engine: what it needs from sources, the cache and the store.

Each is a small `Protocol`, so tests drive the engine with in-memory fakes (tests/fakes.py)
and the daemon with the real HTTP sources, the REPLICA backend and the replica store. The
values that cross the seams (`Fetched`, `DataKey`, `Stamps`, ...) live here too, so the engine
imports no HTTP library: only `sources/` speak HTTP (tests/engine/test_imports.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Protocol

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, GithubRepo, Layer
from horde_replica_sync.report import MissReason
from horde_replica_sync.state import ReplicaState


@dataclass(frozen=True, slots=True)
class Fetched:
    """One body as a source delivered it; `url` is redacted (it is only ever shown)."""

    url: str
    content: bytes
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class NotModified:
    """GitHub answered 304 to our `If-None-Match`: the published copy is current.

    `url` is redacted: it is only ever shown.
    """

    url: str
    etag: str


@dataclass(frozen=True, slots=True)
class DataKey:
    """What a data request carries so that HTTP caches key it by content (`PrimarySource`)."""

    stamp: int | None = None  # the metadata stamp the body must be as new as
    # The legacy layer's: the v2 body it goes with (a digest prefix). A legacy body shows no
    # timestamp, so this keeps a cache from holding an old one under a stamp asked for early:
    # nobody can name a v2 body before the PRIMARY serves it.
    v2: str | None = None
    fresh: bool = False  # past every cache: a one-off key


PLAIN: Final = DataKey()
"""No key: what a request carries when no metadata said what to expect."""


@dataclass(frozen=True, slots=True)
class Operation:
    """The last write the metadata reports for a category: what a body must show."""

    kind: str | None  # "create", "update", "delete"; None: no write since it was initialized
    model: str | None = None


INITIALIZED: Final = Operation(None)
"""The metadata's `last_operation_type: null`: its stamp is when it was initialized, not a write."""


@dataclass(frozen=True, slots=True)
class Stamps:
    """Each category's newest `last_updated`, and the categories whose entry was unusable."""

    last_updated: dict[MODEL_REFERENCE_CATEGORY, int]
    unusable: dict[MODEL_REFERENCE_CATEGORY, str]
    # The last operation of the family that gave the newest stamp, where it names one.
    operations: dict[MODEL_REFERENCE_CATEGORY, Operation] = field(default_factory=dict)
    # Categories whose newest stamp is the v1 family's alone: a legacy-canonical PRIMARY's
    # legacy write, which re-derives v2 records without stamping them (evidence.py).
    legacy_writes: frozenset[MODEL_REFERENCE_CATEGORY] = frozenset()


class Primary(Protocol):
    """The PRIMARY's HTTP API (sources/primary.py)."""

    def v2_url(self, category: MODEL_REFERENCE_CATEGORY) -> str:
        """The v2 endpoint of `category`, for messages."""
        ...

    async def fetch_v2(
        self, category: MODEL_REFERENCE_CATEGORY, key: DataKey = PLAIN
    ) -> Fetched | None:
        """The v2 body under the content `key`; None on 404."""
        ...

    async def fetch_legacy(
        self, category: MODEL_REFERENCE_CATEGORY, key: DataKey = PLAIN
    ) -> Fetched | None:
        """The v1 body under the content `key`; None on 404 or when there is no legacy format."""
        ...

    def catalog_url(self, path: str) -> str:
        """A catalog endpoint, for messages."""
        ...

    async def fetch_catalog(
        self, path: str, *, revision: str | None = None, fresh: bool = False
    ) -> Fetched | None:
        """A catalog's export or probe page, keyed by `revision`; None on 404."""
        ...

    async def fetch_last_updated(self) -> Stamps:
        """Each category's newest `last_updated` from the metadata endpoints."""
        ...


class Github(Protocol):
    """GitHub raw legacy files (sources/github.py)."""

    async def fetch(self, repo: GithubRepo, file: str, etag: str | None) -> Fetched | NotModified:
        """One file, conditionally on `etag`."""
        ...


class ReplicaCache(Protocol):
    """What the engine asks of the REPLICA backend (backends/replica.py): the seed API."""

    def should_fetch_data(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        """Whether v2 data must be fetched (first load or refresh)."""
        ...

    def needs_refresh(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        """Whether v2 data that was loaded went stale."""
        ...

    def has_cached_data(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        """Whether v2 data was ever stored, fresh or not."""
        ...

    def is_legacy_cache_valid(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        """Whether the legacy entry can be served as is."""
        ...

    def has_legacy_data(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        """Whether legacy data was ever loaded (the legacy twin of `needs_refresh`'s premise)."""
        ...

    def mark_stale(self, category: MODEL_REFERENCE_CATEGORY) -> None:
        """The PRIMARY says `category` moved."""
        ...

    def expiry_reason(self, category: MODEL_REFERENCE_CATEGORY, layer: Layer) -> MissReason | None:
        """Why a loaded entry expired (TTL or file changed), when the cache knows."""
        ...

    def count_lookup(self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, *, hit: bool) -> None:
        """Count one cache hit or miss."""
        ...

    def accept(
        self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, content: bytes | None
    ) -> None:
        """Cache the bytes just published (None: nothing there)."""
        ...

    def invalidate(self, category: MODEL_REFERENCE_CATEGORY, layer: Layer) -> None:
        """Make the next run fetch `layer` again."""
        ...


class Publisher(Protocol):
    """Where validated bytes go: the replica store, or a comparison for a dry run."""

    def read(self, relpath: str) -> bytes | None:
        """The published bytes of `relpath`; None when missing."""
        ...

    def digest(self, relpath: str) -> str | None:
        """The sha256 of what `read` would return (None when missing), streamed."""
        ...

    def holds(self, relpath: str, content: bytes) -> bool:
        """Whether `relpath` is exactly `content`, compared without reading it whole."""
        ...

    def publish(self, relpath: str, content: bytes, *, unchanged: bool) -> bool:
        """Make `relpath` hold `content` unless it is `unchanged`; True if it changed."""
        ...

    def save_state(self, state: ReplicaState, *, durable: bool) -> None:
        """Persist the bookkeeping, after the data it describes (fsynced when `durable`)."""
        ...
