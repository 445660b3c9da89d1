"""The sync engine's decision table, in-process over the fakes at its seams (tests/fakes.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from horde_replica_sync.backends.replica import ReplicaDirectoryBackend
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.errors import ErrorKind, SourceName, SourceRejected, SourceUnavailable
from horde_replica_sync.ports import PLAIN, DataKey, Fetched
from horde_replica_sync.publish import ComparingPublisher, StorePublisher
from horde_replica_sync.report import LayerKey, LayerResult, MissReason, Outcome, SyncReport
from horde_replica_sync.state import LastOutcome
from horde_replica_sync.store import ReplicaStore
from horde_replica_sync.sync import SyncEngine
from tests.fakes import (
    FakeClock,
    MemoryPublisher,
    ScriptedGithub,
    ScriptedPrimary,
    body,
    engine_for,
    memory_backend,
)

CATEGORIES = (C.esrgan, C.lora)  # one with both layers, one v2-only
V2, LEGACY = Layer.V2, Layer.LEGACY


def primary_with(stamp: int = 100, *, tag: str = "") -> ScriptedPrimary:
    """A PRIMARY serving esrgan (both layers) and lora, all stamped `stamp`."""
    return ScriptedPrimary(
        stamps=dict.fromkeys(CATEGORIES, stamp),
        v2={C.esrgan: body("a", "b", extra=tag), C.lora: body("l", extra=tag)},
        legacy={C.esrgan: body("a", "b", extra=f"legacy{tag}")},
    )


class Rig:
    """An engine over the fakes, re-run as the daemon would (same cache, same state)."""

    def __init__(
        self,
        tmp_path: Path,
        primary: ScriptedPrimary,
        *,
        github: ScriptedGithub | None = None,
        ttl: int | None = 3600,
        backend_type: type[ReplicaDirectoryBackend] = ReplicaDirectoryBackend,
        run_timeout_seconds: float = 5.0,
        dry_run: bool = False,
    ) -> None:
        self.clock = FakeClock()
        self.primary = primary
        self.publisher = MemoryPublisher()
        self.cache = memory_backend(
            tmp_path, CATEGORIES, self.clock, ttl=ttl, backend_type=backend_type
        )
        self.engine: SyncEngine = engine_for(
            self.cache,
            self.publisher,
            primary=primary,
            github=github,
            clock=self.clock,
            run_timeout_seconds=run_timeout_seconds,
            dry_run=dry_run,
        )

    def run(self, *, force: bool = False) -> SyncReport:
        return asyncio.run(self.engine.run(force=force))

    def move(self, category: C, stamp: int) -> None:
        """The PRIMARY's metadata says `category` changed."""
        assert isinstance(self.primary.stamps, dict)
        self.primary.stamps[category] = stamp


def synced_on_disk(tmp_path: Path) -> tuple[SyncEngine, ReplicaStore]:
    """An engine over a real replica directory, after its first sync."""
    clock = FakeClock()
    store = ReplicaStore(tmp_path / "replica", tmp_path / "state")
    cache = ReplicaDirectoryBackend(
        store, categories=CATEGORIES, cache_ttl_seconds=3600, clock=clock
    )
    engine = engine_for(cache, MemoryPublisher(), primary=primary_with(), clock=clock)
    engine.publisher = StorePublisher(store)
    asyncio.run(engine.run())
    return engine, store


def by_key(report: SyncReport) -> dict[LayerKey, LayerResult]:
    return {(r.category, r.layer): r for r in report.results}


