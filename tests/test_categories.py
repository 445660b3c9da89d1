"""Tests of the category table in `horde_replica_sync.categories` (upstream-protocol §1.1)."""

from __future__ import annotations

import pytest

from horde_replica_sync.categories import (
    GITHUB_BRANCH,
    GITHUB_OWNER,
    LEGACY_DIR,
    MODEL_REFERENCE_CATEGORY,
    SPECS,
    GithubRepo,
    Layer,
    parse_categories,
    spec_for,
)

C = MODEL_REFERENCE_CATEGORY

UPSTREAM_ORDER = (
    "blip",
    "clip",
    "codeformer",
    "controlnet",
    "controlnet_annotator",
    "esrgan",
    "gfpgan",
    "safety_checker",
    "image_generation",
    "text_generation",
    "video_generation",
    "audio_generation",
    "miscellaneous",
    "lora",
    "ti",
)

# (category, v2 file) for every row of the §1.1 table.
V2_FILES = [
    (C.blip, "blip.json"),
    (C.clip, "clip.json"),
    (C.codeformer, "codeformer.json"),
    (C.controlnet, "controlnet.json"),
    (C.controlnet_annotator, "controlnet_annotator.json"),
    (C.esrgan, "esrgan.json"),
    (C.gfpgan, "gfpgan.json"),
    (C.safety_checker, "safety_checker.json"),
    (C.image_generation, "stable_diffusion.json"),
    (C.text_generation, "text_generation.json"),
    (C.video_generation, "video_generation.json"),
    (C.audio_generation, "audio_generation.json"),
    (C.miscellaneous, "miscellaneous.json"),
    (C.lora, "lora.json"),
    (C.ti, "ti.json"),
]

# (category, legacy file name) for the 9 categories in the image GitHub repo.
IMAGE_CATEGORIES = [
    (C.blip, "blip.json"),
    (C.clip, "clip.json"),
    (C.codeformer, "codeformer.json"),
    (C.controlnet, "controlnet.json"),
    (C.esrgan, "esrgan.json"),
    (C.gfpgan, "gfpgan.json"),
    (C.safety_checker, "safety_checker.json"),
    (C.image_generation, "stable_diffusion.json"),
    (C.miscellaneous, "miscellaneous.json"),
]

NO_LEGACY_CATEGORIES = [
    C.controlnet_annotator,
    C.video_generation,
    C.audio_generation,
    C.lora,
    C.ti,
]


class TestEnum:
    """The category enum mirrors upstream's values and order."""

    def test_values_in_upstream_order(self) -> None:
        """Iterating the enum yields the 15 upstream values in upstream's order."""
        assert tuple(c.value for c in MODEL_REFERENCE_CATEGORY) == UPSTREAM_ORDER

    @pytest.mark.parametrize("value", UPSTREAM_ORDER)
    def test_value_round_trips(self, value: str) -> None:
        """Each upstream value constructs the member whose string value it is."""
        assert MODEL_REFERENCE_CATEGORY(value) == value
        assert str(MODEL_REFERENCE_CATEGORY(value)) == value

    def test_every_category_has_a_spec(self) -> None:
        """SPECS has exactly one spec per category, keyed in upstream order."""
        assert tuple(SPECS) == tuple(MODEL_REFERENCE_CATEGORY)
        assert all(spec.category is category for category, spec in SPECS.items())

    def test_github_constants(self) -> None:
        """The GitHub owner, branch, repositories and legacy dir match upstream §1.2."""
        assert GITHUB_OWNER == "Haidra-Org"
        assert GITHUB_BRANCH == "main"
        assert GithubRepo.IMAGE.value == "AI-Horde-image-model-reference"
        assert GithubRepo.TEXT.value == "AI-Horde-text-model-reference"
        assert LEGACY_DIR == "legacy"


