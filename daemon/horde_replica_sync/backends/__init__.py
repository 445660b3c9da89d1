"""Model reference backends: the abstract contract and the shared caching layer."""

from __future__ import annotations

from horde_replica_sync.backends.base import CategoryMetadata, ModelReferenceBackend, ReplicateMode
from horde_replica_sync.backends.replica_base import CacheCounters, ReplicaBackendBase

__all__ = [
    "CacheCounters",
    "CategoryMetadata",
    "ModelReferenceBackend",
    "ReplicaBackendBase",
    "ReplicateMode",
]
