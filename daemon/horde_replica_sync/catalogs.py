"""The PRIMARY's three side catalogs and the files upstream's readers load them from (pure).

Besides the 15 categories, upstream 8.6.2's PRIMARY serves three catalogs, and its own REPLICA
(`ModelReferenceManager`) hydrates them from these exports and persists them under the data
root (`path_consts.resolve_*_path`, the stores' `refresh_replica_export` and `_load`):

    catalog        export (GET, under the API base)                   files in the replica
    baselines      model_references/v2/image_generation/baselines/export  baselines/catalog.json
    text_guidance  model_references/v2/text_generation/guidance/export    text_guidance/catalog.json
    licensing      model_references/v2/licensing/export               licensing/licenses.json
                                                                      licensing/assets.json

An offline reader whose folders are missing silently uses the copies packaged in its wheel,
so without these files a worker gets the wheel's baselines and licences. The files are
written as upstream's replica writes them (`atomic_write_json`: indent 2, ASCII escapes, no
final newline) from the export: the baseline and guidance catalogs as exported, licensing
split into its two envelopes (definitions, and the non-model assets without per-file
overrides). The PRIMARY honours no conditional request (If-None-Match is ignored, HEAD is
405), so the two small exports are their own change check; the 545 KB licensing export is
fetched only when its revision moved (`probe`: one 600-byte page that carries it).

Validation is upstream 8.6.2's models, closed like them: unlike a category file, where
upstream's reader skips a record it cannot load, one unknown field in a catalog file stops
`ModelReferenceManager` from being built at all, so a body upstream's reader could not load
(a wrong shape or type, a field it does not know, a record filed under another name, an
asset naming an unknown licence) is refused and the last good copy kept.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY
from horde_replica_sync.errors import InvalidPayload
from horde_replica_sync.validation import decode_utf8, describe_validation_error, load_json_object


class Catalog(enum.StrEnum):
    """The PRIMARY's side catalogs, named after their folders in the replica."""

    baselines = "baselines"
    text_guidance = "text_guidance"
    licensing = "licensing"


Name = MODEL_REFERENCE_CATEGORY | Catalog
"""What the `categories` setting selects and results are keyed by: a category or a catalog."""

ALL_NAMES: Final[tuple[Name, ...]] = (*MODEL_REFERENCE_CATEGORY, *Catalog)


# -- validation: upstream 8.6.2's models ---------------------------------------------------
#
# Closed like upstream's own (`extra="forbid"` throughout): its stores load these files when
# `ModelReferenceManager` is built, and one field they do not know makes that fail, for every
# category, not just the catalog (measured: tests/interop/test_catalogs.py). Upstream's own
# replica refuses such an export too (`refresh_replica_export` validates first). So a newer
# PRIMARY's new field is refused with its name, the last good copy kept, until these models
# learn it. Types are upstream's where a wrong one would stop its reader; validators that
# only its writers need (SPDX parsing, raw-HTML checks) are left to the PRIMARY.


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Metadata(_Closed):
    """A catalog's (or licensing dataset's) revision metadata."""

    schema_version: int = 1
    revision: int = Field(default=1, ge=1)
    updated_at: int | None = None


class _RecordMetadata(_Closed):
    revision: int = Field(default=1, ge=1)
    created_at: int | None = None
    created_by: str | None = None
    updated_at: int | None = None
    updated_by: str | None = None


class _Capabilities(_Closed):
    controlnet: bool = False
    controlnet_types_unavailable: list[str] = Field(default_factory=list)
    transparent: bool = False
    qr_code: bool = False
    remix: bool = False
    flow_matching: bool = False


class _Policy(_Closed):
    kudos: float = 1
    kudos_qr_code: float | None = None
    kudos_hires: float | None = None
    batching: int = Field(default=1, ge=1)
    ttl: int = Field(default=1, ge=1)
    resolution_floor: int = Field(default=0, ge=0)


class _Baseline(_Closed):
    name: str = Field(min_length=1)
    display_name: str | None = None
    native_resolution: int | None = Field(default=None, ge=1)
    alternative_names: list[str] = Field(default_factory=list)
    capabilities: _Capabilities = Field(default_factory=_Capabilities)
    horde_policy: _Policy = Field(default_factory=_Policy)
    metadata: _RecordMetadata = Field(default_factory=_RecordMetadata)


