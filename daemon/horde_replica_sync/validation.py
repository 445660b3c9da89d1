"""What a body must be before it may replace a published file (pure; no I/O).

The bar is what upstream's readers need, and no higher: they tolerate unknown fields and
values (a new baseline must not be rejected), and they re-key records by `name`, which may
differ from the key (the real controlnet data does this). So: UTF-8 JSON, a top-level
object of name -> record objects, each record with a string `name`. `models.csv` must be
UTF-8 CSV with a `name` column. The shrink guard refuses payloads that would silently drop
most of a category.

A v2 file of a known category is held to more: each record must carry what upstream's
readers need for that category (`record_rules`), or the file is refused, naming the records.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, Layer
from horde_replica_sync.errors import InvalidPayload, ShrinkRefused
from horde_replica_sync.record_rules import UNCACHED, count_usable, unusable_records


class _Record(BaseModel):
    """The fields every reader relies on; everything else passes through untouched."""

    model_config = ConfigDict(extra="ignore")
    name: str


_RECORDS: TypeAdapter[dict[str, _Record]] = TypeAdapter(dict[str, _Record], config=UNCACHED)


@dataclass(frozen=True, slots=True)
class Payload:
    """A body that passed validation: its bytes and how many records readers will see.

    Only the bytes are held. A parse tree is tens of thousands of small objects; held across
    a run's awaits, they are interleaved with what lives on, which keeps the allocator's
    arenas from being returned (issue 22: resident memory). `data` parses on demand.
    """

    content: bytes
    records: int
    is_json: bool = True  # False for CSV

    @property
    def data(self) -> dict[str, Any] | None:
        """The parsed JSON object, a new one at each access; None for CSV."""
        return load_json_object("a validated body", self.content.decode()) if self.is_json else None


def parse_json_records(
    what: str,
    content: bytes,
    *,
    category: MODEL_REFERENCE_CATEGORY | None = None,
    layer: Layer | None = None,
) -> Payload:
    """Validate a JSON reference file (`{name: record}`); `what` names it in errors.

    With `category` and `layer=Layer.V2`, every record must also pass that category's rules
    (`record_rules`); otherwise (legacy, or no category) only the common bar applies.

    pydantic validates the text itself first (no Python parse tree: a fraction of the
    objects and time). Its JSON parser rejects a few bodies `json` accepts (lone surrogate
    escapes, nesting beyond 200 levels), and its errors read differently, so whatever it
    refuses is judged again the `json` way, which decides and words the error.
    """
    text = decode_utf8(what, content)
    try:
        if category is not None and layer is Layer.V2:
            return Payload(content, count_usable(category, text))
        return Payload(content, len(_RECORDS.validate_json(text)))
    except ValidationError:
        return Payload(content, _parsed_records(what, text, category, layer))


def _parsed_records(
    what: str, text: str, category: MODEL_REFERENCE_CATEGORY | None, layer: Layer | None
) -> int:
    """`parse_json_records` through `json` and a dict: its record count, or its error."""
    data = load_json_object(what, text)
    if category is not None and layer is Layer.V2:
        refused = unusable_records(category, data)
        if refused:
            raise InvalidPayload(what, describe_refused(refused, len(data)))
        return len(data)
    try:
        _RECORDS.validate_python(data)
    except ValidationError as exc:
        raise InvalidPayload(what, f"bad record: {describe_validation_error(exc)}") from exc
    return len(data)


SHOWN_REFUSED = 3  # records named in the error; the rest are counted


def describe_refused(refused: list[tuple[str, str]], total: int) -> str:
    """`N of M records unusable ...: key: reason; ...` naming the first `SHOWN_REFUSED`."""
    shown = "; ".join(f"{key}: {reason}" for key, reason in refused[:SHOWN_REFUSED])
    more = f" (first {SHOWN_REFUSED})" if len(refused) > SHOWN_REFUSED else ""
    return f"{len(refused)} of {total} records unusable by upstream's readers: {shown}{more}"


def parse_models_csv(what: str, content: bytes) -> Payload:
    """Validate the text repo's `models.csv`: UTF-8, a header with `name`, named rows."""
    text = decode_utf8(what, content)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise InvalidPayload(what, f"not valid CSV ({exc})") from exc
    if "name" not in (reader.fieldnames or ()):
        raise InvalidPayload(what, "no header row with a 'name' column")
    for number, row in enumerate(rows, start=2):
        if not (row.get("name") or "").strip():
            raise InvalidPayload(what, f"row {number} has no name")
    return Payload(content, len(rows), is_json=False)


def load_json_object(what: str, text: str) -> dict[str, Any]:
    """Parse `text` as a JSON object, or raise `InvalidPayload` saying why not."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidPayload(what, f"not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise InvalidPayload(what, "JSON nested too deeply") from exc
    if not isinstance(data, dict):
        raise InvalidPayload(what, f"top level is a JSON {type(data).__name__}, not an object")
    return data


def check_shrink(what: str, previous: int | None, current: int, max_fraction: float) -> None:
    """Refuse a payload that empties a category or drops more than `max_fraction` of it."""
    if not previous or current >= previous:
        return
    if current == 0:
        raise ShrinkRefused(what, f"would empty the category ({previous} records now)")
    dropped = (previous - current) / previous
    if dropped > max_fraction:
        reason = (
            f"would drop {previous - current} of {previous} records ({dropped:.0%}), "
            f"more than the {max_fraction:.0%} the shrink guard allows"
        )
        raise ShrinkRefused(what, reason)


def decode_utf8(what: str, content: bytes) -> str:
    """`content` as text, or `InvalidPayload` naming the first bad byte."""
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPayload(what, f"not UTF-8 (byte {exc.start})") from exc


def describe_validation_error(exc: ValidationError) -> str:
    """The first pydantic error as `location: message`, short enough for a log line."""
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"]) or "<root>"
    return f"{location}: {error['msg']}"
