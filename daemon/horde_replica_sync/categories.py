"""The 15 model reference categories and where each one lives (pure data, no I/O).

Names, order and file names follow upstream `horde-model-reference` (see
docs/upstream-protocol.md §1). Two quirks matter: `image_generation` is stored as
`stable_diffusion.json` in both layers, and `text_generation`'s legacy source on GitHub is
`models.csv` (plus the generated `db.json`), while the PRIMARY serves it as `db.json`.

`CategorySpec` is the one owner of these facts: which layers a category has, where each of
its files is published, where GitHub keeps it, and what its v2 file is converted from.
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


class Layer(enum.StrEnum):
    """The layers of a category (v2 records, the legacy v1/GitHub format), and a catalog's one."""

    V2 = "v2"
    LEGACY = "legacy"
    CATALOG = "catalog"  # the one layer of a side catalog (catalogs.py)


class GithubRepo(enum.Enum):
    """The two legacy GitHub repositories (owner `Haidra-Org`, branch `main`)."""

    IMAGE = "AI-Horde-image-model-reference"
    TEXT = "AI-Horde-text-model-reference"


GITHUB_URL = "https://raw.githubusercontent.com"
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
        classification: the (domain, purpose) upstream gives converted records, or None
            when the category has nothing to convert.
        convert_from: the GitHub file its v2 file is converted from (`models.csv` for
            text: upstream builds v2 from the CSV, not from `db.json`).
    """

    category: MODEL_REFERENCE_CATEGORY
    v2_file: str
    primary_legacy_name: str | None
    primary_legacy_file: str | None
    github_repo: GithubRepo | None
    github_files: tuple[str, ...]
    classification: tuple[str, str] | None = None
    convert_from: str | None = None

    @property
    def has_legacy(self) -> bool:
        """Whether the category has a legacy layer at all."""
        return self.primary_legacy_file is not None

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The layers the category has: v2 always, legacy when it has a legacy format."""
        return (Layer.V2, Layer.LEGACY) if self.has_legacy else (Layer.V2,)

    @property
    def legacy_json_file(self) -> str | None:
        """The legacy file that holds JSON (`db.json` for text, never `models.csv`)."""
        return self.primary_legacy_file

    @property
    def convertible(self) -> bool:
        """Whether a v2 file can be built from the GitHub legacy files."""
        return self.convert_from is not None

    def relpath(self, layer: Layer, file: str | None = None) -> str:
        """Where a file of `layer` is published, relative to the replica directory.

        `file` picks one of a legacy layer's files (text has `models.csv` and `db.json`);
        it defaults to the layer's main file, the one readers load.
        """
        if layer is Layer.V2:
            return self.v2_file
        name = file or self.legacy_json_file
        if name is None:
            msg = f"category {self.category.value!r} has no legacy layer"
            raise ValueError(msg)
        return f"{LEGACY_DIR}/{name}"

    @property
    def github_relpaths(self) -> tuple[str, ...]:
        """Where each GitHub file is published; the layer's main file comes last."""
        main = self.relpath(Layer.LEGACY) if self.has_legacy else None
        paths = [self.relpath(Layer.LEGACY, name) for name in self.github_files]
        return tuple(sorted(paths, key=lambda path: path == main))


def is_csv(relpath: str) -> bool:
    """Whether a published file is CSV (text's `models.csv`) rather than JSON."""
    return relpath.endswith(".csv")


def _image(
    category: MODEL_REFERENCE_CATEGORY, purpose: str, file: str | None = None
) -> CategorySpec:
    name = file or f"{category.value}.json"
    return CategorySpec(
        category, name, name, name, GithubRepo.IMAGE, (name,), ("image", purpose), name
    )


def _v2_only(category: MODEL_REFERENCE_CATEGORY) -> CategorySpec:
    return CategorySpec(category, f"{category.value}.json", None, None, None, ())


_C = MODEL_REFERENCE_CATEGORY
_SPECS = (
    _image(_C.blip, "feature_extractor"),
    _image(_C.clip, "feature_extractor"),
    _image(_C.codeformer, "post_processing"),
    _image(_C.controlnet, "auxiliary_or_patch"),
    _v2_only(_C.controlnet_annotator),
    _image(_C.esrgan, "post_processing"),
    _image(_C.gfpgan, "post_processing"),
    _image(_C.safety_checker, "safety_checker"),
    _image(_C.image_generation, "generation", "stable_diffusion.json"),
    CategorySpec(
        _C.text_generation,
        "text_generation.json",
        "db.json",
        "db.json",
        GithubRepo.TEXT,
        ("models.csv", "db.json"),
        ("text", "generation"),
        "models.csv",
    ),
    _v2_only(_C.video_generation),
    _v2_only(_C.audio_generation),
    _image(_C.miscellaneous, "miscellaneous"),
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
    "GITHUB_URL",
    "LEGACY_DIR",
    "MODEL_REFERENCE_CATEGORY",
    "SPECS",
    "CategorySpec",
    "GithubRepo",
    "Layer",
    "is_csv",
    "parse_categories",
    "spec_for",
]
