"""Tests of the legacy -> v2 conversion in `horde_replica_sync.convert`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.convert import convert_legacy, convertible
from horde_replica_sync.convert.legacy_models import (
    LegacyClipRecord,
    LegacyConfig,
    LegacyImageRecord,
    LegacyMetadata,
    LegacyRecord,
    licence_symbols,
    normalize_baseline,
)
from horde_replica_sync.convert.records import (
    download_entries,
    image_record,
    image_style,
    scheduler_requirements,
    utility_record,
    v2_config,
    v2_metadata,
)
from horde_replica_sync.convert.text import (
    SkippedRow,
    TextRow,
    parameter_count,
    text_record,
    text_row,
)
from horde_replica_sync.convert.text_groups import base_model_name, text_model_group
from horde_replica_sync.convert.v2 import stamp_metadata, text_guidance
from horde_replica_sync.errors import InvalidPayload
from tests.environment import shared_dir

SHA = "a" * 64
CSV_HEADER = (
    "name,parameters_bn,display_name,url,baseline,description,style,tags,instruct_format,settings\n"
)
NO_LICENCE = {
    "license_expression": "NOASSERTION",
    "license_ids": [],
    "commercial_use": "unknown",
    "redistribution": "unknown",
    "obligations": [],
    "evidence": [],
    "notes": "No reviewed licensing conclusion is currently available.",
    "files": {},
}


LEGACY_DIR = shared_dir() / "reference-data" / "legacy"


def config(files: list[dict[str, Any]], download: list[dict[str, Any]]) -> LegacyConfig:
    """A validated legacy config block."""
    return LegacyConfig.model_validate({"files": files, "download": download})


def image_legacy(**fields: Any) -> dict[str, Any]:
    """A valid legacy stable_diffusion.json record, with `fields` replacing the defaults."""
    record: dict[str, Any] = {
        "name": "M",
        "type": "ckpt",
        "baseline": "stable diffusion 1",
        "description": "d",
        "version": "1",
        "style": "anime",
        "nsfw": False,
        "inpainting": False,
        "download_all": False,
        "available": False,
        "config": {
            "files": [{"path": "m.safetensors", "sha256sum": SHA}, {"path": "v1-inference.yaml"}],
            "download": [
                {"file_name": "m.safetensors", "file_path": "", "file_url": "https://u/m"}
            ],
        },
    }
    record.update(fields)
    return record


def utility_legacy(**fields: Any) -> dict[str, Any]:
    """A valid legacy utility record (esrgan-like), with `fields` replacing the defaults."""
    record: dict[str, Any] = {
        "name": "U",
        "type": "realesrgan",
        "description": "d",
        "version": "1",
        "style": "x",
        "nsfw": False,
        "config": {
            "files": [{"path": "u.pth", "sha256sum": SHA, "md5sum": "m"}],
            "download": [{"file_name": "u.pth", "file_path": "", "file_url": "https://u/u"}],
        },
    }
    record.update(fields)
    return record


def convert_json(category: C, records: dict[str, Any], *, now: int | None = None) -> Any:
    """Convert a legacy JSON object of `category` and parse the result."""
    file = "stable_diffusion.json" if category is C.image_generation else f"{category.value}.json"
    return json.loads(convert_legacy(category, {file: json.dumps(records).encode()}, now=now))


def convert_csv(text: str, *, now: int | None = None) -> Any:
    """Convert a models.csv text and parse the result."""
    return json.loads(convert_legacy(C.text_generation, {"models.csv": text.encode()}, now=now))


class TestConvertible:
    """`convertible` names the categories that have legacy files."""

    @pytest.mark.parametrize("category", list(C))
    def test_table(self, category: C) -> None:
        """The 9 image categories with a legacy file and text_generation are convertible."""
        no_legacy = {C.controlnet_annotator, C.video_generation, C.audio_generation, C.lora, C.ti}
        assert convertible(category) is (category not in no_legacy)


class TestNormalizeBaseline:
    """`normalize_baseline` maps the old spellings and keeps everything else."""

    @pytest.mark.parametrize(
        ("legacy", "v2"),
        [
            ("stable diffusion 1", "stable_diffusion_1"),
            ("stable diffusion 2", "stable_diffusion_2_768"),
            ("stable diffusion 2 512", "stable_diffusion_2_512"),
            ("stable_diffusion_xl", "stable_diffusion_xl"),
            ("stable_cascade", "stable_cascade"),
            ("flux_1", "flux_1"),
            ("brand_new_baseline", "brand_new_baseline"),
            ("Stable Diffusion 1", "Stable Diffusion 1"),
            (1, 1),
        ],
    )
    def test_table(self, legacy: object, v2: object) -> None:
        """Each legacy value maps to the expected v2 value."""
        assert normalize_baseline(legacy) == v2


class TestDownloadEntries:
    """`download_entries` maps legacy files + downloads to v2 download entries."""

    @pytest.mark.parametrize(
        ("files", "download", "expected"),
        [
            pytest.param(
                [
                    {"path": "a.ckpt", "sha256sum": SHA, "md5sum": "x"},
                    {"path": "v1-inference.yaml"},
                ],
                [{"file_name": "a.ckpt", "file_path": "", "file_url": "https://u/a"}],
                [
                    {
                        "file_name": "a.ckpt",
                        "file_url": "https://u/a",
                        "sha256sum": SHA,
                        "known_slow_download": False,
                    }
                ],
                id="yaml-and-md5-dropped",
            ),
            pytest.param(
                [{"path": "a.ckpt"}],
                [],
                [
                    {
                        "file_name": "a.ckpt",
                        "file_url": "",
                        "sha256sum": "FIXME",
                        "known_slow_download": False,
                    }
                ],
                id="no-sha-no-url",
            ),
            pytest.param(
                [
                    {
                        "path": "civitai_a.ckpt",
                        "sha256sum": SHA,
                        "file_type": "vae",
                        "content_hash": "h",
                    }
                ],
                [{"file_name": "civitai_a.ckpt", "file_url": None}],
                [
                    {
                        "file_name": "civitai_a.ckpt",
                        "file_url": "",
                        "sha256sum": SHA,
                        "content_hash": "h",
                        "file_purpose": "vae",
                        "known_slow_download": True,
                    }
                ],
                id="purpose-hash-slow",
            ),
            pytest.param(
                [{"path": "a.ckpt", "sha256sum": SHA}, {"path": "a.ckpt"}, {"path": ""}],
                [
                    {"file_name": "a.ckpt", "file_url": "u1"},
                    {"file_name": "a.ckpt", "file_url": "u2"},
                ],
                [
                    {
                        "file_name": "a.ckpt",
                        "file_url": "u2",
                        "sha256sum": "FIXME",
                        "known_slow_download": False,
                    }
                ],
                id="repeats-last-wins",
            ),
            pytest.param([{"path": "my_yaml_model.ckpt"}], [], [], id="yaml-anywhere-in-name"),
        ],
    )
    def test_table(
        self, files: list[dict[str, Any]], download: list[dict[str, Any]], expected: list[Any]
    ) -> None:
        """Each legacy config maps to the expected download list."""
        assert download_entries(config(files, download)) == expected

    @pytest.mark.parametrize(
        "download",
        [
            [{"file_name": "b.ckpt", "file_url": "u"}],
            [{"file_name": "v1-inference.yaml", "file_url": "u"}],
            [{"file_url": "u"}],
        ],
    )
    def test_unmatched_download(self, download: list[dict[str, Any]]) -> None:
        """A download entry without a matching (non-yaml) file raises ValueError."""
        files = [{"path": "a.ckpt", "sha256sum": SHA}, {"path": "v1-inference.yaml"}]
        with pytest.raises(ValueError, match="matches no file"):
            download_entries(config(files, download))


class TestV2Config:
    """`v2_config` differs between the full and the lean (image) serialization."""

    @pytest.mark.parametrize(
        ("raw", "full", "lean"),
        [
            pytest.param({}, {"download": []}, {}, id="empty"),
            pytest.param(None, {"download": []}, {}, id="null"),
            pytest.param({"files": None, "download": None}, {"download": []}, {}, id="null-lists"),
            pytest.param(
                {"files": [{"path": "a"}], "download": []},
                {
                    "download": [
                        {
                            "file_name": "a",
                            "file_url": "",
                            "sha256sum": "FIXME",
                            "known_slow_download": False,
                        }
                    ]
                },
                {"download": [{"file_name": "a", "file_url": "", "known_slow_download": False}]},
                id="fixme-sha",
            ),
            pytest.param(
                {"embedded_component_hashes": {"vae": "h"}},
                {"download": [], "embedded_component_hashes": {"vae": "h"}},
                {"embedded_component_hashes": {"vae": "h"}},
                id="embedded",
            ),
        ],
    )
    def test_table(self, raw: Any, full: dict[str, Any], lean: dict[str, Any]) -> None:
        """Each legacy config gives the expected full and lean v2 blocks."""
        validated = LegacyConfig.model_validate(raw)
        assert v2_config(validated, drop_defaults=False) == full
        assert v2_config(validated, drop_defaults=True) == lean


class TestMetadata:
    """`v2_metadata` and `stamp_metadata` reproduce the PRIMARY's metadata blocks."""

    @pytest.mark.parametrize(
        ("legacy", "full", "lean"),
        [
            pytest.param(None, {"schema_version": "2.1.0"}, None, id="none"),
            pytest.param({}, {"schema_version": "1.0.0"}, {"schema_version": "1.0.0"}, id="empty"),
            pytest.param({"schema_version": "2.1.0"}, {"schema_version": "2.1.0"}, None, id="v2.1"),
            pytest.param(
                {"created_at": 5, "created_by": "me", "extra": 1},
                {"schema_version": "1.0.0", "created_at": 5, "created_by": "me"},
                {"schema_version": "1.0.0", "created_at": 5, "created_by": "me"},
                id="values",
            ),
        ],
    )
    def test_own_block(
        self, legacy: dict[str, Any] | None, full: dict[str, Any], lean: dict[str, Any] | None
    ) -> None:
        """Each legacy metadata block gives the expected full and lean v2 blocks."""
        validated = None if legacy is None else LegacyMetadata.model_validate(legacy)
        assert v2_metadata(validated, drop_defaults=False) == full
        assert v2_metadata(validated, drop_defaults=True) == lean

    @pytest.mark.parametrize(
        ("metadata", "now", "expected"),
        [
            (None, None, None),
            ({"schema_version": "2.1.0"}, None, {"schema_version": "2.1.0"}),
            (None, 7, {"created_at": 7, "updated_at": 7}),
            (
                {"schema_version": "2.1.0"},
                7,
                {"schema_version": "2.1.0", "created_at": 7, "updated_at": 7},
            ),
            (
                {"schema_version": "1.0.0", "created_at": 3, "created_by": "me"},
                7,
                {"schema_version": "1.0.0", "created_at": 3, "updated_at": 7, "created_by": "me"},
            ),
        ],
    )
    def test_stamp(
        self, metadata: dict[str, Any] | None, now: int | None, expected: dict[str, Any] | None
    ) -> None:
        """Missing timestamps come from `now`, present ones stay, keys in upstream's order."""
        stamped = stamp_metadata(metadata, now)
        assert stamped == expected
        assert list(stamped or {}) == list(expected or {})


