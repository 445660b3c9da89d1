"""Tests of the payload checks in `horde_replica_sync.validation`."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.errors import InvalidPayload, ShrinkRefused
from horde_replica_sync.validation import check_shrink, parse_json_records, parse_models_csv
from tests.environment import shared_dir

WHAT = "legacy/test-file.json"


LEGACY_DIR = shared_dir() / "reference-data" / "legacy"
LEGACY_JSON_FILES = sorted(LEGACY_DIR.glob("*.json"))


class TestParseJsonRecords:
    """`parse_json_records` accepts what upstream's readers can load and nothing else."""

    def test_valid_object(self) -> None:
        """A `{name: record}` object passes, keeping the bytes, the data and the record count."""
        content = b'{"a": {"name": "a", "x": 1}, "b": {"name": "b"}}'
        payload = parse_json_records(WHAT, content)
        assert payload.content == content
        assert payload.data == {"a": {"name": "a", "x": 1}, "b": {"name": "b"}}
        assert payload.records == 2

    def test_empty_object(self) -> None:
        """`{}` is valid and has zero records."""
        payload = parse_json_records(WHAT, b"{}")
        assert payload.data == {}
        assert payload.records == 0

    def test_key_differs_from_name(self) -> None:
        """A record whose `name` differs from its key is accepted (the real controlnet case)."""
        payload = parse_json_records(WHAT, b'{"control_canny": {"name": "canny"}}')
        assert payload.data == {"control_canny": {"name": "canny"}}
        assert payload.records == 1

    def test_unknown_fields_pass_through(self) -> None:
        """Unknown fields and values are kept untouched, at record and nested level."""
        record = {"name": "m", "new_field": [1, {"deep": None}], "baseline": "future_thing"}
        content = json.dumps({"m": record}).encode()
        payload = parse_json_records(WHAT, content)
        assert payload.data == {"m": record}

    def test_non_ascii_utf8(self) -> None:
        """UTF-8 text beyond ASCII is accepted."""
        payload = parse_json_records(WHAT, '{"é": {"name": "模型"}}'.encode())
        assert payload.data == {"é": {"name": "模型"}}

    @pytest.mark.parametrize(
        "content",
        [
            pytest.param(b'{"a": {"name": "\xff"}}', id="non-utf8"),
            pytest.param('{"a": {"name": "é"}}'.encode("latin-1"), id="latin-1"),
            pytest.param(b"not json", id="invalid-json"),
            pytest.param(b"", id="empty-body"),
            pytest.param(b'{"a": {"name": "a"}', id="truncated"),
            pytest.param(b'{"a": {"name": "a"}, "b": {"na', id="truncated-mid-key"),
            pytest.param(b"[]", id="top-level-list"),
            pytest.param(b'[{"name": "a"}]', id="top-level-list-of-records"),
            pytest.param(b'"text"', id="top-level-string"),
            pytest.param(b"null", id="top-level-null"),
            pytest.param(b"42", id="top-level-number"),
            pytest.param(b'{"a": "a"}', id="record-is-string"),
            pytest.param(b'{"a": ["a"]}', id="record-is-list"),
            pytest.param(b'{"a": null}', id="record-is-null"),
            pytest.param(b'{"a": {"name": "a"}, "b": 1}', id="second-record-is-number"),
            pytest.param(b'{"a": {}}', id="record-without-name"),
            pytest.param(b'{"a": {"display_name": "a"}}', id="record-without-name-other-field"),
            pytest.param(b'{"a": {"name": 1}}', id="name-is-int"),
            pytest.param(b'{"a": {"name": null}}', id="name-is-null"),
            pytest.param(b'{"a": {"name": true}}', id="name-is-bool"),
            pytest.param(b'{"a": {"name": ["a"]}}', id="name-is-list"),
            pytest.param(b"[" * 100_000, id="deeply-nested-list"),
            pytest.param(b'{"a": ' + b'{"b": ' * 100_000, id="deeply-nested-object"),
            pytest.param(
                b'{"a": {"name": "a", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
                id="deeply-nested-inside-record",
            ),
        ],
    )
    def test_invalid(self, content: bytes) -> None:
        """An invalid body raises InvalidPayload whose message names `what`."""
        with pytest.raises(InvalidPayload) as info:
            parse_json_records(WHAT, content)
        assert info.type is InvalidPayload
        assert info.value.what == WHAT
        assert str(info.value).startswith(f"{WHAT}: ")
        assert info.value.reason

    def test_bad_record_names_its_key(self) -> None:
        """A record without a string name is reported with its key."""
        with pytest.raises(InvalidPayload, match="broken"):
            parse_json_records(WHAT, b'{"ok": {"name": "ok"}, "broken": {"name": 3}}')

    @pytest.mark.parametrize("path", LEGACY_JSON_FILES, ids=lambda p: p.name)
    def test_real_legacy_files(self, path: Path) -> None:
        """Every real legacy JSON file from upstream passes, with one record per key."""
        content = path.read_bytes()
        payload = parse_json_records(path.name, content)
        assert payload.content == content
        assert payload.data is not None
        assert payload.records == len(payload.data) > 0

    @pytest.mark.parametrize("layer", [Layer.LEGACY, Layer.V2])
    def test_holds_no_parse_tree(self, layer: Layer) -> None:
        """A payload keeps its bytes only (issue 22: a parse tree is ~10x the body in small
        objects, and held across a run it kept the daemon's heap large); `data` parses."""
        records = {f"m{i}": {"name": f"m{i}", "description": "d" * 20} for i in range(5000)}
        content = json.dumps(records).encode()
        parse_json_records(WHAT, b"{}", category=C.lora, layer=layer)  # first-use costs
        tracemalloc.start()
        try:
            payload = parse_json_records(WHAT, content, category=C.lora, layer=layer)
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert held < len(content) // 10, f"{held} bytes held for a {len(content)}-byte body"
        assert payload.records == 5000
        assert payload.data == records

    def test_all_real_legacy_files_found(self) -> None:
        """The shared reference data holds the 10 legacy JSON files (9 image + db.json)."""
        assert len(LEGACY_JSON_FILES) == 10, f"looked in {LEGACY_DIR}"