class TestDecisions:
    """Hit or miss, and why, comes from the REPLICA backend's seed API."""

    def test_first_run_is_a_first_load_of_every_layer(self, tmp_path: Path) -> None:
        """Nothing held: every layer misses with `first_load` and is published."""
        rig = Rig(tmp_path, primary_with())
        report = rig.run()
        assert report.ok
        assert {r.miss for r in report.results} == {MissReason.FIRST_LOAD}
        assert {r.outcome for r in report.results} == {Outcome.UPDATED}
        assert sorted(rig.publisher.files) == ["esrgan.json", "legacy/esrgan.json", "lora.json"]
        assert rig.cache.get_statistics()["cache_misses"] == {"esrgan": 1, "lora": 1}

    def test_second_run_is_all_hits_confirmed_by_metadata(self, tmp_path: Path) -> None:
        """Nothing moved: no data request, no write, every layer confirmed now."""
        rig = Rig(tmp_path, primary_with())
        rig.run()
        rig.primary.calls.clear()
        rig.clock.now += 30
        report = rig.run()
        assert report.ok
        assert all(r.cache_hit and r.verified for r in report.results)
        assert rig.primary.data_calls == []
        assert rig.publisher.writes == ["esrgan.json", "legacy/esrgan.json", "lora.json"]
        assert rig.engine.state.layer(C.esrgan, LEGACY).verified_at == rig.clock.now
        assert rig.cache.get_statistics()["cache_hits"] == {"esrgan": 1, "lora": 1}

    def test_moved_category_is_changed_upstream_in_both_layers(self, tmp_path: Path) -> None:
        """A new stamp for esrgan refetches both its layers; lora stays a hit."""
        rig = Rig(tmp_path, primary_with())
        rig.run()
        rig.move(C.esrgan, 200)
        rig.primary.v2[C.esrgan] = body("a", "b", "c")
        results = by_key(rig.run())
        assert results[C.esrgan, V2].miss is MissReason.CHANGED_UPSTREAM
        assert results[C.esrgan, V2].outcome is Outcome.UPDATED
        assert results[C.esrgan, LEGACY].miss is MissReason.CHANGED_UPSTREAM
        assert results[C.esrgan, LEGACY].outcome is Outcome.UNCHANGED  # same bytes
        assert results[C.lora, V2].cache_hit
        assert rig.engine.state.layer(C.esrgan, V2).upstream_last_updated == 200

    def test_ttl_expiry_is_expired(self, tmp_path: Path) -> None:
        """Past the TTL with nothing moved upstream, the layers are re-verified as `expired`."""
        rig = Rig(tmp_path, primary_with(), ttl=100)
        rig.run()
        rig.clock.now += 101
        results = by_key(rig.run())
        assert {r.miss for r in results.values()} == {MissReason.EXPIRED}
        assert {r.outcome for r in results.values()} == {Outcome.UNCHANGED}

    def test_forced_run_misses_everything(self, tmp_path: Path) -> None:
        """SIGUSR1 / --force fetches every layer whatever the cache says, and rewrites nothing."""
        rig = Rig(tmp_path, primary_with())
        rig.run()
        writes = len(rig.publisher.writes)
        report = rig.run(force=True)
        assert {r.miss for r in report.results} == {MissReason.FORCED}
        assert len(rig.publisher.writes) == writes
        assert report.forced

    def test_failure_is_retried_as_failed_last_time(self, tmp_path: Path) -> None:
        """A layer that failed is fetched again next run though nothing moved upstream."""
        primary = primary_with()
        primary.v2[C.lora] = SourceRejected("http://primary.test/v2/lora", "HTTP 418")
        rig = Rig(tmp_path, primary)
        first = by_key(rig.run())
        assert first[C.lora, V2].outcome is Outcome.FAILED
        primary.v2[C.lora] = body("l")
        second = by_key(rig.run())
        assert second[C.lora, V2].miss is MissReason.FAILED_LAST_TIME
        assert second[C.lora, V2].outcome is Outcome.UPDATED
        assert second[C.esrgan, V2].cache_hit

    def test_one_bad_metadata_entry_blinds_only_its_category(self, tmp_path: Path) -> None:
        """esrgan's entry is unusable: the cache TTL decides for esrgan (a hit, unconfirmed);
        lora is still a hit, confirmed by its metadata."""
        rig = Rig(tmp_path, primary_with())
        rig.run()
        rig.primary.unusable = {C.esrgan: "last_updated: Input should be a valid integer"}
        report = rig.run()
        results = by_key(report)
        assert results[C.esrgan, V2].cache_hit and not results[C.esrgan, V2].verified
        assert results[C.lora, V2].cache_hit and results[C.lora, V2].verified
        assert report.metadata_unusable == {
            C.esrgan: "last_updated: Input should be a valid integer"
        }

    def test_rollback_is_followed_and_made_visible(self, tmp_path: Path) -> None:
        """A stamp older than the one held: what the PRIMARY serves is published, and flagged."""
        rig = Rig(tmp_path, primary_with(200))
        rig.run()
        rig.move(C.esrgan, 100)
        rig.primary.v2[C.esrgan] = body("a")  # the older content
        report = rig.run(force=False)
        assert report.rollbacks == {C.esrgan: (200, 100)}
        assert rig.publisher.files["esrgan.json"] == body("a")
        assert rig.engine.state.layer(C.esrgan, V2).rolled_back_from == 200
        assert rig.engine.state.layer(C.esrgan, V2).upstream_last_updated == 100

    def test_edited_file_is_edited_on_disk(self, tmp_path: Path) -> None:
        """With a real store, a published file changed by someone else is repaired."""
        engine, store = synced_on_disk(tmp_path)
        store.write("lora.json", b'{"x": {"name": "x"}}')
        results = by_key(asyncio.run(engine.run()))
        assert results[C.lora, V2].miss is MissReason.EDITED_ON_DISK
        assert results[C.lora, V2].outcome is Outcome.UPDATED
        assert results[C.lora, V2].foreign_files == ("lora.json",)
        assert engine.state.layer(C.lora, V2).foreign_changes == 1
        assert store.read("lora.json") == body("l")

    def test_a_touch_is_not_a_foreign_change(self, tmp_path: Path) -> None:
        """Same bytes with a new mtime: re-verified, but nobody rewrote anything."""
        engine, store = synced_on_disk(tmp_path)
        path = store.path("lora.json")
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
        results = by_key(asyncio.run(engine.run()))
        assert results[C.lora, V2].miss is MissReason.EDITED_ON_DISK
        assert results[C.lora, V2].foreign_files == ()