class TestImageStyleAndRequirements:
    """`image_style` and `scheduler_requirements` apply the image record's rules."""

    @pytest.mark.parametrize(
        ("style", "expected"),
        [(None, None), ("anime", "anime"), (" realistic ", "realistic"), ("other", "other")],
    )
    def test_known_styles(self, style: str | None, expected: str | None) -> None:
        """Known styles are kept, stripped."""
        assert image_style(style) == expected

    @pytest.mark.parametrize("style", ["", "cartoon", "Anime"])
    def test_unknown_style(self, style: str) -> None:
        """Another style (even an empty one) raises ValueError."""
        with pytest.raises(ValueError, match="Unknown style"):
            image_style(style)

    @pytest.mark.parametrize(
        ("legacy", "expected"),
        [
            (None, None),
            ({"clip_skip": 2}, {"clip_skip": 2}),
            ({"karras": True, "clip_skip": 2}, {"clip_skip": 2, "schedulers": ["karras"]}),
            ({"karras": False}, {"schedulers": ["normal"]}),
            ({"karras": True, "schedulers": ["x"]}, {"schedulers": ["x"]}),
            ({"karras": "yes"}, {}),
        ],
    )
    def test_scheduler_requirements(
        self, legacy: dict[str, Any] | None, expected: dict[str, Any] | None
    ) -> None:
        """A boolean `karras` becomes a `schedulers` list unless one is given."""
        assert scheduler_requirements(legacy) == expected