class _BaselineCatalog(_Closed):
    metadata: _Metadata = Field(default_factory=_Metadata)
    baselines: dict[str, _Baseline] = Field(default_factory=dict)


_Setting = int | float | str | bool | list[int] | list[float] | list[str]
_Role = Literal["system", "user", "assistant", "tool"]


class _Source(_Closed):
    url: str
    title: str | None = None
    note: str | None = None


class _Audience(_Closed):
    overview: str = ""
    use_cases: list[str] = Field(default_factory=list)
    tips: list[str] = Field(default_factory=list)
    caveats: list[str] = Field(default_factory=list)


class _Message(_Closed):
    role: _Role
    content: str


class _Example(_Closed):
    title: str
    description: str | None = None
    messages: list[_Message] = Field(min_length=1)
    rendered_prompt: str | None = None


class _Variable(_Closed):
    name: str = Field(min_length=1)
    description: str
    required: bool = True


class _Template(_Closed):
    template_id: str = Field(min_length=1)
    name: str
    syntax: str
    syntax_name: str | None = None
    template: str
    variables: list[_Variable] = Field(default_factory=list)


class _HordeExample(_Closed):
    title: str
    prompt: str
    parameters: dict[str, _Setting] = Field(default_factory=dict)
    notes: str | None = None


class _ProfileBase(_Closed):
    profile_id: str
    display_name: str
    aliases: list[str] = Field(default_factory=list)
    summary: str
    user: _Audience = Field(default_factory=_Audience)
    developer: _Audience = Field(default_factory=_Audience)
    examples: list[_Example] = Field(default_factory=list)
    recommended_settings: dict[str, _Setting] = Field(default_factory=dict)
    ai_horde_examples: list[_HordeExample] = Field(default_factory=list)
    sources: list[_Source] = Field(default_factory=list)
    deprecated: bool = False
    metadata: _RecordMetadata = Field(default_factory=_RecordMetadata)


class _PromptContract(_ProfileBase):
    kind: Literal["prompt_contract"] = "prompt_contract"
    interaction_modes: list[str] = Field(min_length=1)
    accepted_roles: list[_Role] = Field(default_factory=list)
    role_markers: dict[str, str] = Field(default_factory=dict)
    stop_sequences: list[str] = Field(default_factory=list)
    templates: list[_Template] = Field(default_factory=list)


class _UsageRecipe(_ProfileBase):
    kind: Literal["usage_recipe"] = "usage_recipe"
    capability: str | None = None
    scenario: str | None = None


class _Assignment(_Closed):
    model_name: str = Field(min_length=1)
    primary_profile_id: str
    supplemental_profile_ids: list[str] = Field(default_factory=list)
    metadata: _RecordMetadata = Field(default_factory=_RecordMetadata)


class _GuidanceCatalog(_Closed):
    metadata: _Metadata = Field(default_factory=_Metadata)
    profiles: dict[str, Annotated[_PromptContract | _UsageRecipe, Field(discriminator="kind")]] = (
        Field(default_factory=dict)
    )
    assignments: dict[str, _Assignment] = Field(default_factory=dict)


class _Definition(_Closed):
    license_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    spdx_identifier: str | None = None
    canonical_url: str = Field(min_length=1)
    commercial_use: str
    redistribution: str
    obligations: list[str] = Field(default_factory=list)
    restrictions: list[str] = Field(default_factory=list)
    notes: str | None = None
    deprecated: bool = False
    metadata: _RecordMetadata = Field(default_factory=_RecordMetadata)


class _Evidence(_Closed):
    source: str = Field(min_length=1)
    description: str | None = None
    checked_at: str | None = None


class _Conclusion(_Closed):  # upstream's LicenseAssignment
    license_expression: str = Field(min_length=1)
    license_ids: list[str] = Field(default_factory=list)
    commercial_use: str
    redistribution: str
    obligations: list[str] = Field(default_factory=list)
    attribution: str | None = None
    evidence: list[_Evidence] = Field(default_factory=list)
    reviewed_by: str | None = None
    reviewed_at: str | None = None
    notes: str | None = None


