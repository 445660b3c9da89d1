"""Whether a body shows the change its metadata announced (pure; no I/O).

A data request carries the stamp that made the daemon fetch (sources/primary.py), so no cache
can answer it with a body it stored for an older stamp. A cache that ignores query strings, or
a PRIMARY that bumps its metadata before its data, still can. What the real PRIMARY (upstream
8.6.2) leaves as evidence of a write, checked against it in tests/interop/test_writes.py:

- the bytes: every write rewrites the category's file, and the v2 body is re-derived from it,
  so a write changes the v2 body's bytes. A body whose bytes are those already held at the last
  recorded stamp proves nothing, whatever it says: it is exactly what a cache that ignores the
  key hands back. So a moved stamp is never recorded for unchanged bytes (a stamp that went
  back announces no write: a rollback is judged by record times alone, as before).
- `metadata.updated_at`: a v2-canonical write stamps the record it writes, and the category's
  metadata a moment later (`EARLY_SECONDS`: the same or the next second). A legacy-canonical
  write bumps only the v1 metadata and re-derives v2 records from the legacy file: their times
  are whatever the legacy records carry (none at all for text_generation, re-derived from its
  CSV), so for a legacy write changed bytes are the evidence.
- a delete moves `last_updated` without any record getting newer: the deleted model gone.

A body whose records carry no timestamps cannot tell either way and is taken once its bytes
changed, and so is any body when the metadata says no write happened since it was initialized
(`last_operation_type: null`): upstream initializes metadata lazily, at its first read, so
its stamp is later than the records it describes without anything having changed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from horde_replica_sync.ports import Operation

# A record is stamped a moment before its category's metadata is (upstream writes the file,
# re-derives v2, then records the operation: across a second boundary 1 in 6 image_generation
# writes on the real PRIMARY), never long after it.
SKEW_SECONDS: Final = 60
EARLY_SECONDS: Final = 5


class Evidence(enum.StrEnum):
    """What a v2 body says about the stamp it was fetched for."""

    SHOWN = "shown"  # a record as new as the stamp, or the announced delete done
    OLDER = "older"  # every timestamp older than the stamp, and no delete explains it
    SILENT = "silent"  # no record carries a timestamp


def judge(
    records: Mapping[str, object],
    stamp: int,
    operation: Operation | None,
    *,
    changed: bool | None = None,
    legacy_write: bool = False,
) -> Evidence:
    """What the v2 `records` say about `stamp`, given the metadata's last `operation`.

    `changed`: whether the body's bytes differ from those held at the last recorded stamp
    (None: nothing held, or the stamp did not move). `legacy_write`: the stamp comes from the
    v1 metadata alone (a legacy-canonical write), so v2 record times do not speak for it.

    A record updated after the stamp by more than `SKEW_SECONDS` proves nothing: the stamp is
    the category's last write, so such a time is wrong, and one wrong record must not make
    every later stamp look shown.
    """
    if operation is not None and operation.kind is None:  # an initialization, not a write
        return Evidence.SILENT
    if changed is False:  # a write was announced and these bytes are the ones held: no proof
        return Evidence.OLDER
    times = (t for t in map(_updated_at, records.values()) if t is not None)
    newest = max((t for t in times if t <= stamp + SKEW_SECONDS), default=None)
    if newest is None:
        return Evidence.SILENT
    if newest >= stamp - EARLY_SECONDS:
        return Evidence.SHOWN
    deleted = operation.model if operation is not None and operation.kind == "delete" else None
    if deleted is not None and not _holds(records, deleted):
        return Evidence.SHOWN
    if legacy_write and changed:
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