class TestImageRecord:
    """`image_record` builds the lean v2 image_generation record."""

    def test_typical(self) -> None:
        """Defaults are left out; lists are always present; baseline is normalised."""
        legacy = LegacyImageRecord.model_validate(image_legacy(size_on_disk_bytes=10))
        assert image_record(legacy) == {
            "name": "M",
            "description": "d",
            "version": "1",
            "config": {
                "download": [
                    {
                        "file_name": "m.safetensors",
                        "file_url": "https://u/m",
                        "sha256sum": SHA,
                        "known_slow_download": False,
                    }
                ]
            },
            "size_on_disk_bytes": 10,
            "baseline": "stable_diffusion_1",
            "tags": [],
            "showcases": [],
            "trigger": [],
            "nsfw": False,
            "style": "anime",
        }

    def test_optional_fields(self) -> None:
        """Set optional fields are carried over; tags are stripped; nsfw None is false."""
        legacy = LegacyImageRecord.model_validate(
            image_legacy(
                inpainting="yes",
                nsfw=None,
                tags=[" a ", "b"],
                showcases=["https://s/1.png"],
                trigger=["t"],
                homepage="h",
                min_bridge_version="12",
                optimization="o",
                requirements={"karras": True},
                description=None,
                config={},
            )
        )
        record = image_record(legacy)
        assert record == {
            "name": "M",
            "version": "1",
            "inpainting": True,
            "baseline": "stable_diffusion_1",
            "optimization": "o",
            "tags": ["a", "b"],
            "showcases": ["https://s/1.png"],
            "min_bridge_version": 12,
            "trigger": ["t"],
            "homepage": "h",
            "nsfw": False,
            "style": "anime",
            "requirements": {"schedulers": ["karras"]},
        }

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"type": "lora"}, "type"),
            ({"baseline": None}, "baseline"),
            ({"showcases": ["https://huggingface.co/x.png"]}, "huggingface"),
            ({"version": 1}, "version"),
            ({"size_on_disk_bytes": 1.5}, "size_on_disk_bytes"),
            ({"available": "maybe"}, "available"),
            ({"config": []}, "config"),
            ({"requirements": {"a": {"b": 1}}}, "requirements"),
        ],
    )
    def test_invalid_legacy(self, fields: dict[str, Any], message: str) -> None:
        """Records upstream's pydantic validation rejects are rejected too."""
        with pytest.raises(ValueError, match=message):
            LegacyImageRecord.model_validate(image_legacy(**fields))


