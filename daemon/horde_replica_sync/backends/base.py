"""The contract every model reference backend fulfils, compatible with upstream's interface.

A backend turns some source (PRIMARY API, GitHub, local files) into plain dictionaries, one per
category. Reading is mandatory; writing, cache warming, health checks, statistics and metadata
are optional capabilities: each has a `supports_*` probe that is False by default, and the
matching operations raise NotImplementedError until a subclass opts in.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

_log = structlog.get_logger(__name__)

InvalidationCallback = Callable[[MODEL_REFERENCE_CATEGORY], None]
"""Called with a category whose cached data has just become stale."""


class ReplicateMode(enum.StrEnum):
    """Whether this copy of the model reference is canonical (PRIMARY) or a copy (REPLICA)."""

    PRIMARY = "PRIMARY"
    REPLICA = "REPLICA"


class CategoryMetadata(BaseModel):
    """Operation counters and timestamps of one category, as a PRIMARY reports them.

    Timestamps are Unix seconds. Unknown fields are ignored so that a newer PRIMARY adding
    fields does not break a replica reading its metadata.
    """

    model_config = ConfigDict(extra="ignore")

    category: str
    last_updated: int
    last_operation_type: Literal["create", "update", "delete"] | None = None
    last_operation_model: str | None = None
    total_creates: int = Field(default=0, ge=0)
    total_updates: int = Field(default=0, ge=0)
    total_deletes: int = Field(default=0, ge=0)
    total_models: int = Field(default=0, ge=0)
    initialization_time: int
    last_successful_operation: int
    error_count: int = 0
    metadata_schema_version: str = "1.0.0"
    backend_type: str


def _callable_name(callback: Callable[..., object]) -> str:
    """Name a callback for logs; partials and callable objects have no `__name__`."""
    return getattr(callback, "__qualname__", None) or repr(callback)


class ModelReferenceBackend(ABC):
    """Abstract source of model reference data, one dict per category.

    Invariant: `mark_stale` is the single public way to declare a category stale; it records
    the fact (`_mark_stale_impl`) and then tells every registered listener, in registration
    order, so a manager holding converted models can drop them.
    """

    def __init__(self, mode: ReplicateMode = ReplicateMode.REPLICA) -> None:
        """Remember the replication mode and start with no invalidation listeners."""
        self._replicate_mode = mode
        self._invalidation_callbacks: list[InvalidationCallback] = []

    @property
    def replicate_mode(self) -> ReplicateMode:
        """The replication mode this backend was built for."""
        return self._replicate_mode

    def get_replicate_mode(self) -> ReplicateMode:
        """Return the replication mode (PRIMARY or REPLICA)."""
        return self._replicate_mode

    # --- reading (mandatory) -------------------------------------------------------------

    @abstractmethod
    def fetch_category(
        self, category: MODEL_REFERENCE_CATEGORY, *, force_refresh: bool = False
    ) -> dict[str, Any] | None:
        """Return `{model_name: record}` for `category`, or None when it cannot be had.

        `force_refresh` bypasses any backend-level cache. Failures are logged and yield None
        rather than raising, so one bad category does not sink a batch.
        """

    @abstractmethod
    def fetch_all_categories(
        self, *, force_refresh: bool = False
    ) -> dict[MODEL_REFERENCE_CATEGORY, dict[str, Any] | None]:
        """Return every category's data; categories that cannot be fetched map to None."""

    @abstractmethod
    async def fetch_category_async(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        *,
        httpx_client: httpx.AsyncClient | None = None,
        force_refresh: bool = False,
    ) -> dict[str, Any] | None:
        """Async `fetch_category`; reuses `httpx_client` when given, for connection pooling."""

    @abstractmethod
    async def fetch_all_categories_async(
        self,
        *,
        httpx_client: httpx.AsyncClient | None = None,
        force_refresh: bool = False,
    ) -> dict[MODEL_REFERENCE_CATEGORY, dict[str, Any] | None]:
        """Async `fetch_all_categories`; categories may be fetched concurrently."""

    @abstractmethod
    def needs_refresh(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        """Whether data already loaded for `category` has gone stale.

        False for a category never loaded: an initial fetch is not a refresh.
        """

    @abstractmethod
    def get_category_file_path(self, category: MODEL_REFERENCE_CATEGORY) -> Path | None:
        """Return the file holding `category`'s data, or None for backends without files."""

    @abstractmethod
    def get_all_category_file_paths(self) -> dict[MODEL_REFERENCE_CATEGORY, Path | None]:
        """Return `get_category_file_path` for every category."""

    @abstractmethod
    def get_legacy_json(
        self, category: MODEL_REFERENCE_CATEGORY, redownload: bool = False
    ) -> dict[str, Any] | None:
        """Return the unvalidated legacy JSON of `category`, or None when unavailable.

        `redownload` plays the role `force_refresh` plays for v2 fetches.
        """

    @abstractmethod
    def get_legacy_json_string(
        self, category: MODEL_REFERENCE_CATEGORY, redownload: bool = False
    ) -> str | None:
        """Return the legacy JSON of `category` as text, with `get_legacy_json`'s caching."""

    # --- invalidation --------------------------------------------------------------------

    def register_invalidation_callback(self, callback: InvalidationCallback) -> None:
        """Call `callback(category)` whenever a category is marked stale."""
        self._invalidation_callbacks.append(callback)

    def _notify_invalidation(self, category: MODEL_REFERENCE_CATEGORY) -> None:
        """Call every listener in registration order; a failing one is logged, not fatal.

        Iterates over a snapshot so a listener may register another without surprises.
        """
        for callback in tuple(self._invalidation_callbacks):
            try:
                callback(category)
            except Exception:
                _log.exception(
                    "invalidation_callback_failed",
                    callback=_callable_name(callback),
                    category=category.value,
                )

    @abstractmethod
    def _mark_stale_impl(self, category: MODEL_REFERENCE_CATEGORY) -> None:
        """Record, in backend-specific state, that `category` must be refetched."""

    def mark_stale(self, category: MODEL_REFERENCE_CATEGORY) -> None:
        """Declare `category` stale, then notify listeners; override `_mark_stale_impl`."""
        self._mark_stale_impl(category)
        self._notify_invalidation(category)

    # --- capability probes ---------------------------------------------------------------

    def support_any_writes(self) -> bool:
        """Whether v2 or legacy writes are supported."""
        return self.supports_writes() or self.supports_legacy_writes()

    def supports_writes(self) -> bool:
        """Whether `update_model` / `delete_model` work (usually only on a PRIMARY)."""
        return False

    def supports_legacy_writes(self) -> bool:
        """Whether the legacy-format write operations work."""
        return False

    def supports_cache_warming(self) -> bool:
        """Whether `warm_cache` / `warm_cache_async` work."""
        return False

    def supports_health_checks(self) -> bool:
        """Whether `health_check` works."""
        return False

    def supports_statistics(self) -> bool:
        """Whether `get_statistics` works."""
        return False

    def supports_metadata(self) -> bool:
        """Whether the `get_*metadata*` family works."""
        return False

    def _unsupported(self, what: str) -> str:
        """Build the NotImplementedError message naming the concrete class."""
        return f"{type(self).__name__} does not support {what}"

    # --- optional: v2 writes -------------------------------------------------------------

    def update_model(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        model_name: str,
        record_dict: dict[str, Any],
        *,
        logical_user_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Create or replace one model; writers must write atomically, then `mark_stale`."""
        raise NotImplementedError(self._unsupported("write operations"))

    def update_model_from_base_model(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        model_name: str,
        record_model: BaseModel,
        *,
        logical_user_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Write a pydantic record through `update_model`, sending only the fields set.

        `exclude_unset` keeps defaults the caller never chose out of the stored record.
        """
        if not self.supports_writes():
            raise NotImplementedError(self._unsupported("write operations"))
        self.update_model(
            category,
            model_name,
            record_model.model_dump(exclude_unset=True),
            logical_user_id=logical_user_id,
            request_id=request_id,
        )

    def delete_model(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        model_name: str,
        *,
        logical_user_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Delete one model (KeyError when absent); writers then call `mark_stale`."""
        raise NotImplementedError(self._unsupported("write operations"))

    # --- optional: legacy writes ---------------------------------------------------------

    def update_model_legacy(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        model_name: str,
        record_dict: dict[str, Any],
        *,
        logical_user_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Create or replace one model in the legacy-format files."""
        raise NotImplementedError(self._unsupported("legacy write operations"))

    def update_model_legacy_from_base_model(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        model_name: str,
        record_model: BaseModel,
        *,
        logical_user_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Write a pydantic record through `update_model_legacy`, sending only the fields set."""
        if not self.supports_legacy_writes():
            raise NotImplementedError(self._unsupported("legacy write operations"))
        self.update_model_legacy(
            category,
            model_name,
            record_model.model_dump(exclude_unset=True),
            logical_user_id=logical_user_id,
            request_id=request_id,
        )

    def delete_model_legacy(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        model_name: str,
        *,
        logical_user_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Delete one model from the legacy-format files."""
        raise NotImplementedError(self._unsupported("legacy write operations"))

    # --- optional: cache warming, health, statistics -------------------------------------

    def warm_cache(self) -> None:
        """Load every category ahead of the first request."""
        raise NotImplementedError(self._unsupported("cache warming"))

    async def warm_cache_async(self) -> None:
        """Async `warm_cache`."""
        raise NotImplementedError(self._unsupported("async cache warming"))

    def health_check(self) -> bool:
        """Return whether the backend's external dependencies answer."""
        raise NotImplementedError(self._unsupported("health checks"))

    def get_statistics(self) -> dict[str, Any]:
        """Return backend-specific performance counters."""
        raise NotImplementedError(self._unsupported("statistics"))

    # --- optional: metadata --------------------------------------------------------------

    def get_metadata(self, category: MODEL_REFERENCE_CATEGORY) -> CategoryMetadata:
        """Return the v2-format metadata of `category`."""
        raise NotImplementedError(self._unsupported("metadata tracking"))

    async def get_metadata_async(self, category: MODEL_REFERENCE_CATEGORY) -> CategoryMetadata:
        """Async `get_metadata`."""
        raise NotImplementedError(self._unsupported("async metadata tracking"))

    def get_legacy_metadata(self, category: MODEL_REFERENCE_CATEGORY) -> CategoryMetadata:
        """Return the legacy-format metadata of `category`."""
        raise NotImplementedError(self._unsupported("metadata tracking"))

    async def get_legacy_metadata_async(
        self, category: MODEL_REFERENCE_CATEGORY
    ) -> CategoryMetadata:
        """Async `get_legacy_metadata`."""
        raise NotImplementedError(self._unsupported("async metadata tracking"))

    def get_all_metadata(self) -> dict[MODEL_REFERENCE_CATEGORY, CategoryMetadata]:
        """Return the v2-format metadata of every category."""
        raise NotImplementedError(self._unsupported("metadata tracking"))

    async def get_all_metadata_async(self) -> dict[MODEL_REFERENCE_CATEGORY, CategoryMetadata]:
        """Async `get_all_metadata`."""
        raise NotImplementedError(self._unsupported("async metadata tracking"))

    def get_all_legacy_metadata(self) -> dict[MODEL_REFERENCE_CATEGORY, CategoryMetadata]:
        """Return the legacy-format metadata of every category."""
        raise NotImplementedError(self._unsupported("metadata tracking"))

    async def get_all_legacy_metadata_async(
        self,
    ) -> dict[MODEL_REFERENCE_CATEGORY, CategoryMetadata]:
        """Async `get_all_legacy_metadata`."""
        raise NotImplementedError(self._unsupported("async metadata tracking"))
