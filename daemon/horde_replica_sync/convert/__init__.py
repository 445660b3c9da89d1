"""Turn legacy reference files into the v2 file a PRIMARY would serve (pure; no I/O, no clock).

Used when the PRIMARY is unreachable and the legacy files came from GitHub: upstream's offline
reader only reads v2 files, so we derive them the way upstream `horde-model-reference` 8.6.2
does (docs/upstream-protocol.md §7). The output is JSON-equal to `GET /v2/{category}` on a
PRIMARY seeded with the same legacy files, record for record, except metadata timestamps:

* Timestamps. The PRIMARY stamps `metadata.created_at`/`updated_at` with its data-dir init
  time. We copy timestamps a legacy record carries; missing ones are filled with the injected
  `now` (the engine passes the sync time) or, without `now`, left out (readers accept both).
* What the PRIMARY adds when serving is added too: `licensing` = the explicit "no assertion"
  conclusion when a record has none, and on text models a `guidance` summary (`legacy_label`
  when `instruct_format` is set, else `undocumented`; a fresh PRIMARY's catalog assigns nothing).

Validation follows upstream: one record that fails aborts the whole category
(`InvalidPayload`), so the caller keeps its last good v2 file. Rows of `models.csv` that
upstream skips (no name, unparsable size or settings) are skipped here as well. Deviations:
an empty input file is an error here, where upstream would publish `{}`; a NaN/Infinity value
is refused (upstream writes it, then its PRIMARY cannot serve it); SPDX expressions in a
legacy `licensing` block are checked by a simplified grammar (see `licence_symbols`).

Keys follow the PRIMARY's order, so with the PRIMARY's `now` the bytes usually match too.

The package by concern: `legacy_models` (the input as upstream validates it), `records` (the
JSON categories), `text` (models.csv) and `text_groups` (text model grouping), `v2` (what
every record shares and what the PRIMARY adds when serving).
"""

from __future__ import annotations

from collections.abc import Mapping

from horde_replica_sync.categories import LEGACY_DIR, MODEL_REFERENCE_CATEGORY, spec_for
from horde_replica_sync.convert.records import convert_legacy_json
from horde_replica_sync.convert.text import convert_text_csv
from horde_replica_sync.convert.v2 import dump_v2, served_record
from horde_replica_sync.errors import InvalidPayload
from horde_replica_sync.validation import decode_utf8


def convertible(category: MODEL_REFERENCE_CATEGORY) -> bool:
    """Whether `category` has legacy files to convert (the 9 image ones and text_generation)."""
    return spec_for(category).convertible


def convert_legacy(
    category: MODEL_REFERENCE_CATEGORY, files: Mapping[str, bytes], *, now: int | None = None
) -> bytes:
    """Convert the legacy file(s) of `category` into the bytes of its v2 file.

    `files` maps legacy file names (as published under `legacy/`) to their bytes; the one this
    category needs is `<legacy name>.json`, or `models.csv` for text_generation (`db.json` is
    ignored: upstream builds v2 from the CSV). `now` (unix seconds) fills missing metadata
    timestamps; without it they are left out.

    Raises:
        InvalidPayload: the input is missing or cannot be converted; nothing should be published.
    """
    source = spec_for(category).convert_from
    if source is None:
        raise InvalidPayload(category.value, "has no legacy format to convert")
    what = f"{category.value} ({LEGACY_DIR}/{source})"
    content = files.get(source)
    if content is None:
        raise InvalidPayload(what, "the legacy file is missing")
    if not content.strip():
        raise InvalidPayload(what, "the legacy file is empty")
    text = decode_utf8(what, content)
    if category is MODEL_REFERENCE_CATEGORY.text_generation:
        records = convert_text_csv(what, text)
    else:
        records = convert_legacy_json(what, category, text)
    served = {key: served_record(record, now) for key, record in records.items()}
    return dump_v2(what, served)


__all__ = ["convert_legacy", "convertible"]