class TestUtilityRecord:
    """`utility_record` builds the full v2 record of the utility categories."""

    def test_esrgan(self) -> None:
        """Only name/description/version/config survive, plus type, metadata and classification."""
        legacy = LegacyRecord.model_validate(utility_legacy())
        assert utility_record(C.esrgan, legacy) == {
            "record_type": "esrgan",
            "name": "U",
            "description": "d",
            "version": "1",
            "metadata": {"schema_version": "2.1.0"},
            "config": {
                "download": [
                    {
                        "file_name": "u.pth",
                        "file_url": "https://u/u",
                        "sha256sum": SHA,
                        "known_slow_download": False,
                    }
                ]
            },
            "model_classification": {"domain": "image", "purpose": "post_processing"},
        }

    @pytest.mark.parametrize(
        ("category", "fields", "extra"),
        [
            (C.clip, {"type": "clip", "pretrained_name": "p"}, {"pretrained_name": "p"}),
            (C.clip, {"type": "coca"}, {}),
            (C.controlnet, {"type": "control_canny"}, {"controlnet_style": "control_canny"}),
            (
                C.controlnet,
                {"type": None, "style": "control_depth"},
                {"controlnet_style": "control_depth"},
            ),
            (C.controlnet, {"type": "", "style": "s"}, {"controlnet_style": "s"}),
            (C.controlnet, {"type": None, "style": None}, {}),
            (C.blip, {"type": "anything"}, {}),
        ],
    )
    def test_category_extras(
        self, category: C, fields: dict[str, Any], extra: dict[str, Any]
    ) -> None:
        """clip adds `pretrained_name`, controlnet adds `controlnet_style` (type, else style)."""
        model = LegacyClipRecord if category is C.clip else LegacyRecord
        record = utility_record(category, model.model_validate(utility_legacy(**fields)))
        assert {
            k: v for k, v in record.items() if k in ("pretrained_name", "controlnet_style")
        } == extra

    def test_clip_type_is_checked(self) -> None:
        """A clip record whose type is neither clip nor coca is rejected."""
        with pytest.raises(ValueError, match="type"):
            LegacyClipRecord.model_validate(utility_legacy(type="blip"))


