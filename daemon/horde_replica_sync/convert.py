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
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from horde_replica_sync.categories import LEGACY_DIR, MODEL_REFERENCE_CATEGORY, spec_for
from horde_replica_sync.errors import InvalidPayload
from horde_replica_sync.validation import (
    decode_utf8,
    describe_validation_error,
    load_json_object,
)

_C = MODEL_REFERENCE_CATEGORY

SCHEMA_VERSION: Final = "2.1.0"
"""The record schema version upstream 8.6.2 writes."""
LEGACY_METADATA_SCHEMA_VERSION: Final = "1.0.0"
"""What upstream assumes when a legacy record's own metadata block names no schema version."""
MISSING_SHA256: Final = "FIXME"
"""Upstream's placeholder checksum for a file the legacy data gives none for."""
# Old spellings of image baselines; anything else is kept as written.
BASELINE_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "stable diffusion 1": "stable_diffusion_1",
        "stable diffusion 2": "stable_diffusion_2_768",
        "stable diffusion 2 512": "stable_diffusion_2_512",
    }
)

# The only styles an image_generation record may have; another one fails the category.
IMAGE_STYLES: Final = frozenset({"generalist", "anime", "furry", "artistic", "other", "realistic"})

# Legacy `requirements.karras` (a bool) becomes this `schedulers` list.
KARRAS_SCHEDULERS: Final[Mapping[bool, str]] = MappingProxyType({True: "karras", False: "normal"})

# Substrings of a file name that mark a download as known to be slow.
SLOW_DOWNLOAD_MARKERS: Final = ("civitai",)

# Name prefixes of the duplicate text entries generated per backend; not records of their own.
TEXT_BACKEND_PREFIXES: Final = ("aphrodite/", "koboldcpp/")


_METADATA_KEYS: Final = ("schema_version", "created_at", "updated_at", "created_by", "updated_by")


# --------------------------------------------------------------------------- public API


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
    if category is _C.text_generation:
        records = convert_text_csv(what, text)
    else:
        records = convert_legacy_json(what, category, text)
    served = {key: served_record(record, now) for key, record in records.items()}
    return dump_v2(what, served)


# --------------------------------------------------------------------------- input decoding


def _classification(category: MODEL_REFERENCE_CATEGORY) -> tuple[str, str]:
    classification = spec_for(category).classification
    assert classification is not None  # by convertible()
    return classification


