"""The legacy input as upstream type-checks it: pydantic models of records, config and licensing.

Validating a record here is what decides whether upstream would accept it; the record
builders (`records`, `text`) only reshape what passed.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from datetime import date
from types import MappingProxyType
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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

_SettingValue = int | float | str | list[int] | list[float] | list[str] | bool
Settings = dict[str, _SettingValue]
"""A flat settings object: primitives or lists of primitives by name."""
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


class StrictModel(BaseModel):
    """A closed, immutable input model: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _LicenceEvidence(StrictModel):
    source: str = Field(min_length=1)
    description: str | None = None
    checked_at: date | None = None


class _LicenceAssignment(StrictModel):
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
    requirements: Settings | None = None

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