class TestLicensing:
    """Legacy licensing is validated and carried over; otherwise the PRIMARY's default is served."""

    @pytest.mark.parametrize(
        ("expression", "symbols"),
        [
            ("MIT", {"MIT"}),
            ("MIT OR Apache-2.0", {"MIT", "Apache-2.0"}),
            ("(MIT or Apache-2.0) AND BSD-3-Clause", {"MIT", "Apache-2.0", "BSD-3-Clause"}),
            ("GPL-2.0 WITH Classpath-exception-2.0", {"GPL-2.0 WITH Classpath-exception-2.0"}),
            ("NOASSERTION", {"NOASSERTION"}),
        ],
    )
    def test_symbols(self, expression: str, symbols: set[str]) -> None:
        """Identifiers are found in an SPDX expression."""
        assert licence_symbols(expression) == symbols

    @pytest.mark.parametrize("expression", ["", "(MIT", "MIT)", "AND", "MIT WITH"])
    def test_invalid_expressions(self, expression: str) -> None:
        """Expressions without identifiers or with unbalanced parentheses are rejected."""
        with pytest.raises(ValueError, match="Invalid license expression"):
            licence_symbols(expression)

    def test_carried_over(self) -> None:
        """A legacy licensing block is kept: full for utilities, lean for image_generation."""
        licensing = {
            "license_expression": "MIT",
            "license_ids": ["MIT"],
            "commercial_use": "allowed",
            "redistribution": "allowed",
            "reviewed_at": "2024-01-02",
        }
        util = convert_json(C.esrgan, {"U": utility_legacy(licensing=licensing)})["U"]
        assert util["licensing"] == {**licensing, "obligations": [], "evidence": [], "files": {}}
        image = convert_json(C.image_generation, {"M": image_legacy(licensing=licensing)})["M"]
        assert image["licensing"] == licensing

    @pytest.mark.parametrize(
        "licensing",
        [
            {
                "license_expression": "MIT OR X",
                "license_ids": ["MIT"],
                "commercial_use": "allowed",
                "redistribution": "allowed",
            },
            {
                "license_expression": "NOASSERTION",
                "commercial_use": "allowed",
                "redistribution": "unknown",
            },
            {
                "license_expression": "NOASSERTION",
                "commercial_use": "unknown",
                "redistribution": "unknown",
                "x": 1,
            },
            {
                "license_expression": "NOASSERTION",
                "commercial_use": "unknown",
                "redistribution": "unknown",
                "files": {
                    "not-a-download": {
                        "license_expression": "NOASSERTION",
                        "commercial_use": "unknown",
                        "redistribution": "unknown",
                    }
                },
            },
        ],
    )
    def test_invalid(self, licensing: dict[str, Any]) -> None:
        """An inconsistent licensing block fails the category, naming the record."""
        with pytest.raises(InvalidPayload, match="record 'U'"):
            convert_json(C.esrgan, {"U": utility_legacy(licensing=licensing)})


class TestTextRow:
    """`text_row` types a models.csv row the way upstream reads it."""

    def test_full_row(self) -> None:
        """All columns are read; tags are split and stripped; blanks become empty strings."""
        row = text_row(
            {
                "name": " Org/M-7B ",
                "parameters_bn": "7",
                "display_name": "",
                "url": "https://u",
                "baseline": "mistral",
                "description": "d",
                "style": "generalist",
                "tags": " a , b ,",
                "instruct_format": "ChatML",
                "settings": '{"temperature": 0.7}',
                "nsfw": "TRUE",
            }
        )
        assert row == TextRow(
            name="Org/M-7B",
            parameters=7_000_000_000,
            description="d",
            style="generalist",
            nsfw=True,
            baseline="mistral",
            url="https://u",
            tags=("a", "b"),
            instruct_format="ChatML",
            settings={"temperature": 0.7},
        )

    @pytest.mark.parametrize(
        ("cell", "count"),
        [
            ("", 0),
            ("7", 7_000_000_000),
            ("0.56", 560_000_000),
            ("1.1", 1_100_000_000),
            ("-2", -2_000_000_000),
        ],
    )
    def test_parameter_count(self, cell: str, count: int) -> None:
        """`parameters_bn` becomes a whole parameter count (blank is 0)."""
        assert parameter_count(cell) == count

    @pytest.mark.parametrize(
        "row",
        [
            {"name": "", "parameters_bn": "1"},
            {"name": "   ", "parameters_bn": "1"},
            {"name": "A", "parameters_bn": "abc"},
            {"name": "A", "parameters_bn": "1", "settings": "{bad"},
            {"name": "A", "parameters_bn": "1", "settings": "[1]"},
            {"name": "A", "parameters_bn": "1", "settings": '{"a": {"b": 1}}'},
            {"name": "A", "parameters_bn": "1", "context_window": "[1]"},
            {"name": "A", "parameters_bn": "1", "capabilities": "{bad"},
        ],
    )
    def test_skipped(self, row: dict[str | None, Any]) -> None:
        """Rows upstream leaves out raise SkippedRow."""
        with pytest.raises(SkippedRow):
            text_row(row)

    @pytest.mark.parametrize(
        "row",
        [
            {"name": "A", "parameters_bn": "inf"},
            {"name": "A", "parameters_bn": "nan"},
            {"name": "A", "parameters_bn": "1e300"},
            {"name": "A", "parameters_bn": "1", "tags": None},
        ],
    )
    def test_fatal(self, row: dict[str | None, Any]) -> None:
        """Rows upstream crashes on raise ValueError (not SkippedRow)."""
        with pytest.raises(ValueError) as info:
            text_row(row)
        assert not isinstance(info.value, SkippedRow)


