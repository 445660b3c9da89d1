"""The 15 model reference categories and where each one lives (pure data, no I/O).

Names, order and file names follow upstream `horde-model-reference` (see
docs/upstream-protocol.md §1). Two quirks matter: `image_generation` is stored as
`stable_diffusion.json` in both layers, and `text_generation`'s legacy source on GitHub is
`models.csv` (plus the generated `db.json`), while the PRIMARY serves it as `db.json`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType


class MODEL_REFERENCE_CATEGORY(enum.StrEnum):  # upstream's public name
    """The categories of the Horde model reference, in upstream's order."""

    blip = "blip"
    clip = "clip"
    codeformer = "codeformer"
    controlnet = "controlnet"
    controlnet_annotator = "controlnet_annotator"
    esrgan = "esrgan"
    gfpgan = "gfpgan"
    safety_checker = "safety_checker"
    image_generation = "image_generation"
    text_generation = "text_generation"
    video_generation = "video_generation"
    audio_generation = "audio_generation"
    miscellaneous = "miscellaneous"
    lora = "lora"
    ti = "ti"


class GithubRepo(enum.Enum):
    """The two legacy GitHub repositories (owner `Haidra-Org`, branch `main`)."""

    IMAGE = "AI-Horde-image-model-reference"
    TEXT = "AI-Horde-text-model-reference"


GITHUB_OWNER = "Haidra-Org"
GITHUB_BRANCH = "main"
LEGACY_DIR = "legacy"


@dataclass(frozen=True, slots=True)
class CategorySpec:
    """Where one category's data lives, upstream and in the replica.

    Attributes:
        v2_file: file name of the v2 layer, directly under the replica base.
        primary_legacy_name: the name the PRIMARY's `v1/{name}` endpoint takes, or None when
            the category has no legacy format.
        primary_legacy_file: where the PRIMARY's v1 body is published, under `legacy/`.
        github_repo: the legacy GitHub repository, or None when GitHub has no copy.
        github_files: the legacy files fetched from `github_repo`, each published under
            `legacy/` with the same name.
    """

    category: MODEL_REFERENCE_CATEGORY
    v2_file: str
    primary_legacy_name: str | None
    primary_legacy_file: str | None
    github_repo: GithubRepo | None
    github_files: tuple[str, ...]

    @property
    def has_legacy(self) -> bool:
        """Whether the category has a legacy layer at all."""
        return self.primary_legacy_file is not None

    @property
    def legacy_json_file(self) -> str | None:
        """The legacy file that holds JSON (`db.json` for text, never `models.csv`)."""
        return self.primary_legacy_file


def _image(category: MODEL_REFERENCE_CATEGORY, file: str | None = None) -> CategorySpec:
    name = file or f"{category.value}.json"
    return CategorySpec(category, name, name, name, GithubRepo.IMAGE, (name,))


def _v2_only(category: MODEL_REFERENCE_CATEGORY) -> CategorySpec:
    return CategorySpec(category, f"{category.value}.json", None, None, None, ())


_C = MODEL_REFERENCE_CATEGORY
_SPECS = (
    _image(_C.blip),
    _image(_C.clip),
    _image(_C.codeformer),
    _image(_C.controlnet),
    _v2_only(_C.controlnet_annotator),
    _image(_C.esrgan),
    _image(_C.gfpgan),
    _image(_C.safety_checker),
    _image(_C.image_generation, "stable_diffusion.json"),
    CategorySpec(
        _C.text_generation,
        "text_generation.json",
        "db.json",
        "db.json",
        GithubRepo.TEXT,
        ("models.csv", "db.json"),
    ),
    _v2_only(_C.video_generation),
    _v2_only(_C.audio_generation),
    _image(_C.miscellaneous),
    _v2_only(_C.lora),
    _v2_only(_C.ti),
)

SPECS: MappingProxyType[MODEL_REFERENCE_CATEGORY, CategorySpec] = MappingProxyType(
    {spec.category: spec for spec in _SPECS}
)


def spec_for(category: MODEL_REFERENCE_CATEGORY) -> CategorySpec:
    """Return where `category` lives."""
    return SPECS[category]


def parse_categories(text: str) -> tuple[MODEL_REFERENCE_CATEGORY, ...]:
    """Parse a comma-separated category list, keeping upstream's order and dropping repeats.

    Raises:
        ValueError: naming the unknown category and the valid ones.
    """
    wanted: set[MODEL_REFERENCE_CATEGORY] = set()
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        try:
            wanted.add(MODEL_REFERENCE_CATEGORY(name))
        except ValueError:
            valid = ", ".join(c.value for c in MODEL_REFERENCE_CATEGORY)
            msg = f"unknown category {name!r}; valid categories: {valid}"
            raise ValueError(msg) from None
    if not wanted:
        msg = "the category list is empty"
        raise ValueError(msg)
    return tuple(c for c in MODEL_REFERENCE_CATEGORY if c in wanted)


__all__ = [
    "GITHUB_BRANCH",
    "GITHUB_OWNER",
    "LEGACY_DIR",
    "MODEL_REFERENCE_CATEGORY",
    "SPECS",
    "CategorySpec",
    "GithubRepo",
    "parse_categories",
    "spec_for",
]