class _Asset(_Closed):
    """A non-model asset as upstream's replica keeps it (`LicensedAsset`)."""

    asset_kind: str
    asset_identifier: str = Field(min_length=1)
    display_name: str = Field(min_length=1)
    source_url: str | None = None
    version: str | None = None
    locations: list[str] = Field(default_factory=list)
    related_assets: list[str] = Field(default_factory=list)
    licensing: _Conclusion
    notes: str | None = None
    metadata: _RecordMetadata = Field(default_factory=_RecordMetadata)


class _AssetView(BaseModel):
    """An export row; upstream's replica keeps only `_ASSET_FIELDS` of it (the rest is the
    PRIMARY's view: model assets, per-file overrides, links), so only those are closed."""

    asset_kind: str
    asset_identifier: str = Field(min_length=1)


class _LicensingExport(BaseModel):  # its other parts are the PRIMARY's summary, never kept
    metadata: _Metadata = Field(default_factory=_Metadata)
    licenses: list[_Definition]
    assets: list[_AssetView]


_M = TypeVar("_M", bound=BaseModel)


def _validated(model: type[_M], what: str, data: dict[str, Any]) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidPayload(what, describe_validation_error(exc)) from exc


# -- what each export becomes on disk -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Built:
    """An export turned into the replica's files, with what identifies and sizes it."""

    files: tuple[tuple[str, bytes], ...]  # (relpath, bytes), the main file first
    revision: str  # the catalog's revision and update time: `<revision>:<updated_at>`
    records: int


def upstream_json(data: object) -> bytes:
    """`data` as upstream's `atomic_write_json` writes it (indent 2, ASCII, no newline)."""
    return json.dumps(data, indent=2, ensure_ascii=True).encode("ascii")


def revision_of(metadata: _Metadata) -> str:
    """The token a revision is compared and keyed by (`<revision>:<updated_at>`)."""
    return f"{metadata.revision}:{metadata.updated_at if metadata.updated_at is not None else ''}"


def _build_baselines(what: str, data: dict[str, Any]) -> Built:
    catalog = _validated(_BaselineCatalog, what, data)
    owners: dict[str, str] = {}
    for key, record in catalog.baselines.items():
        if record.name != key:
            raise InvalidPayload(what, f"baseline {key!r} is filed under another name")
        for alternative in record.alternative_names:
            if alternative != key and alternative in catalog.baselines:
                raise InvalidPayload(what, f"alternative name {alternative!r} names a baseline")
            if owners.setdefault(alternative, key) != key:
                raise InvalidPayload(what, f"alternative name {alternative!r} is shared")
    return Built(
        (("baselines/catalog.json", upstream_json(data)),),
        revision_of(catalog.metadata),
        len(catalog.baselines),
    )


def _build_text_guidance(what: str, data: dict[str, Any]) -> Built:
    catalog = _validated(_GuidanceCatalog, what, data)
    return Built(
        (("text_guidance/catalog.json", upstream_json(data)),),
        revision_of(catalog.metadata),
        len(catalog.profiles) + len(catalog.assignments),
    )


# The asset fields upstream's replica keeps, in `LicensedAsset`'s order (its dump's order).
_ASSET_FIELDS: Final = (
    "asset_kind",
    "asset_identifier",
    "display_name",
    "source_url",
    "version",
    "locations",
    "related_assets",
    "licensing",
    "notes",
    "metadata",
)