class TestTextRecord:
    """`text_record` builds the v2 text_generation record of one row."""

    def test_minimal(self) -> None:
        """Upstream's CSV path applies no defaults: empty strings stay empty."""
        assert text_record(TextRow(name="Org/M-7B", parameters=7), "M") == {
            "record_type": "text_generation",
            "name": "Org/M-7B",
            "description": "",
            "version": "",
            "metadata": {"schema_version": "2.1.0"},
            "config": {"download": []},
            "model_classification": {"domain": "text", "purpose": "generation"},
            "baseline": "",
            "parameters": 7,
            "nsfw": False,
            "style": "",
            "display_name": "",
            "url": "",
            "tags": [],
            "text_model_group": "M",
        }

    def test_optional_columns(self) -> None:
        """instruct_format, settings and the durable claims are validated and carried over."""
        row = TextRow(
            name="A",
            parameters=1,
            instruct_format="Alpaca",
            settings={"a": [1, 2.5], "b": True},
            context_window={"maximum_tokens": 4096, "sources": [{"url": "https://example.com"}]},
            interaction_modes={"chat": {"status": "supported"}},
            capabilities={"tool_calling": {"status": "unknown", "qualification": "q"}},
        )
        record = text_record(row, "A")
        assert record["instruct_format"] == "Alpaca"
        assert record["settings"] == {"a": [1.0, 2.5], "b": True}
        assert record["context_window"] == {
            "maximum_tokens": 4096,
            "sources": [{"url": "https://example.com/"}],
        }
        assert record["interaction_modes"] == {"chat": {"status": "supported", "sources": []}}
        assert record["capabilities"] == {
            "tool_calling": {"status": "unknown", "sources": [], "qualification": "q"}
        }

    @pytest.mark.parametrize(
        ("instruct_format", "status"),
        [
            (None, "undocumented"),
            ("", "undocumented"),
            ("   ", "undocumented"),
            ("ChatML", "legacy_label"),
        ],
    )
    def test_guidance(self, instruct_format: str | None, status: str) -> None:
        """The served guidance summary depends only on a non-blank instruct_format."""
        assert text_guidance(instruct_format) == {
            "status": status,
            "primary_profile_id": None,
            "supplemental_profile_ids": [],
        }