class TestOverriddenSeedApi:
    """A backend subclass that answers the seed API differently changes what is fetched."""

    def test_should_fetch_data_no_means_nothing_fetched(self, tmp_path: Path) -> None:
        """A backend that never wants lora gets no lora request, even on a first run."""

        class NoLora(ReplicaDirectoryBackend):
            def should_fetch_data(self, category: C) -> bool:
                return category is not C.lora and super().should_fetch_data(category)

        rig = Rig(tmp_path, primary_with(), backend_type=NoLora)
        results = by_key(rig.run())
        assert results[C.lora, V2].cache_hit
        assert "http://primary.test/v2/lora" not in rig.primary.data_calls
        assert "lora.json" not in rig.publisher.files
        assert results[C.esrgan, V2].outcome is Outcome.UPDATED

    def test_should_fetch_data_yes_means_fetched(self, tmp_path: Path) -> None:
        """A backend that always wants esrgan gets it fetched on an all-hit run."""

        class AlwaysEsrgan(ReplicaDirectoryBackend):
            def should_fetch_data(self, category: C) -> bool:
                return category is C.esrgan or super().should_fetch_data(category)

        rig = Rig(tmp_path, primary_with(), backend_type=AlwaysEsrgan)
        rig.run()
        rig.primary.calls.clear()
        results = by_key(rig.run())
        assert rig.primary.data_calls == ["http://primary.test/v2/esrgan"]
        assert results[C.esrgan, V2].miss is MissReason.REJECTED  # held, fresh, yet wanted
        assert results[C.esrgan, LEGACY].cache_hit

    @pytest.mark.parametrize(
        ("refresh", "reason"), [(True, MissReason.STALE), (False, MissReason.REJECTED)]
    )
    def test_needs_refresh_decides_the_miss_reason(
        self, tmp_path: Path, refresh: bool, reason: MissReason
    ) -> None:
        """Data held and fetched again: `needs_refresh` says whether it is a refresh."""

        class Decided(ReplicaDirectoryBackend):
            def should_fetch_data(self, category: C) -> bool:
                return True

            def needs_refresh(self, category: C) -> bool:
                return refresh

        rig = Rig(tmp_path, primary_with(), backend_type=Decided)
        rig.run()
        results = by_key(rig.run())
        assert results[C.lora, V2].miss is reason


class TestCacheAgreesWithState:
    """The cache serves a layer as current exactly when the state says it is (sync.LayerRun)."""

    def test_a_cache_that_lost_its_entries_is_a_disagreement(self, tmp_path: Path) -> None:
        """After a good run they agree; a cache holding nothing the state says is published
        is named, layer by layer."""
        rig = Rig(tmp_path, primary_with())
        report = rig.run()
        assert rig.engine.disagreements(report) == []
        rig.engine.cache = memory_backend(tmp_path, CATEGORIES, rig.clock)
        assert rig.engine.disagreements(report) == [
            (C.esrgan, V2),
            (C.esrgan, LEGACY),
            (C.lora, V2),
        ]

    def test_a_failure_the_cache_still_serves_is_a_disagreement(self, tmp_path: Path) -> None:
        """A state that says failed while the cache still serves the layer as current."""
        rig = Rig(tmp_path, primary_with())
        report = rig.run()
        rig.engine.state.layer(C.lora, V2).last_outcome = LastOutcome.FAILED
        assert rig.engine.disagreements(report) == [(C.lora, V2)]

    def test_every_outcome_leaves_them_agreeing(self, tmp_path: Path) -> None:
        """Published, absent, refused and failed layers, then the hits after them, all agree."""
        primary = primary_with()
        primary.v2[C.lora] = None  # absent
        primary.legacy[C.esrgan] = b"not json"  # refused
        rig = Rig(tmp_path, primary)
        first = rig.run()
        assert {r.outcome for r in first.results} == {
            Outcome.UPDATED,
            Outcome.ABSENT,
            Outcome.REFUSED,
        }
        assert rig.engine.disagreements(first) == []
        primary.v2[C.esrgan] = SourceUnavailable("http://primary.test/v2", "connection refused")
        rig.move(C.esrgan, 200)
        second = rig.run()
        assert by_key(second)[C.esrgan, V2].outcome is Outcome.FAILED
        assert rig.engine.disagreements(second) == []