class TestSpecs:
    """Per-category file names and GitHub sources follow the §1.1 table."""

    @pytest.mark.parametrize(("category", "v2_file"), V2_FILES)
    def test_v2_file(self, category: MODEL_REFERENCE_CATEGORY, v2_file: str) -> None:
        """The v2 file is `<category>.json`, except image_generation -> stable_diffusion.json."""
        assert spec_for(category).v2_file == v2_file

    @pytest.mark.parametrize(("category", "legacy_file"), IMAGE_CATEGORIES)
    def test_image_categories(self, category: MODEL_REFERENCE_CATEGORY, legacy_file: str) -> None:
        """An image category's legacy file comes from the image repo under the same name."""
        spec = spec_for(category)
        assert spec.github_repo is GithubRepo.IMAGE
        assert spec.github_files == (legacy_file,)
        assert spec.primary_legacy_name == legacy_file
        assert spec.primary_legacy_file == legacy_file
        assert spec.legacy_json_file == legacy_file
        assert spec.has_legacy

    def test_image_generation_uses_stable_diffusion_in_both_layers(self) -> None:
        """image_generation is stored as stable_diffusion.json in the v2 and legacy layers."""
        spec = spec_for(C.image_generation)
        assert spec.v2_file == spec.primary_legacy_file == "stable_diffusion.json"

    def test_text_generation(self) -> None:
        """text_generation fetches models.csv and db.json from the text repo; v1 name is db.json."""
        spec = spec_for(C.text_generation)
        assert spec.v2_file == "text_generation.json"
        assert spec.github_repo is GithubRepo.TEXT
        assert spec.github_files == ("models.csv", "db.json")
        assert spec.primary_legacy_name == "db.json"
        assert spec.primary_legacy_file == "db.json"
        assert spec.legacy_json_file == "db.json"
        assert spec.has_legacy

    @pytest.mark.parametrize("category", NO_LEGACY_CATEGORIES)
    def test_no_legacy(self, category: MODEL_REFERENCE_CATEGORY) -> None:
        """A v2-only category has no legacy file, no v1 name and no GitHub source."""
        spec = spec_for(category)
        assert spec.github_repo is None
        assert spec.github_files == ()
        assert spec.primary_legacy_name is None
        assert spec.primary_legacy_file is None
        assert spec.legacy_json_file is None
        assert not spec.has_legacy

    def test_partition_is_complete(self) -> None:
        """Image, text and v2-only categories together cover all 15 categories exactly once."""
        image = [c for c, _ in IMAGE_CATEGORIES]
        groups = [*image, C.text_generation, *NO_LEGACY_CATEGORIES]
        assert sorted(groups) == sorted(MODEL_REFERENCE_CATEGORY)
        assert len(groups) == len(set(groups)) == 15
        assert [c for c in C if spec_for(c).github_repo is GithubRepo.IMAGE] == image


class TestParseCategories:
    """`parse_categories` reads a comma-separated list into upstream order."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("blip", (C.blip,)),
            ("esrgan,blip", (C.blip, C.esrgan)),
            ("ti, lora ,blip", (C.blip, C.lora, C.ti)),
            ("  text_generation  ", (C.text_generation,)),
            ("clip,clip,blip,clip", (C.blip, C.clip)),
            ("blip,,clip,", (C.blip, C.clip)),
            (",".join(reversed(UPSTREAM_ORDER)), tuple(MODEL_REFERENCE_CATEGORY)),
        ],
    )
    def test_valid(self, text: str, expected: tuple[MODEL_REFERENCE_CATEGORY, ...]) -> None:
        """Valid lists come back in upstream order, without duplicates, whitespace ignored."""
        assert parse_categories(text) == expected

    @pytest.mark.parametrize("text", ["nope", "blip,nope", "Blip", "stable_diffusion"])
    def test_unknown_name(self, text: str) -> None:
        """An unknown name raises ValueError naming it."""
        bad = next(n.strip() for n in text.split(",") if n.strip() not in UPSTREAM_ORDER)
        with pytest.raises(ValueError, match=repr(bad)):
            parse_categories(text)

    @pytest.mark.parametrize("text", ["", " ", ",", " , ,"])
    def test_empty(self, text: str) -> None:
        """An empty list raises ValueError."""
        with pytest.raises(ValueError, match="empty"):
            parse_categories(text)


class TestLayout:
    """Files land where upstream readers look for them."""

    @pytest.mark.parametrize(
        ("category", "layer", "file", "expected"),
        [
            (C.image_generation, Layer.V2, None, "stable_diffusion.json"),
            (C.image_generation, Layer.LEGACY, None, "legacy/stable_diffusion.json"),
            (C.text_generation, Layer.V2, None, "text_generation.json"),
            (C.text_generation, Layer.LEGACY, None, "legacy/db.json"),
            (C.text_generation, Layer.LEGACY, "models.csv", "legacy/models.csv"),
            (C.esrgan, Layer.LEGACY, None, "legacy/esrgan.json"),
            (C.lora, Layer.V2, None, "lora.json"),
        ],
    )
    def test_relpath(self, category: C, layer: Layer, file: str | None, expected: str) -> None:
        """Each category and layer maps to upstream's file name."""
        assert spec_for(category).relpath(layer, file) == expected

    def test_no_legacy_layer(self) -> None:
        """Asking for the legacy file of a v2-only category is a programming error."""
        with pytest.raises(ValueError, match="controlnet_annotator"):
            spec_for(C.controlnet_annotator).relpath(Layer.LEGACY)


class TestConversionFacts:
    """What each category's v2 file is converted from, and how its records are classified."""

    def test_github_categories_convert(self) -> None:
        """Every category GitHub holds converts to v2, and only those."""
        for spec in SPECS.values():
            assert spec.convertible == (spec.github_repo is not None), spec.category

    def test_text_converts_from_the_csv(self) -> None:
        """Upstream builds text v2 from models.csv, never from db.json."""
        assert spec_for(C.text_generation).convert_from == "models.csv"
        assert spec_for(C.text_generation).classification == ("text", "generation")

    def test_github_relpaths_put_the_main_file_last(self) -> None:
        """The file readers load is published after its siblings."""
        assert spec_for(C.text_generation).github_relpaths == (
            "legacy/models.csv",
            "legacy/db.json",
        )
        assert spec_for(C.esrgan).github_relpaths == ("legacy/esrgan.json",)
        assert spec_for(C.lora).github_relpaths == ()