class TestTextModelGroup:
    """`text_model_group` reproduces upstream's name-parsing heuristics."""

    @pytest.mark.parametrize(
        ("name", "group"),
        [
            ("acrastt/Marx-3B-V3", "Marx"),
            ("KoboldAI/fairseq-dense-13B-Shinen", "fairseq-dense-Shinen"),
            ("TheDrummer/Behemoth-123B-v2.1", "Behemoth"),
            ("SicariusSicariiStuff/LLAMA-3_8B_Unaligned_BETA", "LLAMA-3_Unaligned_BETA"),
            ("EleutherAI/pythia-70m-deduped", "pythia-deduped"),
            ("Qwen/Qwen3-30B-A3B-Instruct-2507", "Qwen3-A3B"),
            ("cognitivecomputations/dolphin-2.9.3-mistral-nemo-12b", "dolphin-2.9.3-mistral-nemo"),
            ("anthracite-org/magnum-v3-9b-chatml", "magnum-chatml"),
            ("gpt2-large", "gpt2-large"),
            ("facebook/opt-6.7b", "opt"),
            ("bigscience/bloom-7b1", "bloom"),
            ("BruhzWater/Sapphira-L3.3-70b-0.2", "Sapphira-L3.3-0.2"),
            ("knifeayumu/Cydonia-v4.1-MS3.2-Magnum-Diamond-24B", "Cydonia-MS3.2-Magnum-Diamond"),
            ("Llama-3-8B-Instruct-Q4_K_M", "Llama-3"),
            ("Mistral-7B-v0.1", "Mistral"),
            ("c4ai-command-r-08-2024", "c4ai-command-r"),
            ("Mixtral-8x7B-Instruct-v0.1", "Mixtral"),
            ("4.2.0-Broken-Tutu-24B", "Broken-Tutu"),
            ("koboldcpp/Broken-Tutu-24B", "Broken-Tutu"),
            ("aphrodite/ReadyArt/Broken-Tutu-24B", "Broken-Tutu"),
            ("Org/model__name--GGUF", "model_name"),
            ("Phi-3.5-mini-instruct", "Phi-3.5-mini"),
            ("Qwen2.5-1.5B-Chat-AWQ", "Qwen2.5"),
            ("some.model.fp16", "some.model"),
            ("Thinker-Reasoning-2407", "Thinker"),
            ("13B", "13B"),
            ("v2", "v2"),
        ],
    )
    def test_table(self, name: str, group: str) -> None:
        """Each model name falls into the group upstream computes for it."""
        assert text_model_group(name) == group

    def test_base_name_keeps_author_slash(self) -> None:
        """`base_model_name` works on a bare name; authors are only split off by the group."""
        assert base_model_name("Org/M-7B") == "Org/M"


class TestConvertLegacy:
    """`convert_legacy` ties it together: input files in, the served v2 bytes out."""

    def test_output_bytes(self) -> None:
        """Compact UTF-8 JSON with non-ASCII kept, keys in file order, served fields added."""
        records = {"Z": image_legacy(name="Z", description="日本"), "A": image_legacy(name="A")}
        body = convert_legacy(
            C.image_generation, {"stable_diffusion.json": json.dumps(records).encode()}
        )
        assert "日本".encode() in body
        assert b": " not in body
        assert b", " not in body
        data = json.loads(body)
        assert list(data) == ["Z", "A"]
        assert data["A"]["licensing"] == NO_LICENCE
        assert "metadata" not in data["A"]

    def test_now_stamps_metadata(self) -> None:
        """With `now`, every record gets created_at/updated_at like the PRIMARY's init time."""
        image = convert_json(C.image_generation, {"M": image_legacy()}, now=42)["M"]
        assert image["metadata"] == {"created_at": 42, "updated_at": 42}
        util = convert_json(C.esrgan, {"U": utility_legacy()}, now=42)["U"]
        assert util["metadata"] == {"schema_version": "2.1.0", "created_at": 42, "updated_at": 42}
        text = convert_csv(CSV_HEADER + "A,1,,,,,,,,\n", now=42)["A"]
        assert text["metadata"] == {"schema_version": "2.1.0", "created_at": 42, "updated_at": 42}

    def test_text_csv(self) -> None:
        """Prefixed rows are dropped, a repeated name keeps its last row, guidance is added."""
        csv_text = CSV_HEADER + (
            "koboldcpp/M-7B,7,,,,,,,,\n"
            "Org/M-7B,7,First,,,,,,ChatML,\n"
            "Org/N-13B,13,,,,,,,,\n"
            "Org/M-7B,8,Second,,,,,,ChatML,\n"
            ",1,,,,,,,,\n"
        )
        data = convert_csv(csv_text)
        assert list(data) == ["Org/M-7B", "Org/N-13B"]
        assert data["Org/M-7B"]["display_name"] == "Second"
        assert data["Org/M-7B"]["parameters"] == 8_000_000_000
        assert data["Org/M-7B"]["guidance"]["status"] == "legacy_label"
        assert data["Org/N-13B"]["guidance"]["status"] == "undocumented"
        assert data["Org/N-13B"]["text_model_group"] == "N"

    def test_db_json_is_ignored(self) -> None:
        """text_generation is built from models.csv; db.json alone is not enough."""
        with pytest.raises(InvalidPayload, match="missing"):
            convert_legacy(C.text_generation, {"db.json": b"{}"})

    def test_empty_object(self) -> None:
        """`{}` converts to `{}`."""
        assert convert_legacy(C.esrgan, {"esrgan.json": b"{}"}) == b"{}"

    @pytest.mark.parametrize(
        ("category", "files", "message"),
        [
            (C.lora, {"lora.json": b"{}"}, "no legacy format"),
            (C.esrgan, {}, "missing"),
            (C.esrgan, {"esrgan.json": b""}, "empty"),
            (C.esrgan, {"esrgan.json": b" \n"}, "empty"),
            (C.esrgan, {"esrgan.json": b"\xff{}"}, "not UTF-8"),
            (C.esrgan, {"esrgan.json": b"{"}, "not valid JSON"),
            (C.esrgan, {"esrgan.json": b"[]"}, "not an object"),
            (C.esrgan, {"esrgan.json": b'{"U": 1}'}, "record 'U'"),
            (C.text_generation, {"models.csv": b"name,parameters_bn\nA,inf\n"}, "row 2"),
            (C.text_generation, {"models.csv": b"name,parameters_bn,tags\nA,1\n"}, "row 2"),
            (
                C.text_generation,
                {"models.csv": b'name,parameters_bn,settings\nA,1,"{""a"": [1, ""x""]}"\n'},
                "record 'A'",
            ),
        ],
    )
    def test_unconvertible_input(self, category: C, files: dict[str, bytes], message: str) -> None:
        """Input that cannot be converted raises InvalidPayload naming the category."""
        with pytest.raises(InvalidPayload, match=message) as info:
            convert_legacy(category, files)
        assert info.value.what.startswith(category.value)

    @pytest.mark.parametrize(
        ("category", "records", "message"),
        [
            (C.image_generation, {"M": image_legacy(style="cartoon")}, "Unknown style"),
            (C.image_generation, {"M": image_legacy(type="lora")}, "type"),
            (
                C.image_generation,
                {"M": image_legacy(showcases=["https://huggingface.co/s.png"])},
                "huggingface",
            ),
            (
                C.esrgan,
                {
                    "U": utility_legacy(
                        config={"files": [], "download": [{"file_name": "x", "file_url": "u"}]}
                    )
                },
                "matches no file",
            ),
            (C.esrgan, {"U": utility_legacy(name=5)}, "name"),
            (
                C.esrgan,
                {
                    "U": utility_legacy(
                        config={
                            "files": [{"path": "u.pth"}],
                            "download": [{"file_name": "u.pth", "file_url": "http://[::1"}],
                        }
                    )
                },
                "file_url",
            ),
            (
                C.image_generation,
                {"M": image_legacy(requirements={"x": float("nan")})},
                "not valid JSON",
            ),
        ],
    )
    def test_one_bad_record_fails_the_category(
        self, category: C, records: dict[str, Any], message: str
    ) -> None:
        """A record upstream rejects aborts the whole category, naming category and record."""
        good = {
            "Good": image_legacy(name="Good")
            if category is C.image_generation
            else utility_legacy(name="Good")
        }
        with pytest.raises(InvalidPayload, match=message) as info:
            convert_json(category, {**good, **records})
        assert category.value in info.value.what
        if message != "not valid JSON":
            assert repr(next(iter(records))) in info.value.reason


