"""Content-keyed data requests and the rule that no body older than its metadata is recorded.

In process, over the fakes: what the engine asks for (stamp, past caches or not) and what it
records. The same rule against real sockets is in tests/faults/test_content_keys.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.ports import Operation
from horde_replica_sync.report import Outcome
from horde_replica_sync.state import LastOutcome
from horde_replica_sync.store import sha256_hex
from tests.engine.test_engine import CATEGORIES, Rig, by_key, primary_with
from tests.fakes import Script, ScriptedPrimary, body

V2, LEGACY = Layer.V2, Layer.LEGACY


def stamped(updated_at: dict[str, int]) -> bytes:
    """A v2 body whose records carry `metadata.updated_at`, as the PRIMARY's do."""
    records = {
        name: {
            "name": name,
            "metadata": {"schema_version": "2.1.0", "created_at": 1, "updated_at": at},
            "config": {"download": [{"file_name": f"{name}.pth", "file_url": "https://f.test/x"}]},
        }
        for name, at in updated_at.items()
    }
    return json.dumps(records).encode()


def synced_at(tmp_path: Path, stamp: int) -> tuple[Rig, ScriptedPrimary]:
    """A rig whose replica holds esrgan at `stamp` (v2 records updated then)."""
    primary = primary_with(stamp)
    primary.v2[C.esrgan] = stamped({"a": stamp, "b": stamp})
    rig = Rig(tmp_path, primary)
    assert rig.run().ok
    primary.keys.clear()
    return rig, primary


class TestContentKeys:
    def test_data_requests_carry_the_stamp_they_must_match(self, tmp_path: Path) -> None:
        """Every data request names the metadata stamp that caused it; none goes past caches."""
        rig, primary = synced_at(tmp_path, 100)
        rig.move(C.esrgan, 200)
        primary.v2[C.esrgan] = stamped({"a": 100, "b": 200})
        assert rig.run().ok
        assert primary.keys == [
            ("http://primary.test/v2/esrgan", 200, False),
            ("http://primary.test/v1/esrgan", 200, False),
        ]

    def test_a_forced_run_goes_past_every_cache(self, tmp_path: Path) -> None:
        rig, primary = synced_at(tmp_path, 100)
        assert rig.run(force=True).ok
        assert {fresh for _, _, fresh in primary.keys} == {True}
        assert len(primary.keys) == len(CATEGORIES) + 1  # esrgan has two layers


