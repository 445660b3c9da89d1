"""text_generation from models.csv: typed rows, the rows upstream skips, and their v2 records.

upstream builds text v2 from the CSV (not `db.json`): a row without a name or with an
unparsable size or settings is skipped, a row that breaks the file's shape fails it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import Field, HttpUrl, TypeAdapter, ValidationError

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY
from horde_replica_sync.convert.legacy_models import Settings, StrictModel
from horde_replica_sync.convert.text_groups import TEXT_BACKEND_PREFIXES, text_model_group
from horde_replica_sync.convert.v2 import SCHEMA_VERSION, drop_none, model_classification
from horde_replica_sync.errors import InvalidPayload
from horde_replica_sync.validation import describe_validation_error

_C = MODEL_REFERENCE_CATEGORY


class _GuidanceSource(StrictModel):
    url: HttpUrl
    title: str | None = None
    note: str | None = None


class _SupportClaim(StrictModel):
    status: Literal["supported", "unsupported", "unknown"]
    sources: list[_GuidanceSource] = Field(default_factory=list)
    qualification: str | None = None


class _ContextWindow(StrictModel):
    maximum_tokens: int = Field(ge=1)
    sources: list[_GuidanceSource] = Field(default_factory=list)
    qualification: str | None = None


_SETTINGS: Final = TypeAdapter(Settings)
_CONTEXT_WINDOW: Final = TypeAdapter(_ContextWindow)
_INTERACTION_MODES: Final = TypeAdapter(
    dict[Literal["completion", "instruction", "chat"], _SupportClaim]
)
_CAPABILITIES: Final = TypeAdapter(
    dict[Literal["tool_calling", "structured_output"], _SupportClaim]
)


@dataclass(frozen=True, slots=True)
class TextRow:
    """One usable row of models.csv, typed as upstream reads it."""

    name: str
    parameters: int
    description: str = ""
    version: str = ""
    style: str = ""
    nsfw: bool = False
    baseline: str = ""
    url: str = ""
    tags: tuple[str, ...] = ()
    instruct_format: str = ""
    display_name: str = ""
    settings: Any = None
    context_window: Any = None
    interaction_modes: Any = None
    capabilities: Any = None


class SkippedRow(Exception):
    """A CSV row upstream leaves out (it logs the reason and carries on)."""


_DURABLE_COLUMNS: Final = ("context_window", "interaction_modes", "capabilities")
_SETTING_PRIMITIVES: Final = (int, float, str, bool)


def _cell(row: Mapping[str | None, Any], column: str) -> str:
    value = row.get(column)
    return value if isinstance(value, str) else ""


def parameter_count(cell: str) -> int:
    """`parameters_bn` (billions, may be blank) as a whole parameter count.

    Raises:
        SkippedRow: not a number.
        ValueError: infinite or NaN (upstream crashes on it).
    """
    text = cell.strip()
    if not text:
        return 0
    try:
        billions = float(text)
    except ValueError:
        msg = f"invalid parameters_bn {text!r}"
        raise SkippedRow(msg) from None
    count = billions * 1_000_000_000
    if not math.isfinite(count):
        msg = f"parameters_bn {text!r} is not a finite number"
        raise ValueError(msg)
    return int(count)


def flat_settings(cell: str) -> Any:
    """The `settings` JSON: an object of primitives or lists of primitives, or None if blank."""
    text = cell.strip()
    if not text:
        return None
    settings = _parsed_cell("settings", text)
    if settings is not None and not _is_flat_mapping(settings):
        msg = "settings must hold only primitives or lists of primitives"
        raise SkippedRow(msg)
    return settings


def _parsed_cell(column: str, text: str) -> Any:
    """The JSON in a (non-blank) cell; a row with invalid JSON is skipped."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"invalid {column} JSON: {exc.msg}"
        raise SkippedRow(msg) from None


def _is_flat_mapping(value: object) -> bool:
    if not isinstance(value, dict):
        return False
    return all(
        isinstance(item, _SETTING_PRIMITIVES)
        or (isinstance(item, list) and all(isinstance(x, _SETTING_PRIMITIVES) for x in item))
        for item in value.values()
    )


