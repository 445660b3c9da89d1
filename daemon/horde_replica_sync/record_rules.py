"""What each v2 record must carry for upstream's readers to use it, by category (pure).

Where the rules come from: the v2 record models of upstream `horde-model-reference` 8.6.2
(`horde_model_reference.model_reference_records`: `GenericModelRecord` and its per-category
subclasses `ImageGenerationModelRecord`, `TextGenerationModelRecord`, `ControlNetModelRecord`,
`ControlNetAnnotatorModelRecord`, `ClipModelRecord`, ... with `DownloadRecord` for
`config.download`). Upstream's offline reader validates each record with the model of its
category and silently drops the ones that fail, so a payload it cannot use still "loads",
just with fewer (or no) models. These rules say, in our words, what makes a record usable:

* every category: a string `name`; where present, the fields readers interpret must have the
  shape upstream reads (`config.download` a list of `{file_name, file_url}` strings,
  `description`/`version` strings, `model_classification` with a `domain` and `purpose`...).
* image_generation: also `baseline` (any string) and `nsfw` (a boolean) - the two fields
  upstream's image model declares without a default.
* text_generation: also `parameters` (an integer count; upstream also takes the field name
  `parameters_count`). Text records download nothing: workers' backends load them by name.
* categories whose records are files a worker fetches (image_generation, controlnet,
  controlnet_annotator, blip, clip, codeformer, esrgan, gfpgan, safety_checker,
  miscellaneous): at least one `config.download` entry. Upstream's model defaults the list
  to empty, so its reader would load such a record, but it names nothing to fetch, and a
  worker cannot use it. Every real record of these categories has one.
* video_generation, audio_generation, lora, ti: no real records to judge by (the PRIMARY
  serves `{}`, or they are managed elsewhere), so only the common rules and the shapes their
  upstream models give `baseline`/`nsfw`/`tags`.

Why tolerant of what is new: upstream's own users were burned by strict parsing (a client
with an older baseline vocabulary lost the whole image reference when a new baseline was
published; upstream now only warns). So unknown fields are ignored and enumerations
(`baseline`, `style`, `controlnet_style`, `record_type`, classification domain and purpose,
schedulers) are plain strings here: a value we have never seen passes. Where upstream 8.6.2 is
stricter than these rules (an unknown image `style`, a malformed `licensing` block, explicit
nulls for defaulted fields), we publish and let each reader judge with its own vocabulary.
What is missing is refused: a record without what its readers need is no record to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C

_TOLERANT = ConfigDict(extra="ignore")
# pydantic's JSON parser keeps the strings it met in a process-wide cache (16,384 of them):
# they stay resident and pin the heap a run's bodies passed through (issue 22).
UNCACHED = ConfigDict(cache_strings=False)


class _Download(BaseModel):
    """One file a worker fetches: the name it is saved as and where it comes from."""

    model_config = _TOLERANT
    file_name: str
    file_url: str
    sha256sum: str | None = None


class _Config(BaseModel):
    """`config` of a record that need not download anything (the list may be absent)."""

    model_config = _TOLERANT
    download: list[_Download] = Field(default_factory=list)


class _FilesConfig(_Config):
    """`config` of a record that is a file to fetch: at least one download entry."""

    download: Annotated[list[_Download], Field(min_length=1)]


class _Classification(BaseModel):
    """`model_classification`, when a record carries it (upstream fills it in otherwise)."""

    model_config = _TOLERANT
    domain: str
    purpose: str


class _Record(BaseModel):
    """What every v2 record must be: named, with the common fields in a readable shape."""

    model_config = _TOLERANT
    name: str
    record_type: str = ""
    description: str | None = None
    version: str | None = None
    model_classification: _Classification | None = None
    config: _Config = Field(default_factory=_Config)


class _FileRecord(_Record):
    """A record whose model is one or more files a worker downloads."""

    config: _FilesConfig


class _ImageRecord(_FileRecord):
    """image_generation: what a worker needs to pick and load a checkpoint."""

    baseline: str
    nsfw: bool
    inpainting: bool | None = None
    style: str | None = None
    tags: list[str] | None = None
    showcases: list[str] | None = None
    trigger: list[str] | None = None
    homepage: str | None = None
    min_bridge_version: int | None = None
    requirements: dict[str, Any] | None = None


class _TextRecord(_Record):
    """text_generation: a named model with its size; nothing to download."""

    parameters: int = Field(validation_alias=AliasChoices("parameters", "parameters_count"))
    nsfw: bool = False
    baseline: str | None = None
    style: str | None = None
    display_name: str | None = None
    url: str | None = None
    tags: list[str] | None = None
    settings: dict[str, Any] | None = None


class _ControlnetRecord(_FileRecord):
    """controlnet: files plus the kind of control they give."""

    controlnet_style: str | None = None


class _AnnotatorRecord(_FileRecord):
    """controlnet_annotator: the preprocessor files and what they serve."""

    control_types: list[str] = Field(default_factory=list)
    preprocessors: list[str] = Field(default_factory=list)


class _ClipRecord(_FileRecord):
    """clip: files plus an optional pretrained name."""

    pretrained_name: str | None = None


class _TaggedRecord(_Record):
    """video/audio generation, lora, ti: optional baseline, nsfw flag and tags."""

    baseline: str | None = None
    nsfw: bool = False
    tags: list[str] | None = None


_RULES: Mapping[C, type[_Record]] = {
    C.blip: _FileRecord,
    C.clip: _ClipRecord,
    C.codeformer: _FileRecord,
    C.controlnet: _ControlnetRecord,
    C.controlnet_annotator: _AnnotatorRecord,
    C.esrgan: _FileRecord,
    C.gfpgan: _FileRecord,
    C.safety_checker: _FileRecord,
    C.image_generation: _ImageRecord,
    C.text_generation: _TextRecord,
    C.video_generation: _TaggedRecord,
    C.audio_generation: _TaggedRecord,
    C.miscellaneous: _FileRecord,
    C.lora: _TaggedRecord,
    C.ti: _TaggedRecord,
}

_ADAPTERS: dict[C, TypeAdapter[dict[str, _Record]]] = {
    # One adapter per category validates a whole file in one call (fast) and reports every
    # error with its record key; mypy cannot see a type built from a variable.
    category: TypeAdapter(dict[str, rule], config=UNCACHED)  # type: ignore[valid-type]
    for category, rule in _RULES.items()
}


def rule_for(category: C) -> type[BaseModel]:
    """The pydantic model a record of `category` must satisfy (for docs and tests)."""
    return _RULES[category]


def count_usable(category: C, text: str) -> int:
    """The records of a v2 file's `text`, every one usable, validated by pydantic's own JSON
    parser (no Python parse tree); raises `ValidationError` when it refuses anything."""
    return len(_ADAPTERS[category].validate_json(text))


def unusable_records(category: C, data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The records of `data` upstream's readers could not use, as (key, reason), in file order.

    `data` is a parsed v2 file (`{key: record}`); an empty list means every record passes.
    """
    try:
        _ADAPTERS[category].validate_python(data)
    except ValidationError as exc:
        return _by_record(data, exc)
    return []


def _by_record(data: Mapping[str, Any], exc: ValidationError) -> list[tuple[str, str]]:
    """Group pydantic's errors by record key; one short reason per refused record."""
    problems: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_input=False):
        loc = error["loc"]
        key = str(loc[0]) if loc else "<root>"
        field = ".".join(str(part) for part in loc[1:])
        if error["type"] == "missing":
            problems.setdefault(key, []).append(f"no {field}")
        elif error["type"] == "too_short" and field == "config.download":
            problems.setdefault(key, []).append("no file to download (config.download is empty)")
        else:
            problems.setdefault(key, []).append(f"{field or 'record'}: {error['msg']}")
    order = {key: index for index, key in enumerate(data)}
    keys = sorted(problems, key=lambda key: order.get(key, len(order)))
    return [(key, ", ".join(problems[key])) for key in keys]


__all__ = ["UNCACHED", "count_usable", "rule_for", "unusable_records"]