class TestOutcomes:
    """Absent, refused, failed, timeout and dry run, each with the last good copy kept."""

    def test_404_is_absent_and_verified(self, tmp_path: Path) -> None:
        """The PRIMARY answering 404 for one category means no data there."""
        primary = primary_with()
        primary.v2[C.lora] = None
        report = Rig(tmp_path, primary).run()
        lora = by_key(report)[C.lora, V2]
        assert (lora.outcome, lora.verified, lora.source) == (
            Outcome.ABSENT,
            True,
            SourceName.PRIMARY,
        )

    def test_404_everywhere_without_metadata_is_a_failure(self, tmp_path: Path) -> None:
        """A wrong primary_url (every path 404, metadata too): not absent, failed, not ok."""
        wrong = SourceRejected("http://primary.test/metadata", "unexpected HTTP 404")
        primary = ScriptedPrimary(stamps=wrong)  # and no data scripted: 404 for everything
        report = Rig(tmp_path, primary).run()
        assert not report.ok
        assert {r.outcome for r in report.results} == {Outcome.FAILED}
        assert {r.error_kind for r in report.results} == {ErrorKind.UNPROVEN_ABSENCE}
        assert "primary_url" in (report.results[0].error or "")

    def test_404_where_data_was_keeps_it_and_flags_it(self, tmp_path: Path) -> None:
        """Upstream drops a category we hold: absent, the copy stays, the loss is flagged."""
        rig = Rig(tmp_path, primary_with())
        rig.run()
        rig.move(C.lora, 200)
        rig.primary.v2[C.lora] = None
        lora = by_key(rig.run())[C.lora, V2]
        assert lora.outcome is Outcome.ABSENT and lora.error_kind is ErrorKind.VANISHED
        assert rig.publisher.files["lora.json"] == body("l")

    def test_invalid_body_is_refused_and_keeps_the_copy(self, tmp_path: Path) -> None:
        """A body that is not a records object is refused, naming category and URL."""
        rig = Rig(tmp_path, primary_with())
        rig.run()
        rig.move(C.lora, 200)
        rig.primary.v2[C.lora] = b"[1, 2]"
        report = rig.run()
        lora = by_key(report)[C.lora, V2]
        assert lora.outcome is Outcome.REFUSED and not report.ok
        assert lora.error_kind is ErrorKind.INVALID and lora.error_source is SourceName.PRIMARY
        assert "lora" in (lora.error or "") and "http://primary.test/v2/lora" in (lora.error or "")
        assert rig.publisher.files["lora.json"] == body("l")

    def test_shrink_is_refused(self, tmp_path: Path) -> None:
        """Losing most records is refused by the shrink guard."""
        rig = Rig(tmp_path, primary_with())
        rig.run(force=True)
        rig.primary.v2[C.esrgan] = body("a", "b", "c", "d")
        rig.run(force=True)
        rig.primary.v2[C.esrgan] = body("a")
        esrgan = by_key(rig.run(force=True))[C.esrgan, V2]
        assert (esrgan.outcome, esrgan.error_kind) == (Outcome.REFUSED, ErrorKind.SHRINK)

    def test_primary_down_is_failed_and_the_run_not_ok(self, tmp_path: Path) -> None:
        """No fallback: unreachable metadata fails the run; cached layers are unconfirmed."""
        rig = Rig(tmp_path, primary_with())
        rig.run()
        down = SourceUnavailable(
            "http://primary.test/metadata", "refused", kind=ErrorKind.CONNECTION
        )
        rig.primary.stamps = down
        report = rig.run()
        assert not report.ok and report.primary_error_kind is ErrorKind.CONNECTION
        assert all(r.cache_hit and not r.verified for r in report.results)

    def test_primary_down_falls_back_to_github_once_per_file(self, tmp_path: Path) -> None:
        """esrgan's GitHub file is downloaded once for both layers; lora has no GitHub copy."""
        down = SourceUnavailable(
            "http://primary.test/metadata", "refused", kind=ErrorKind.CONNECTION
        )
        primary = ScriptedPrimary(stamps=down)
        github = ScriptedGithub(files={"esrgan.json": _legacy_esrgan()})
        rig = Rig(tmp_path, primary, github=github)
        results = by_key(rig.run())
        assert github.calls == ["esrgan.json"]
        assert primary.data_calls == []  # seen down at the metadata: never asked again
        assert results[C.esrgan, V2].source is SourceName.GITHUB
        assert results[C.esrgan, V2].outcome is Outcome.UPDATED
        assert results[C.esrgan, LEGACY].outcome is Outcome.UPDATED
        assert results[C.lora, V2].outcome is Outcome.FAILED

    def test_run_timeout_fails_what_is_pending(self, tmp_path: Path) -> None:
        """A category that does not answer within the run timeout fails as run_timeout."""

        class Hanging(ScriptedPrimary):
            async def fetch_v2(self, category: C, key: DataKey = PLAIN) -> Fetched | None:
                if category is C.lora:
                    await asyncio.sleep(60)
                return await super().fetch_v2(category, key)

        primary = Hanging(**vars(primary_with()))
        report = Rig(tmp_path, primary, run_timeout_seconds=0.2).run()
        results = by_key(report)
        assert results[C.lora, V2].error_kind is ErrorKind.RUN_TIMEOUT
        assert results[C.esrgan, V2].outcome is Outcome.UPDATED
        assert not report.ok

    def test_dry_run_compares_and_writes_nothing(self, tmp_path: Path) -> None:
        """A dry run's publisher says what would change and writes neither data nor state."""
        store = ReplicaStore(tmp_path / "replica", tmp_path / "state")
        store.write("lora.json", body("l"))
        rig = Rig(tmp_path, primary_with(), dry_run=True)
        rig.engine.publisher = ComparingPublisher(store)
        results = by_key(rig.run())
        assert results[C.esrgan, V2].outcome is Outcome.UPDATED
        assert results[C.lora, V2].outcome is Outcome.UNCHANGED  # same bytes already there
        assert sorted(p.name for p in store.replica_dir.rglob("*")) == ["lora.json"]
        assert not store.state_path.exists()

    def test_state_that_cannot_be_saved_fails_the_run(self, tmp_path: Path) -> None:
        """The data is published; the run is not ok and says why."""
        rig = Rig(tmp_path, primary_with())
        rig.publisher.fail_state = True
        report = rig.run()
        assert not report.ok and "No space left" in (report.state_error or "")
        assert "lora.json" in rig.publisher.files