def json_object_cell(column: str, cell: str) -> Any:
    """A durable-metadata column: a JSON object, or None if blank."""
    text = cell.strip()
    if not text:
        return None
    value = _parsed_cell(column, text)
    if not isinstance(value, dict):
        msg = f"{column} must be a JSON object"
        raise SkippedRow(msg)
    return value


def text_row(row: Mapping[str | None, Any]) -> TextRow:
    """Type one CSV row (a `csv.DictReader` dict).

    Raises:
        SkippedRow: upstream leaves this row out.
        ValueError: upstream fails the whole file on this row.
    """
    name = _cell(row, "name").strip()
    if not name:
        msg = "no name"
        raise SkippedRow(msg)
    parameters = parameter_count(_cell(row, "parameters_bn"))
    if "tags" in row and row["tags"] is None:
        msg = "the row ends before its tags column"
        raise ValueError(msg)
    settings = flat_settings(_cell(row, "settings"))
    durable = {column: json_object_cell(column, _cell(row, column)) for column in _DURABLE_COLUMNS}
    return TextRow(
        name=name,
        parameters=parameters,
        description=_cell(row, "description"),
        version=_cell(row, "version"),
        style=_cell(row, "style"),
        nsfw=_cell(row, "nsfw").strip().lower() == "true",
        baseline=_cell(row, "baseline"),
        url=_cell(row, "url"),
        tags=tuple(tag.strip() for tag in _cell(row, "tags").split(",") if tag.strip()),
        instruct_format=_cell(row, "instruct_format"),
        display_name=_cell(row, "display_name"),
        settings=settings,
        **durable,
    )


def read_text_rows(what: str, text: str) -> dict[str, TextRow]:
    """The usable rows of models.csv by name; a repeated name keeps its first place, last row."""
    rows: dict[str, TextRow] = {}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for line, raw in enumerate(reader, start=2):
            try:
                row = text_row(raw)
            except SkippedRow:
                continue
            except ValueError as exc:
                raise InvalidPayload(what, f"row {line}: {exc}") from exc
            rows[row.name] = row
    except csv.Error as exc:
        raise InvalidPayload(what, f"not valid CSV ({exc})") from exc
    return rows


def _revalidated(adapter: TypeAdapter[Any], value: Any) -> Any:
    if value is None:
        return None
    return adapter.dump_python(adapter.validate_python(value), mode="json", exclude_none=True)


def text_record(row: TextRow, group: str) -> dict[str, Any]:
    """The v2 record of one models.csv row (`group` is its text_model_group)."""
    return drop_none(
        (
            ("record_type", _C.text_generation.value),
            ("name", row.name),
            ("description", row.description),
            ("version", row.version),
            ("metadata", {"schema_version": SCHEMA_VERSION}),
            ("config", {"download": []}),
            ("model_classification", model_classification(_C.text_generation)),
            ("baseline", row.baseline),
            ("parameters", row.parameters),
            ("nsfw", row.nsfw),
            ("style", row.style),
            ("display_name", row.display_name),
            ("url", row.url),
            ("tags", list(row.tags)),
            ("instruct_format", row.instruct_format or None),
            ("settings", _revalidated(_SETTINGS, row.settings)),
            ("text_model_group", group),
            ("context_window", _revalidated(_CONTEXT_WINDOW, row.context_window)),
            ("interaction_modes", _revalidated(_INTERACTION_MODES, row.interaction_modes)),
            ("capabilities", _revalidated(_CAPABILITIES, row.capabilities)),
        )
    )


def convert_text_csv(what: str, text: str) -> dict[str, dict[str, Any]]:
    """Convert models.csv: one record per model, backend-prefixed duplicates left out."""
    rows = {
        name: row
        for name, row in read_text_rows(what, text).items()
        if not name.startswith(TEXT_BACKEND_PREFIXES)
    }
    converted: dict[str, dict[str, Any]] = {}
    for name, row in rows.items():
        try:
            converted[name] = text_record(row, text_model_group(name))
        except ValidationError as exc:
            raise InvalidPayload(
                what, f"record {name!r}: {describe_validation_error(exc)}"
            ) from exc
    return converted
