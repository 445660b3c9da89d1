"""v2 records of the JSON categories: image_generation and the utility ones (clip, esrgan, ...).

Each legacy record is validated by its `legacy_models` model, then rebuilt in upstream's key
order; image_generation leaves defaults and empty values out, the utility categories keep them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, TypeVar

from pydantic import ValidationError

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY
from horde_replica_sync.convert.legacy_models import (
    LegacyClipRecord,
    LegacyConfig,
    LegacyImageRecord,
    LegacyMetadata,
    LegacyRecord,
    ModelLicensing,
    Settings,
)
from horde_replica_sync.convert.v2 import (
    METADATA_KEYS,
    SCHEMA_VERSION,
    drop_none,
    model_classification,
)
from horde_replica_sync.errors import InvalidPayload
from horde_replica_sync.validation import describe_validation_error, load_json_object

_C = MODEL_REFERENCE_CATEGORY

MISSING_SHA256: Final = "FIXME"
"""Upstream's placeholder checksum for a file the legacy data gives none for."""

# The only styles an image_generation record may have; another one fails the category.
IMAGE_STYLES: Final = frozenset({"generalist", "anime", "furry", "artistic", "other", "realistic"})

# Legacy `requirements.karras` (a bool) becomes this `schedulers` list.
KARRAS_SCHEDULERS: Final[Mapping[bool, str]] = MappingProxyType({True: "karras", False: "normal"})

# Substrings of a file name that mark a download as known to be slow.
SLOW_DOWNLOAD_MARKERS: Final = ("civitai",)


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
    return [drop_none(entry.items()) for entry in entries.values()]


def v2_config(config: LegacyConfig, *, drop_defaults: bool) -> dict[str, Any]:
    """The v2 `config` block; `drop_defaults` is image_generation's leaner serialization."""
    downloads = download_entries(config)
    if drop_defaults:
        for entry in downloads:
            if entry["sha256sum"] == MISSING_SHA256:
                del entry["sha256sum"]
        return drop_none((("download", downloads or None), _embedded(config)))
    return drop_none((("download", downloads), _embedded(config)))


def _embedded(config: LegacyConfig) -> tuple[str, dict[str, str] | None]:
    return "embedded_component_hashes", config.embedded_component_hashes


def v2_metadata(legacy: LegacyMetadata | None, *, drop_defaults: bool) -> dict[str, Any] | None:
    """The record's own metadata block (before timestamps are stamped), or None for none.

    Utility and text records always carry one; image_generation only when the legacy
    record had metadata that differs from the defaults.
    """
    if legacy is None:
        return None if drop_defaults else {"schema_version": SCHEMA_VERSION}
    block = drop_none((key, getattr(legacy, key)) for key in METADATA_KEYS)
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


def _strip_all(values: list[str] | None) -> list[str]:
    return [value.strip() for value in values or []]


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


_Legacy = TypeVar("_Legacy", bound=LegacyRecord)


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
    config = v2_config(legacy.config, drop_defaults=False)
    check_licence_files(legacy.licensing, config["download"])
    extras = _utility_extras(category, legacy)
    return drop_none(
        (
            ("record_type", category.value),
            ("name", legacy.name),
            ("description", legacy.description),
            ("version", legacy.version),
            ("metadata", v2_metadata(legacy.metadata, drop_defaults=False)),
            ("config", config),
            ("model_classification", model_classification(category)),
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


def scheduler_requirements(requirements: Settings | None) -> Settings | None:
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
    return drop_none(
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
