"""Whether a body shows the change its metadata announced (pure; no I/O).

A data request carries the stamp that made the daemon fetch (sources/primary.py), so no cache
can answer it with a body it stored for an older stamp. A cache that ignores query strings, or
a PRIMARY that bumps its metadata before its data, still can. v2 records carry
`metadata.updated_at`, so a v2 body can prove it is at least as new as the stamp S:

- some record was updated at or after S (a create or update at S), or
- the metadata's last operation is a delete and the deleted model is gone from the body
  (a delete moves `last_updated` without any record getting newer).

A body whose records carry no timestamps cannot tell either way and is taken as it is, and so
is any body when the metadata says no write happened since it was initialized
(`last_operation_type: null`): upstream initializes metadata lazily, at its first read, so
its stamp is later than the records it describes without anything having changed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from horde_replica_sync.sources.primary import Operation

# A record is stamped a moment before its category's metadata is (upstream writes the file,
# then records the operation), never long after it.
SKEW_SECONDS: Final = 60


class Evidence(enum.StrEnum):
    """What a v2 body says about the stamp it was fetched for."""

    SHOWN = "shown"  # a record as new as the stamp, or the announced delete done
    OLDER = "older"  # every timestamp older than the stamp, and no delete explains it
    SILENT = "silent"  # no record carries a timestamp


def judge(records: Mapping[str, object], stamp: int, operation: Operation | None) -> Evidence:
    """What the v2 `records` say about `stamp`, given the metadata's last `operation`.

    A record updated after the stamp by more than `SKEW_SECONDS` proves nothing: the stamp is
    the category's last write, so such a time is wrong, and one wrong record must not make
    every later stamp look shown.
    """
    if operation is not None and operation.kind is None:  # an initialization, not a write
        return Evidence.SILENT
    times = (t for t in map(_updated_at, records.values()) if t is not None)
    newest = max((t for t in times if t <= stamp + SKEW_SECONDS), default=None)
    if newest is None:
        return Evidence.SILENT
    if newest >= stamp:
        return Evidence.SHOWN
    deleted = operation.model if operation is not None and operation.kind == "delete" else None
    if deleted is not None and not _holds(records, deleted):
        return Evidence.SHOWN
    return Evidence.OLDER


def _updated_at(record: object) -> int | None:
    if not isinstance(record, dict):
        return None
    metadata = record.get("metadata")
    stamp = metadata.get("updated_at") if isinstance(metadata, dict) else None
    # bool is an int subclass; `true` is not a timestamp
    return stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else None


def _holds(records: Mapping[str, object], model: str) -> bool:
    """Whether the body still has `model` (by key or by `name`)."""
    if model in records:
        return True
    return any(isinstance(r, dict) and r.get("name") == model for r in records.values())