def _build_licensing(what: str, data: dict[str, Any]) -> Built:
    """Upstream's `LicensingStore.refresh_replica_export`: definitions by id, and the assets
    that are not models (those live in the category files) without per-file overrides."""
    export = _validated(_LicensingExport, what, data)
    definitions: dict[str, object] = {}
    for raw, definition in zip(data["licenses"], export.licenses, strict=True):
        if definition.license_id in definitions:
            raise InvalidPayload(what, f"licence {definition.license_id!r} appears twice")
        definitions[definition.license_id] = raw
    assets: dict[str, object] = {}
    for raw, asset in zip(data["assets"], export.assets, strict=True):
        if asset.asset_kind == "model":
            continue
        key = f"{asset.asset_kind}:{asset.asset_identifier}"
        if key in assets:
            raise InvalidPayload(what, f"asset {key!r} appears twice")
        kept = {field: raw[field] for field in _ASSET_FIELDS if field in raw}
        if isinstance(kept.get("licensing"), dict):
            kept["licensing"] = {k: v for k, v in kept["licensing"].items() if k != "files"}
        checked = _validated(_Asset, f"{what}: asset {key!r}", kept)
        unknown = [i for i in checked.licensing.license_ids if i not in definitions]
        if unknown:
            raise InvalidPayload(what, f"asset {key!r} names unknown licence {unknown[0]!r}")
        assets[key] = kept
    head = {
        "schema_version": export.metadata.schema_version,
        "revision": export.metadata.revision,
        "updated_at": export.metadata.updated_at,
    }
    return Built(
        (
            ("licensing/licenses.json", upstream_json({**head, "records": definitions})),
            ("licensing/assets.json", upstream_json({**head, "records": assets})),
        ),
        revision_of(export.metadata),
        len(definitions) + len(assets),
    )


def probe_revision(what: str, content: bytes) -> str:
    """The revision a probe page shows (its `metadata`), or `InvalidPayload`."""
    page = load_json_object(what, decode_utf8(what, content))
    metadata = page.get("metadata")
    if not isinstance(metadata, dict):
        raise InvalidPayload(what, "no metadata object")
    return revision_of(_validated(_Metadata, what, metadata))


@dataclass(frozen=True, slots=True)
class CatalogSpec:
    """Where one catalog comes from and how its export becomes the replica's files.

    Attributes:
        export: the export's path under the API base.
        probe: a small page under the API base whose `metadata` carries the revision, asked
            first when the export is large; None when the export is small enough to be its
            own check.
        relpaths: the files readers load, the main one first.
    """

    catalog: Catalog
    export: str
    probe: str | None
    relpaths: tuple[str, ...]
    build: Callable[[str, dict[str, Any]], Built]

    def parse(self, what: str, content: bytes) -> Built:
        """Validate an export body and build its files, or raise `InvalidPayload`."""
        return self.build(what, load_json_object(what, decode_utf8(what, content)))


_V2 = "model_references/v2"
SPECS: Final = MappingProxyType(
    {
        Catalog.baselines: CatalogSpec(
            Catalog.baselines,
            f"{_V2}/image_generation/baselines/export",
            None,
            ("baselines/catalog.json",),
            _build_baselines,
        ),
        Catalog.text_guidance: CatalogSpec(
            Catalog.text_guidance,
            f"{_V2}/text_generation/guidance/export",
            None,
            ("text_guidance/catalog.json",),
            _build_text_guidance,
        ),
        Catalog.licensing: CatalogSpec(
            Catalog.licensing,
            f"{_V2}/licensing/export",
            f"{_V2}/licensing/licenses?limit=1",
            ("licensing/licenses.json", "licensing/assets.json"),
            _build_licensing,
        ),
    }
)


def parse_names(text: str) -> tuple[Name, ...]:
    """Parse the `categories` setting: categories and catalogs, in `ALL_NAMES` order.

    Raises:
        ValueError: naming the unknown name and the valid ones.
    """
    by_value = {name.value: name for name in ALL_NAMES}
    wanted: set[Name] = set()
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        if name not in by_value:
            valid = ", ".join(by_value)
            msg = f"unknown category {name!r}; valid categories and catalogs: {valid}"
            raise ValueError(msg)
        wanted.add(by_value[name])
    if not wanted:
        msg = "the category list is empty"
        raise ValueError(msg)
    return tuple(n for n in ALL_NAMES if n in wanted)


def categories_of(names: tuple[Name, ...]) -> tuple[MODEL_REFERENCE_CATEGORY, ...]:
    """The categories among `names`."""
    return tuple(n for n in names if isinstance(n, MODEL_REFERENCE_CATEGORY))


def catalogs_of(names: tuple[Name, ...]) -> tuple[Catalog, ...]:
    """The catalogs among `names`."""
    return tuple(n for n in names if isinstance(n, Catalog))


__all__ = [
    "ALL_NAMES",
    "SPECS",
    "Built",
    "Catalog",
    "CatalogSpec",
    "Name",
    "catalogs_of",
    "categories_of",
    "parse_names",
    "probe_revision",
    "upstream_json",
]