@pytest.mark.skipif(not LEGACY_DIR.is_dir(), reason=f"no shared legacy data at {LEGACY_DIR}")
class TestRealLegacyFiles:
    """The real legacy files of the shared reference data all convert."""

    @pytest.mark.parametrize(
        ("category", "count"),
        [
            (C.blip, 2),
            (C.clip, 2),
            (C.codeformer, 1),
            (C.controlnet, 18),
            (C.esrgan, 6),
            (C.gfpgan, 1),
            (C.safety_checker, 1),
            (C.image_generation, 161),
            (C.text_generation, 719),
            (C.miscellaneous, 2),
        ],
    )
    def test_converts(self, category: C, count: int) -> None:
        """Each category converts to the expected number of records, each with licensing."""
        files = {path.name: path.read_bytes() for path in LEGACY_DIR.iterdir() if path.is_file()}
        data = json.loads(convert_legacy(category, files, now=1))
        assert len(data) == count
        assert all(record["licensing"] == NO_LICENCE for record in data.values())
        assert all(record["metadata"]["created_at"] == 1 for record in data.values())


class TestConvertibleMatchesGithub:
    """The source chain falls back for v2 exactly where GitHub has legacy files."""

    def test_convertible_is_having_a_github_source(self) -> None:
        """`convertible` and `CategorySpec.github_repo` agree for every category."""
        from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, spec_for
        from horde_replica_sync.convert import convertible

        for category in MODEL_REFERENCE_CATEGORY:
            assert convertible(category) == (spec_for(category).github_repo is not None)
