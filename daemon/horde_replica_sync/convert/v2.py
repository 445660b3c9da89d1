"""The v2 output every builder shares: schema version, metadata order, serving additions, bytes.

What the PRIMARY adds when it serves a record (timestamps, the "no assertion" licensing,
text guidance) is added by `served_record`; `dump_v2` writes the compact JSON it serves.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, spec_for
from horde_replica_sync.errors import InvalidPayload

SCHEMA_VERSION: Final = "2.1.0"
"""The record schema version upstream 8.6.2 writes."""

METADATA_KEYS: Final = ("schema_version", "created_at", "updated_at", "created_by", "updated_by")
"""The keys of a record's `metadata` block, in upstream's order."""


def drop_none(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A record (block) from key/value pairs in order, leaving out the None values."""
    return {key: value for key, value in pairs if value is not None}


def model_classification(category: MODEL_REFERENCE_CATEGORY) -> dict[str, str]:
    """The `model_classification` block upstream gives a converted record of `category`."""
    classification = spec_for(category).classification
    assert classification is not None  # by convertible()
    domain, purpose = classification
    return {"domain": domain, "purpose": purpose}


def dump_v2(what: str, records: Mapping[str, Any]) -> bytes:
    """Serialize v2 records compactly, as the PRIMARY does (UTF-8, non-ASCII kept as is)."""
    try:
        text = json.dumps(records, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidPayload(what, f"the result is not valid JSON ({exc})") from exc


def unknown_licensing() -> dict[str, Any]:
    """The conclusion the PRIMARY serves for a record that carries no licensing."""
    return {
        "license_expression": "NOASSERTION",
        "license_ids": [],
        "commercial_use": "unknown",
        "redistribution": "unknown",
        "obligations": [],
        "evidence": [],
        "notes": "No reviewed licensing conclusion is currently available.",
        "files": {},
    }


def served_record(record: Mapping[str, Any], now: int | None) -> dict[str, Any]:
    """A converted record as the PRIMARY serves it: stamped, with licensing (and guidance)."""
    served = dict(record)
    metadata = stamp_metadata(served.get("metadata"), now)
    if metadata is not None:
        served["metadata"] = metadata
    served.setdefault("licensing", unknown_licensing())
    if served.get("record_type") == MODEL_REFERENCE_CATEGORY.text_generation.value:
        served["guidance"] = text_guidance(served.get("instruct_format"))
    return served


def stamp_metadata(metadata: Mapping[str, Any] | None, now: int | None) -> dict[str, Any] | None:
    """Fill missing `created_at`/`updated_at` from `now`, keeping upstream's key order."""
    if now is None:
        return None if metadata is None else dict(metadata)
    filled = {"created_at": now, "updated_at": now, **(metadata or {})}
    ordered = {key: filled[key] for key in METADATA_KEYS if key in filled}
    return ordered | filled


def text_guidance(instruct_format: object) -> dict[str, Any]:
    """The guidance summary the PRIMARY adds to a text record (no catalog assignments)."""
    labelled = isinstance(instruct_format, str) and instruct_format.strip()
    status = "legacy_label" if labelled else "undocumented"
    return {"status": status, "primary_profile_id": None, "supplemental_profile_ids": []}
