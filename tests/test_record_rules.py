"""Record-level validation of v2 files (`record_rules` via `parse_json_records`).

The real v2 payloads are derived from `shared/reference-data/legacy` with `convert_legacy`
(the same records the real PRIMARY serves: tests/interop/test_convert_interop.py), then
mutilated. `tests/interop/test_record_rules_interop.py` puts the same payloads before
upstream's own reader.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
from pydantic import ValidationError

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.convert import convert_legacy, convertible
from horde_replica_sync.errors import InvalidPayload
from horde_replica_sync.record_rules import count_usable, rule_for, unusable_records
from horde_replica_sync.validation import parse_json_records
from tests.environment import shared_dir

CONVERTIBLE = [category for category in C if convertible(category)]
WHAT = "test v2 file"
Records = dict[str, Any]


@pytest.fixture(scope="module")
def real() -> dict[C, Records]:
    """The real v2 payload of every convertible category, parsed."""
    folder = shared_dir() / "reference-data" / "legacy"
    if not folder.is_dir():
        pytest.fail(f"no legacy reference data at {folder} (set HRS_SHARED_DIR)")
    files = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    return {category: json.loads(convert_legacy(category, files)) for category in CONVERTIBLE}


def encode(data: Records) -> bytes:
    """A v2 body."""
    return json.dumps(data).encode()


def check(category: C, data: Records) -> int:
    """Validate `data` as the v2 file of `category`; the records it counts."""
    return parse_json_records(WHAT, encode(data), category=category, layer=Layer.V2).records


def refusal(category: C, data: Records) -> str:
    """The reason `data` is refused as the v2 file of `category`."""
    with pytest.raises(InvalidPayload) as info:
        check(category, data)
    assert info.value.what == WHAT
    return info.value.reason


def gutted(data: Records) -> Records:
    """Every record reduced to its name (issue 11 #3's payload)."""
    return {key: {"name": record["name"]} for key, record in data.items()}


def first_key(data: Records) -> str:
    return next(iter(data))


def with_change(data: Records, key: str, **changes: Any) -> Records:
    """`data` with record `key` changed: a value of None deletes the field."""
    changed = copy.deepcopy(data)
    for field, value in changes.items():
        if value is None:
            del changed[key][field]
        else:
            changed[key][field] = value
    return changed


class TestRealPayloads:
    """Every real record passes: the rules ask nothing the real data lacks."""

    @pytest.mark.parametrize("category", CONVERTIBLE, ids=str)
    def test_all_pass(self, real: dict[C, Records], category: C) -> None:
        assert real[category], f"no real {category} records"
        assert unusable_records(category, real[category]) == []
        assert check(category, real[category]) == len(real[category])

    @pytest.mark.parametrize("category", list(C), ids=str)
    def test_empty_object_passes(self, category: C) -> None:
        """The real PRIMARY serves `{}` for empty categories (video_generation...)."""
        assert check(category, {}) == 0

    def test_every_category_has_rules(self) -> None:
        for category in C:
            assert rule_for(category).model_fields["name"].is_required()

    @pytest.mark.parametrize(
        ("category", "limit"), [(C.text_generation, 0.1), (C.image_generation, 0.1)]
    )
    def test_fast_enough(self, real: dict[C, Records], category: C, limit: float) -> None:
        """The biggest real payloads validate (parse included) well under 100 ms."""
        body = encode(real[category])
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            parse_json_records(WHAT, body, category=category, layer=Layer.V2)
            timings.append(time.perf_counter() - start)
        best = min(timings)
        print(f"\n[record_rules] {category}: {len(real[category])} records in {best * 1000:.1f} ms")
        assert best < limit


class TestGutted:
    """A payload that keeps every name but drops every other field is refused."""

    @pytest.mark.parametrize("category", CONVERTIBLE, ids=str)
    def test_refused(self, real: dict[C, Records], category: C) -> None:
        data = gutted(real[category])
        reason = refusal(category, data)
        total = len(data)
        assert reason.startswith(f"{total} of {total} records unusable by upstream's readers: ")
        keys = list(data)[:3]
        for key in keys:
            assert f"{key}: no " in reason
        assert reason.endswith(" (first 3)") is (total > 3)

    def test_image_reason_names_each_missing_field(self, real: dict[C, Records]) -> None:
        reason = refusal(C.image_generation, gutted(real[C.image_generation]))
        key = first_key(real[C.image_generation])
        assert f"{key}: no config, no baseline, no nsfw;" in reason

    def test_text_reason(self, real: dict[C, Records]) -> None:
        reason = refusal(C.text_generation, gutted(real[C.text_generation]))
        assert f"{first_key(real[C.text_generation])}: no parameters;" in reason

    @pytest.mark.parametrize("layer", [None, Layer.LEGACY])
    def test_without_v2_rules_only_names_count(self, real: dict[C, Records], layer: Layer) -> None:
        """Legacy files (and calls without a category) keep the name-only bar."""
        data = gutted(real[C.image_generation])
        payload = parse_json_records(WHAT, encode(data), category=C.image_generation, layer=layer)
        assert payload.records == len(data)
        assert parse_json_records(WHAT, encode(data)).records == len(data)


class TestOneRecordMissingSomething:
    """One unusable record refuses the file, and the error names it."""

    @pytest.mark.parametrize("field", ["baseline", "nsfw", "config"])
    def test_image_required_field(self, real: dict[C, Records], field: str) -> None:
        data = real[C.image_generation]
        key = list(data)[7]
        reason = refusal(C.image_generation, with_change(data, key, **{field: None}))
        assert reason == (
            f"1 of {len(data)} records unusable by upstream's readers: {key}: no {field}"
        )

    def test_image_without_files(self, real: dict[C, Records]) -> None:
        data = real[C.image_generation]
        key = first_key(data)
        reason = refusal(C.image_generation, with_change(data, key, config={"download": []}))
        assert f"{key}: no file to download" in reason

    def test_download_without_url(self, real: dict[C, Records]) -> None:
        data = real[C.esrgan]
        key = first_key(data)
        download = [{"file_name": "x.pth"}]
        reason = refusal(C.esrgan, with_change(data, key, config={"download": download}))
        assert f"{key}: no config.download.0.file_url" in reason

    def test_text_without_parameters(self, real: dict[C, Records]) -> None:
        data = real[C.text_generation]
        key = list(data)[100]
        reason = refusal(C.text_generation, with_change(data, key, parameters=None))
        assert reason == (
            f"1 of {len(data)} records unusable by upstream's readers: {key}: no parameters"
        )

    def test_wrong_type_is_refused(self, real: dict[C, Records]) -> None:
        data = real[C.image_generation]
        key = first_key(data)
        reason = refusal(C.image_generation, with_change(data, key, tags="anime"))
        assert f"{key}: tags: " in reason

    def test_record_not_an_object(self, real: dict[C, Records]) -> None:
        data = dict(real[C.esrgan], broken="nope")
        assert "broken: record: " in refusal(C.esrgan, data)

    def test_controlnet_annotator_needs_files(self) -> None:
        """No real data yet; upstream's model says its files are the download entries."""
        assert "a: no config" in refusal(C.controlnet_annotator, {"a": {"name": "a"}})

    @pytest.mark.parametrize("category", [C.video_generation, C.audio_generation, C.lora, C.ti])
    def test_categories_without_real_data_need_only_a_name(self, category: C) -> None:
        assert check(category, {"a": {"name": "a"}}) == 1
        assert "a: no name" in refusal(category, {"a": {"label": "a"}})


class TestTolerantOfWhatIsNew:
    """New fields and new values pass: only what is missing or unreadable is refused."""

    def test_new_baseline_and_unknown_field(self, real: dict[C, Records]) -> None:
        data = real[C.image_generation]
        key = first_key(data)
        changed = with_change(data, key, baseline="flux_9000", brand_new_field={"x": [1]})
        assert check(C.image_generation, changed) == len(data)

    @pytest.mark.parametrize(
        ("category", "changes"),
        [
            (C.image_generation, {"style": "vaporwave"}),
            (C.image_generation, {"requirements": {"schedulers": ["brand_new"], "x": {"y": 1}}}),
            (C.image_generation, {"record_type": "image_generation_v3"}),
            (C.controlnet, {"controlnet_style": "brand_new"}),
            (C.esrgan, {"model_classification": {"domain": "holo", "purpose": "new"}}),
            (C.text_generation, {"baseline": "brand_new", "new": 1, "settings": {"k": {"x": 1}}}),
        ],
    )
    def test_unknown_values_pass(
        self, real: dict[C, Records], category: C, changes: dict[str, Any]
    ) -> None:
        data = real[category]
        assert check(category, with_change(data, first_key(data), **changes)) == len(data)

    def test_text_parameters_as_upstream_reads_them(self, real: dict[C, Records]) -> None:
        """Upstream also takes `parameters_count`, and a numeric string (pydantic's lax int)."""
        data = real[C.text_generation]
        key = first_key(data)
        renamed = with_change(data, key, parameters=None, parameters_count=7_000_000_000)
        assert check(C.text_generation, renamed) == len(data)
        assert check(C.text_generation, with_change(data, key, parameters="7")) == len(data)

    def test_name_may_differ_from_key(self) -> None:
        download = [{"file_name": "c.safetensors", "file_url": "https://x/c"}]
        data = {"control_canny": {"name": "canny", "config": {"download": download}}}
        assert check(C.controlnet, data) == 1


# Values each field is set to in turn: every JSON type, and the strings and numbers pydantic's
# lax mode converts (the two paths must agree on those too).
_VALUES: tuple[Any, ...] = (
    "x", "", "true", "1", "1.5", 0, 1, -1, 1.0, 1.5, 1e30, True, False, None,
    [], ["a"], [{"file_name": "f", "file_url": "u"}], {}, {"domain": "d", "purpose": "p"},
)  # fmt: skip


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a record (object keys, list indexes), the record's own fields first."""
    if isinstance(value, dict):
        children: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    else:
        return [path]
    found = [path] if path else []
    for key, child in children:
        found += _leaf_paths(child, (*path, key))
    return found


def _set(record: Records, path: tuple[Any, ...], value: Any) -> Records:
    changed = copy.deepcopy(record)
    target = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return changed


class TestTwoParsers:
    """A v2 body is validated by pydantic's JSON parser first, and only what it refuses is
    judged again from `json.loads`' dict (validation.py). The first must never accept what
    the second refuses, or a body the daemon used to refuse would now be published."""

    @pytest.mark.parametrize("category", CONVERTIBLE, ids=str)
    def test_json_path_accepts_nothing_the_dict_path_refuses(
        self, real: dict[C, Records], category: C
    ) -> None:
        key = first_key(real[category])
        record = real[category][key]
        compared = 0
        for path in _leaf_paths(record):
            for value in _VALUES:
                text = json.dumps({key: _set(record, path, value), "other": record})
                try:
                    count = count_usable(category, text)
                except ValidationError:
                    continue  # judged again the json way: the old verdict, whatever it is
                assert unusable_records(category, json.loads(text)) == [], (path, value)
                assert count == 2
                compared += 1
        assert compared > 0

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param('{"a": {"name": "\\ud800"}}', id="lone-surrogate"),
            pytest.param('{"a": {"name": "\\ude00\\ud83d"}}', id="reversed-surrogates"),
            pytest.param('{"a": {"name": "a", "x": ' + "[" * 250 + "]" * 250 + "}}", id="deep"),
        ],
    )
    def test_what_only_json_accepts_is_still_accepted(self, text: str) -> None:
        """pydantic's parser refuses these; `json` accepts them, and so does the daemon."""
        with pytest.raises(ValidationError):
            count_usable(C.lora, text)  # lora needs only a name: the parser refuses
        assert parse_json_records(WHAT, text.encode()).records == 1
        assert parse_json_records(WHAT, text.encode(), category=C.lora, layer=Layer.V2).records == 1