class TestNeverOlderThanMetadata:
    def test_an_older_answer_is_asked_again_past_the_caches(self, tmp_path: Path) -> None:
        """A cache answers the new stamp with the old body: it is refetched, never recorded."""
        rig, primary = synced_at(tmp_path, 100)
        old_body = rig.publisher.files["esrgan.json"]
        new_body = stamped({"a": 100, "b": 200})
        rig.move(C.esrgan, 200)
        primary.v2[C.esrgan] = [old_body, new_body]
        report = rig.run()
        results = by_key(report)
        assert report.ok
        assert [k for k in primary.keys if "v2/esrgan" in k[0]] == [
            ("http://primary.test/v2/esrgan", 200, False),
            ("http://primary.test/v2/esrgan", 200, True),
        ]
        assert ("http://primary.test/v1/esrgan", 200, True) in primary.keys  # the rest too
        assert rig.publisher.files["esrgan.json"] == new_body
        state = rig.engine.state.layer(C.esrgan, V2)
        assert (state.upstream_last_updated, state.files["esrgan.json"].sha256) == (
            200,
            sha256_hex(new_body),
        )
        assert results[C.esrgan, V2].outcome is Outcome.UPDATED
        assert "last_updated=200" in (results[C.esrgan, V2].older_answer or "")
        assert results[C.lora, V2].older_answer is None

    def test_a_delete_explains_a_body_with_no_newer_record(self, tmp_path: Path) -> None:
        """A delete moves the stamp and no record gets newer: that body is new enough."""
        rig, primary = synced_at(tmp_path, 100)
        rig.move(C.esrgan, 200)
        primary.operations[C.esrgan] = Operation("delete", "b")
        primary.v2[C.esrgan] = stamped({"a": 100})
        report = rig.run()
        assert report.ok
        assert [fresh for url, _, fresh in primary.keys if "v2/esrgan" in url] == [False]
        assert by_key(report)[C.esrgan, V2].older_answer is None

    def test_a_delete_that_did_not_happen_is_no_excuse(self, tmp_path: Path) -> None:
        """The metadata announces a delete of b, but the answer still holds b: older."""
        rig, primary = synced_at(tmp_path, 100)
        rig.move(C.esrgan, 200)
        primary.operations[C.esrgan] = Operation("delete", "b")
        primary.v2[C.esrgan] = [stamped({"a": 100, "b": 100}), stamped({"a": 100})]
        assert rig.run().ok
        assert [fresh for url, _, fresh in primary.keys if "v2/esrgan" in url] == [False, True]
        assert b'"b"' not in rig.publisher.files["esrgan.json"]

    def test_a_changed_body_without_timestamps_is_taken_as_it_is(self, tmp_path: Path) -> None:
        """Records with no `updated_at` cannot tell: changed bytes and the key are all there is
        (the same bytes under a new stamp never are: tests/engine/test_stamp_evidence.py)."""
        rig = Rig(tmp_path, primary_with(100))
        assert rig.run().ok
        rig.move(C.esrgan, 200)
        rig.primary.v2[C.esrgan] = body("a", "b", extra="written")
        rig.primary.keys.clear()
        assert rig.run().ok
        assert [fresh for _, _, fresh in rig.primary.keys] == [False, False]
        assert rig.engine.state.layer(C.esrgan, V2).upstream_last_updated == 200

    def test_the_primary_itself_older_is_unproven_once_then_taken(self, tmp_path: Path) -> None:
        """Past every cache the answer is still older: the PRIMARY's own (it may announce a
        stamp before writing the data). Published, but the stamp is not recorded and the
        layers are not confirmed; the next run, finding the same, takes it and says so."""
        rig, primary = synced_at(tmp_path, 100)
        rig.move(C.esrgan, 200)
        lagging = stamped({"a": 100, "b": 150})
        primary.v2[C.esrgan] = lagging
        first = rig.run()
        results = by_key(first)
        assert first.ok  # the replica holds what the PRIMARY serves
        assert [fresh for url, _, fresh in primary.keys if "v2/esrgan" in url] == [False, True]
        for layer in (V2, LEGACY):
            assert not results[C.esrgan, layer].verified
            assert rig.engine.state.layer(C.esrgan, layer).upstream_last_updated == 100
        assert "until a body shows it" in (results[C.esrgan, V2].older_answer or "")
        assert rig.publisher.files["esrgan.json"] == lagging
        primary.keys.clear()
        second = by_key(rig.run())
        assert second[C.esrgan, V2].verified and second[C.esrgan, LEGACY].verified
        assert "two runs in a row: taken" in (second[C.esrgan, V2].older_answer or "")
        v2 = rig.engine.state.layer(C.esrgan, V2)
        assert (v2.upstream_last_updated, v2.unproven_stamp) == (200, None)
        assert rig.engine.state.layer(C.esrgan, LEGACY).upstream_last_updated == 200

    def test_a_body_that_shows_the_stamp_next_run_is_simply_recorded(self, tmp_path: Path) -> None:
        """The PRIMARY's data lands after its metadata: unproven once, then the new body."""
        rig, primary = synced_at(tmp_path, 100)
        rig.move(C.esrgan, 200)
        landed = stamped({"a": 200, "b": 100})
        older = stamped({"a": 100, "b": 100})
        answers: list[Script] = [older, older, landed]
        primary.v2[C.esrgan] = answers  # older twice (cache, then PRIMARY), then landed
        assert not by_key(rig.run())[C.esrgan, V2].verified
        result = by_key(rig.run())[C.esrgan, V2]
        assert (result.outcome, result.verified, result.older_answer) == (
            Outcome.UPDATED,
            True,
            None,
        )
        assert rig.publisher.files["esrgan.json"] == landed

    def test_a_stamp_moving_every_run_over_the_same_bytes_is_never_recorded(
        self, tmp_path: Path
    ) -> None:
        """A stamp that moves each run while the body stays the one held: never recorded
        (it used to be every second run), and counted until /readyz fails on it."""
        rig, primary = synced_at(tmp_path, 100)
        primary.v2[C.esrgan] = stamped({"a": 100, "b": 100})
        verified = []
        for stamp in (200, 300, 400, 500):
            rig.move(C.esrgan, stamp)
            verified.append(by_key(rig.run())[C.esrgan, V2].verified)
        assert verified == [False, False, False, False]
        v2 = rig.engine.state.layer(C.esrgan, V2)
        assert (v2.upstream_last_updated, v2.unshown_runs) == (100, 4)


class TestLegacyKey:
    def test_the_legacy_request_names_the_v2_body_it_goes_with(self, tmp_path: Path) -> None:
        """`v2=` is the digest of the v2 body fetched this run, else of the one held."""
        rig, primary = synced_at(tmp_path, 100)
        rig.move(C.esrgan, 200)
        new_v2 = stamped({"a": 200, "b": 200})
        primary.v2[C.esrgan] = new_v2
        assert rig.run().ok
        assert primary.companions[-1] == sha256_hex(new_v2)[:16]
        assert primary.companions[0] is None  # the v2 request itself has none
        primary.companions.clear()
        legacy = rig.engine.state.layer(C.esrgan, LEGACY)
        legacy.last_outcome = LastOutcome.FAILED  # legacy alone misses
        rig.cache.invalidate(C.esrgan, LEGACY)
        assert rig.run().ok
        assert primary.companions == [sha256_hex(new_v2)[:16]]