def dump_v2(what: str, records: Mapping[str, Any]) -> bytes:
    """Serialize v2 records compactly, as the PRIMARY does (UTF-8, non-ASCII kept as is)."""
    try:
        text = json.dumps(records, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidPayload(what, f"the result is not valid JSON ({exc})") from exc


# --------------------------------------------------------------------------- legacy input models

_SettingValue = int | float | str | list[int] | list[float] | list[str] | bool
_Settings = dict[str, _SettingValue]
_Permission = Literal["allowed", "allowed_with_conditions", "prohibited", "unknown"]
_Obligation = Literal[
    "attribution",
    "include_license",
    "share_alike",
    "disclose_source",
    "network_source_disclosure",
    "responsible_use_restrictions",
    "other",
]
_LICENCE_TOKEN = re.compile(r"[()]|[^\s()]+")
_LICENCE_OPERATORS = frozenset({"AND", "OR"})


def licence_symbols(expression: str) -> set[str]:
    """The licence identifiers in an SPDX expression (`X WITH Y` counts as one).

    An approximation of the SPDX grammar: operators, parentheses and `WITH` are recognised,
    anything else is an identifier. Raises ValueError when nothing is left or parentheses
    do not balance.
    """
    symbols: list[str] = []
    depth = 0
    joining = False
    for token in _LICENCE_TOKEN.findall(expression):
        depth += {"(": 1, ")": -1}.get(token, 0)
        if depth < 0:
            break
        upper = token.upper()
        if token in ("(", ")") or upper in _LICENCE_OPERATORS:
            continue
        if upper == "WITH" and symbols:
            joining = True
        elif joining:
            symbols[-1] = f"{symbols[-1]} WITH {token}"
            joining = False
        else:
            symbols.append(token)
    if depth != 0 or joining or not symbols:
        msg = f"Invalid license expression: {expression}"
        raise ValueError(msg)
    return set(symbols)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _LicenceEvidence(_Strict):
    source: str = Field(min_length=1)
    description: str | None = None
    checked_at: date | None = None


class _LicenceAssignment(_Strict):
    license_expression: str = Field(min_length=1)
    license_ids: tuple[str, ...] = ()
    commercial_use: _Permission
    redistribution: _Permission
    obligations: tuple[_Obligation, ...] = ()
    attribution: str | None = None
    evidence: tuple[_LicenceEvidence, ...] = ()
    reviewed_by: str | None = None
    reviewed_at: date | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> _LicenceAssignment:
        symbols = licence_symbols(self.license_expression)
        if self.license_expression == "NOASSERTION":
            if self.license_ids or self.commercial_use != "unknown":
                msg = "NOASSERTION takes no license_ids and commercial_use='unknown'"
                raise ValueError(msg)
            if self.redistribution != "unknown":
                msg = "NOASSERTION requires redistribution='unknown'"
                raise ValueError(msg)
        elif not self.license_ids or set(self.license_ids) != symbols:
            msg = "license_ids must name exactly the identifiers in license_expression"
            raise ValueError(msg)
        return self


class ModelLicensing(_LicenceAssignment):
    files: dict[str, _LicenceAssignment] = Field(default_factory=dict)


class LegacyMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_version: str = LEGACY_METADATA_SCHEMA_VERSION
    created_at: int | None = None
    updated_at: int | None = None
    created_by: str | None = None
    updated_by: str | None = None


class _LegacyFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str
    md5sum: str | None = None
    sha256sum: str | None = None
    file_type: str | None = None
    content_hash: str | None = None


class _LegacyDownload(BaseModel):
    model_config = ConfigDict(extra="allow")

    file_name: str | None = None
    file_path: str | None = ""
    file_url: str | None = None

    @field_validator("file_url")
    @classmethod
    def _parsable(cls, value: str | None) -> str | None:
        if value:
            urllib.parse.urlparse(value)  # raises ValueError on e.g. a broken IPv6 host
        return value


class LegacyConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    files: list[_LegacyFile] = Field(default_factory=list)
    download: list[_LegacyDownload] = Field(default_factory=list)
    embedded_component_hashes: dict[str, str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _lists_or_nothing(cls, value: object) -> object:
        if value is None:
            return {}
        if not isinstance(value, dict):
            msg = "config must be an object"
            raise ValueError(msg)  # pydantic turns a ValueError into a validation error
        # Missing, null or otherwise empty lists count as no entries, as upstream reads them.
        return {**value, **{key: value.get(key) or [] for key in ("files", "download")}}


class LegacyRecord(BaseModel):
    """A legacy record of a utility category (every field upstream type-checks)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    type: str | None = None
    description: str | None = None
    version: str | None = None
    style: str | None = None
    nsfw: bool | None = None
    download_all: bool | None = None
    config: LegacyConfig = Field(default_factory=LegacyConfig)
    available: bool | None = None
    features_not_supported: list[str] | None = None
    licensing: ModelLicensing | None = None
    metadata: LegacyMetadata | None = None


class LegacyClipRecord(LegacyRecord):
    """A legacy clip record: the type is `clip` or `coca`."""

    type: Literal["clip", "coca"] = "clip"
    pretrained_name: str | None = None


def normalize_baseline(value: object) -> object:
    """Map an old baseline spelling (`stable diffusion 1`) to its v2 name; keep anything else."""
    if isinstance(value, str):
        return BASELINE_ALIASES.get(value, value)
    return value


class LegacyImageRecord(LegacyRecord):
    """A legacy stable_diffusion.json record."""

    type: Literal["ckpt"] = "ckpt"
    inpainting: bool = False
    baseline: str
    tags: list[str] | None = None
    showcases: list[str] | None = None
    min_bridge_version: int | None = None
    trigger: list[str] | None = None
    homepage: str | None = None
    size_on_disk_bytes: int | None = None
    optimization: str | None = None
    requirements: _Settings | None = None

    @field_validator("baseline", mode="before")
    @classmethod
    def _old_baseline_names(cls, value: object) -> object:
        return normalize_baseline(value)

    @field_validator("showcases", mode="before")
    @classmethod
    def _no_huggingface_showcase(cls, value: object) -> object:
        if isinstance(value, list) and any(
            isinstance(s, str) and "huggingface" in s for s in value
        ):
            msg = "huggingface showcases are not allowed"
            raise ValueError(msg)
        return value


_Legacy = TypeVar("_Legacy", bound=LegacyRecord)


class _GuidanceSource(_Strict):
    url: HttpUrl
    title: str | None = None
    note: str | None = None


class _SupportClaim(_Strict):
    status: Literal["supported", "unsupported", "unknown"]
    sources: list[_GuidanceSource] = Field(default_factory=list)
    qualification: str | None = None


class _ContextWindow(_Strict):
    maximum_tokens: int = Field(ge=1)
    sources: list[_GuidanceSource] = Field(default_factory=list)
    qualification: str | None = None


_SETTINGS: Final = TypeAdapter(_Settings)
_CONTEXT_WINDOW: Final = TypeAdapter(_ContextWindow)
_INTERACTION_MODES: Final = TypeAdapter(
    dict[Literal["completion", "instruction", "chat"], _SupportClaim]
)
_CAPABILITIES: Final = TypeAdapter(
    dict[Literal["tool_calling", "structured_output"], _SupportClaim]
)


# --------------------------------------------------------------------------- shared pieces


def _drop_none(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    return {key: value for key, value in pairs if value is not None}


def download_entries(config: LegacyConfig) -> list[dict[str, Any]]:
    """The v2 `config.download` list: one entry per non-yaml file, its URL from `download`.

    Raises:
        ValueError: a download entry names no listed (non-yaml) file.
    """
    entries: dict[str, dict[str, Any]] = {}
    for file in config.files:
        if not file.path or "yaml" in file.path.lower():
            continue
        entries[file.path] = {
            "file_name": file.path,
            "file_url": "",
            "sha256sum": file.sha256sum or MISSING_SHA256,
            "content_hash": file.content_hash,
            "file_purpose": file.file_type,
            "known_slow_download": any(m in file.path.lower() for m in SLOW_DOWNLOAD_MARKERS),
        }
    for download in config.download:
        entry = entries.get(download.file_name) if download.file_name is not None else None
        if entry is None:
            msg = f"download entry {download.file_name!r} matches no file in config.files"
            raise ValueError(msg)
        entry["file_url"] = download.file_url or ""
    return [_drop_none(entry.items()) for entry in entries.values()]


def v2_config(config: LegacyConfig, *, drop_defaults: bool) -> dict[str, Any]:
    """The v2 `config` block; `drop_defaults` is image_generation's leaner serialization."""
    downloads = download_entries(config)
    if drop_defaults:
        for entry in downloads:
            if entry["sha256sum"] == MISSING_SHA256:
                del entry["sha256sum"]
        return _drop_none((("download", downloads or None), _embedded(config)))
    return _drop_none((("download", downloads), _embedded(config)))


def _embedded(config: LegacyConfig) -> tuple[str, dict[str, str] | None]:
    return "embedded_component_hashes", config.embedded_component_hashes


def v2_metadata(legacy: LegacyMetadata | None, *, drop_defaults: bool) -> dict[str, Any] | None:
    """The record's own metadata block (before timestamps are stamped), or None for none.

    Utility and text records always carry one; image_generation only when the legacy
    record had metadata that differs from the defaults.
    """
    if legacy is None:
        return None if drop_defaults else {"schema_version": SCHEMA_VERSION}
    block = _drop_none((key, getattr(legacy, key)) for key in _METADATA_KEYS)
    if drop_defaults and block["schema_version"] == SCHEMA_VERSION:
        del block["schema_version"]
    return block or None


def check_licence_files(licensing: ModelLicensing | None, downloads: list[dict[str, Any]]) -> None:
    """Per-file licensing overrides must name declared downloads (ValueError otherwise)."""
    if licensing is None:
        return
    unknown = set(licensing.files) - {entry["file_name"] for entry in downloads}
    if unknown:
        msg = f"licensing overrides files that are not downloads: {', '.join(sorted(unknown))}"
        raise ValueError(msg)


def _licensing_block(licensing: ModelLicensing | None, *, drop_defaults: bool) -> Any:
    if licensing is None:
        return None
    return licensing.model_dump(
        mode="json", exclude_none=True, exclude_unset=drop_defaults, exclude_defaults=drop_defaults
    )


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
    if served.get("record_type") == _C.text_generation.value:
        served["guidance"] = text_guidance(served.get("instruct_format"))
    return served


def stamp_metadata(metadata: Mapping[str, Any] | None, now: int | None) -> dict[str, Any] | None:
    """Fill missing `created_at`/`updated_at` from `now`, keeping upstream's key order."""
    if now is None:
        return None if metadata is None else dict(metadata)
    filled = {"created_at": now, "updated_at": now, **(metadata or {})}
    ordered = {key: filled[key] for key in _METADATA_KEYS if key in filled}
    return ordered | filled


def text_guidance(instruct_format: object) -> dict[str, Any]:
    """The guidance summary the PRIMARY adds to a text record (no catalog assignments)."""
    labelled = isinstance(instruct_format, str) and instruct_format.strip()
    status = "legacy_label" if labelled else "undocumented"
    return {"status": status, "primary_profile_id": None, "supplemental_profile_ids": []}


def _strip_all(values: list[str] | None) -> list[str]:
    return [value.strip() for value in values or []]


# --------------------------------------------------------------------------- JSON categories


def convert_legacy_json(
    what: str, category: MODEL_REFERENCE_CATEGORY, text: str
) -> dict[str, dict[str, Any]]:
    """Convert a legacy JSON file's records (keys kept, in file order)."""
    raw_records = load_json_object(what, text)
    if category is _C.image_generation:
        return _convert_each(what, raw_records, LegacyImageRecord.model_validate, image_record)
    model = LegacyClipRecord if category is _C.clip else LegacyRecord
    build = functools.partial(utility_record, category)
    return _convert_each(what, raw_records, model.model_validate, build)


def _convert_each(
    what: str,
    raw_records: Mapping[str, object],
    validate: Callable[[object], _Legacy],
    build: Callable[[_Legacy], dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    converted: dict[str, dict[str, Any]] = {}
    for key, raw in raw_records.items():
        try:
            converted[key] = build(validate(raw))
        except ValidationError as exc:
            raise InvalidPayload(what, f"record {key!r}: {describe_validation_error(exc)}") from exc
        except ValueError as exc:
            raise InvalidPayload(what, f"record {key!r}: {exc}") from exc
    return converted


def _utility_extras(category: MODEL_REFERENCE_CATEGORY, legacy: LegacyRecord) -> dict[str, Any]:
    if isinstance(legacy, LegacyClipRecord):
        return {"pretrained_name": legacy.pretrained_name}
    if category is _C.controlnet:
        return {"controlnet_style": legacy.type or legacy.style}
    return {}


def utility_record(category: MODEL_REFERENCE_CATEGORY, legacy: LegacyRecord) -> dict[str, Any]:
    """The v2 record of a utility category (everything but image and text generation)."""
    domain, purpose = _classification(category)
    config = v2_config(legacy.config, drop_defaults=False)
    check_licence_files(legacy.licensing, config["download"])
    extras = _utility_extras(category, legacy)
    return _drop_none(
        (
            ("record_type", category.value),
            ("name", legacy.name),
            ("description", legacy.description),
            ("version", legacy.version),
            ("metadata", v2_metadata(legacy.metadata, drop_defaults=False)),
            ("config", config),
            ("model_classification", {"domain": domain, "purpose": purpose}),
            ("licensing", _licensing_block(legacy.licensing, drop_defaults=False)),
            *extras.items(),
        )
    )


def image_style(style: str | None) -> str | None:
    """The v2 style: stripped, and one of the known styles (ValueError otherwise)."""
    if style is None:
        return None
    stripped = style.strip()
    if stripped not in IMAGE_STYLES:
        msg = f"Unknown style: {stripped}"
        raise ValueError(msg)
    return stripped


def scheduler_requirements(requirements: _Settings | None) -> _Settings | None:
    """Replace a legacy boolean `karras` requirement by a `schedulers` list.

    An explicit `schedulers` entry (or a non-boolean `karras`) wins: `karras` is then dropped.
    """
    if requirements is None or "karras" not in requirements:
        return requirements
    rest = {key: value for key, value in requirements.items() if key != "karras"}
    karras = requirements["karras"]
    if isinstance(karras, bool) and "schedulers" not in rest:
        rest["schedulers"] = [KARRAS_SCHEDULERS[karras]]
    return rest


def image_record(legacy: LegacyImageRecord) -> dict[str, Any]:
    """The v2 image_generation record; defaults and empty values are left out, as upstream does."""
    config = v2_config(legacy.config, drop_defaults=True)
    check_licence_files(legacy.licensing, config.get("download", []))
    return _drop_none(
        (
            ("name", legacy.name),
            ("description", legacy.description),
            ("version", legacy.version),
            ("metadata", v2_metadata(legacy.metadata, drop_defaults=True)),
            ("config", config or None),
            ("size_on_disk_bytes", legacy.size_on_disk_bytes),
            ("licensing", _licensing_block(legacy.licensing, drop_defaults=True)),
            ("inpainting", True if legacy.inpainting else None),
            ("baseline", legacy.baseline),
            ("optimization", legacy.optimization),
            ("tags", _strip_all(legacy.tags)),
            ("showcases", list(legacy.showcases or [])),
            ("min_bridge_version", legacy.min_bridge_version),
            ("trigger", list(legacy.trigger or [])),
            ("homepage", legacy.homepage),
            ("nsfw", bool(legacy.nsfw)),
            ("style", image_style(legacy.style)),
            ("requirements", scheduler_requirements(legacy.requirements)),
        )
    )


# --------------------------------------------------------------------------- text_generation


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
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"invalid settings JSON: {exc.msg}"
        raise SkippedRow(msg) from None
    if settings is not None and not _is_flat_mapping(settings):
        msg = "settings must hold only primitives or lists of primitives"
        raise SkippedRow(msg)
    return settings


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
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"invalid {column} JSON: {exc.msg}"
        raise SkippedRow(msg) from None
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
    domain, purpose = _classification(_C.text_generation)
    return _drop_none(
        (
            ("record_type", _C.text_generation.value),
            ("name", row.name),
            ("description", row.description),
            ("version", row.version),
            ("metadata", {"schema_version": SCHEMA_VERSION}),
            ("config", {"download": []}),
            ("model_classification", {"domain": domain, "purpose": purpose}),
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


# --------------------------------------------------------------------------- text_model_group

_I = re.IGNORECASE
_LEADING_VERSION: Final = re.compile(r"^\d+\.\d+(?:\.\d+)?[_\-]")

# Parts stripped from a model name, in this order; from each group the first pattern that
# matches anywhere removes its first match (size, version, quantisation, variant, date).
_NAME_NOISE: Final[tuple[tuple[re.Pattern[str], ...], ...]] = tuple(
    tuple(re.compile(pattern, flags) for pattern in patterns)
    for flags, patterns in (
        (
            _I,
            (
                r"(?<![a-zA-Z])\d+\.?\d*[BMK]\d*(?![a-zA-Z])",
                r"(?<![a-zA-Z])\d+x\d+[BMK](?![a-zA-Z])",
            ),
        ),
        (
            _I,
            (
                r"(?<![a-zA-Z0-9])[vV]\d+(?:\.\d+)+(?![a-zA-Z0-9])",
                r"(?<![a-zA-Z0-9])[vV]\d+(?![a-zA-Z0-9.])",
            ),
        ),
        (
            _I,
            (
                r"\bQ[2-8]_K(?:_[SMLH])?\b",
                r"\bQ[2-8]_[01]\b",
                r"\bQ[2-8]\b",
                r"\b(?:GGUF|GGML|GPTQ|AWQ|EXL2)\b",
                r"\b(?:fp16|fp32|int8|int4)\b",
            ),
        ),
        (
            _I,
            (
                r"\b(?:Instruct|Chat|Code|Base|Uncensored|Finetune|FT)\b",
                r"\b(?:Thinking|Reasoning)\b",
                r"\b(?:turbo|preview|latest)\b",
            ),
        ),
        (
            0,
            (
                r"(?<![a-zA-Z0-9])\d{2}-\d{4}(?![a-zA-Z0-9])",
                r"(?<![a-zA-Z0-9])\d{4}-\d{2}(?![a-zA-Z0-9])",
                r"(?<![a-zA-Z0-9])\d{4}(?![a-zA-Z0-9])",
            ),
        ),
    )
)
_NAME_SEPARATORS: Final = ("-", "_", " ", ".")


def _remove_first_hit(text: str, patterns: tuple[re.Pattern[str], ...]) -> str:
    for pattern in patterns:
        hit = pattern.search(text)
        if hit:
            return text[: hit.start()] + text[hit.end() :]
    return text


def _tidy_separators(text: str) -> str:
    for separator in _NAME_SEPARATORS:
        doubled = separator * 2
        while doubled in text:
            text = text.replace(doubled, separator)
    return text.strip("".join(_NAME_SEPARATORS))


def base_model_name(model_name: str) -> str:
    """A model name without leading version, size, version, quantisation, variant and date."""
    rest = _LEADING_VERSION.sub("", model_name, count=1)
    for patterns in _NAME_NOISE:
        rest = _remove_first_hit(rest, patterns)
    return _tidy_separators(rest) or model_name


def text_model_group(name: str) -> str:
    """The group of a text model: its base name, without backend and author prefixes."""
    for prefix in TEXT_BACKEND_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return base_model_name(name.split("/", 1)[-1])


__all__ = ["convert_legacy", "convertible"]