class TestParseModelsCsv:
    """`parse_models_csv` accepts UTF-8 CSV with a `name` column and named rows."""

    def test_valid(self) -> None:
        """A CSV with a `name` header passes and counts its data rows."""
        content = b"name,parameters_bn,url\r\nfoo/bar,3,https://x\r\nbaz,7,\r\n"
        payload = parse_models_csv("models.csv", content)
        assert payload.content == content
        assert payload.data is None
        assert payload.records == 2

    def test_quoted_multiline_field(self) -> None:
        """A quoted field spanning lines counts as one row."""
        content = b'name,description\nfoo,"line one\nline two"\nbar,x\n'
        assert parse_models_csv("models.csv", content).records == 2

    @pytest.mark.parametrize(
        "content",
        [
            pytest.param(b"foo/bar,3,https://x\nbaz,7,\n", id="no-header"),
            pytest.param(b"model,params\nfoo,3\n", id="no-name-column"),
            pytest.param(b"", id="empty"),
            pytest.param(b"name,params\nfoo,3\n,4\n", id="empty-name"),
            pytest.param(b"name,params\nfoo,3\n  ,4\n", id="blank-name"),
            pytest.param(b"params,name\n3,foo\n4\n", id="short-row-missing-name"),
            pytest.param(b"name,params\n\xff\xfe,3\n", id="non-utf8"),
        ],
    )
    def test_invalid(self, content: bytes) -> None:
        """A CSV without a name column, with an unnamed row, or not UTF-8 is rejected."""
        with pytest.raises(InvalidPayload) as info:
            parse_models_csv("models.csv", content)
        assert info.value.what == "models.csv"
        assert str(info.value).startswith("models.csv: ")

    def test_empty_name_names_the_row(self) -> None:
        """The error for an unnamed row gives its line number (header is line 1)."""
        with pytest.raises(InvalidPayload, match="row 3"):
            parse_models_csv("models.csv", b"name,params\nfoo,3\n,4\n")

    def test_real_models_csv(self) -> None:
        """The real upstream models.csv (CRLF line endings) passes."""
        path = LEGACY_DIR / "models.csv"
        content = path.read_bytes()
        payload = parse_models_csv("models.csv", content)
        assert payload.content == content
        assert payload.records > 700


class TestCheckShrink:
    """`check_shrink` refuses payloads that empty a category or drop too much of it."""

    @pytest.mark.parametrize(
        ("previous", "current", "max_fraction"),
        [
            pytest.param(None, 0, 0.5, id="no-previous-empty"),
            pytest.param(None, 10, 0.5, id="no-previous"),
            pytest.param(0, 0, 0.5, id="previous-zero-empty"),
            pytest.param(0, 5, 0.0, id="previous-zero"),
            pytest.param(10, 10, 0.0, id="unchanged"),
            pytest.param(10, 20, 0.0, id="growth"),
            pytest.param(10, 5, 0.5, id="exactly-half"),
            pytest.param(100, 50, 0.5, id="exactly-half-100"),
            pytest.param(100, 99, 0.01, id="exactly-one-percent"),
            pytest.param(100, 1, 1.0, id="max-fraction-one"),
        ],
    )
    def test_allowed(self, previous: int | None, current: int, max_fraction: float) -> None:
        """No previous count, growth, or a drop up to `max_fraction` inclusive is allowed."""
        check_shrink(WHAT, previous, current, max_fraction)

    @pytest.mark.parametrize(
        ("previous", "current", "max_fraction"),
        [
            pytest.param(100, 49, 0.5, id="51-percent"),
            pytest.param(10, 4, 0.5, id="60-percent"),
            pytest.param(10, 9, 0.0, id="any-drop-with-zero"),
            pytest.param(10, 0, 0.5, id="to-zero"),
            pytest.param(10, 0, 1.0, id="to-zero-max-one"),
            pytest.param(1, 0, 1.0, id="one-to-zero-max-one"),
        ],
    )
    def test_refused(self, previous: int, current: int, max_fraction: float) -> None:
        """A drop beyond `max_fraction`, or to zero records, raises ShrinkRefused."""
        with pytest.raises(ShrinkRefused) as info:
            check_shrink(WHAT, previous, current, max_fraction)
        assert info.value.what == WHAT
        assert isinstance(info.value, InvalidPayload)

    def test_message_mentions_counts(self) -> None:
        """The refusal message gives the dropped and previous counts."""
        with pytest.raises(ShrinkRefused) as info:
            check_shrink(WHAT, 100, 49, 0.5)
        message = str(info.value)
        assert WHAT in message
        assert "51" in message
        assert "100" in message

    def test_empty_message_mentions_previous_count(self) -> None:
        """The refusal to empty a category gives the previous record count."""
        with pytest.raises(ShrinkRefused, match="37") as info:
            check_shrink(WHAT, 37, 0, 1.0)
        assert WHAT in str(info.value)