def _legacy_esrgan() -> bytes:
    """A convertible legacy esrgan file (the shape GitHub serves)."""
    return (
        b'{"RealESRGAN_x4plus": {"name": "RealESRGAN_x4plus", "type": "esrgan",'
        b' "description": "x4", "version": "1", "style": "generalist", "nsfw": false,'
        b' "download_all": false, "available": true, "config": {"files": [{"path":'
        b' "RealESRGAN_x4plus.pth", "sha256sum": "' + b"0" * 64 + b'"}], "download":'
        b' [{"file_name": "RealESRGAN_x4plus.pth", "file_path": "", "file_url":'
        b' "https://example.test/RealESRGAN_x4plus.pth"}]}}}'
    )


class TestUnusableMetadata:
    """The whole metadata unusable: every category counted, the outage logged once."""

    def test_every_category_is_counted_and_the_outage_logged_once(self, tmp_path: Path) -> None:
        import structlog.testing

        from horde_replica_sync.logs import RunLog

        rig = Rig(tmp_path, primary_with())
        rig.run()
        broken = SourceRejected(
            "http://primary.test/v2/metadata/metadata", "malformed metadata", kind=ErrorKind.INVALID
        )
        rig.primary.stamps = broken
        runlog = RunLog()
        with structlog.testing.capture_logs() as events:
            reports = [rig.run(), rig.run()]
            for report in reports:
                runlog.report(report)
        for report in reports:
            assert set(report.metadata_unusable) == set(CATEGORIES)
            assert "malformed metadata" in report.metadata_unusable[C.lora]
            assert all(r.cache_hit and not r.verified for r in report.results)  # TTL fallback
        outages = [e for e in events if e["event"] == "sync.outage"]
        assert len(outages) == 1
        assert outages[0]["down"] == ["primary: invalid"]
        assert not [e for e in events if e["event"] == "sync.metadata_unusable"]
