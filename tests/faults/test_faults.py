"""Faults from a real HTTP server on 127.0.0.1: the replica stays valid, the state says why."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.errors import ErrorKind, SourceName
from horde_replica_sync.report import Outcome, SyncReport
from horde_replica_sync.state import ReplicaState
from tests.environment import free_port
from tests.faults.conftest import SyncFn
from tests.faultserver import (
    FaultServer,
    Reply,
    github_path,
    metadata,
    records,
    script_github,
    script_primary,
    v1_path,
    v2_path,
)

StateOf = Callable[[], ReplicaState]
ONE = "esrgan"  # the category most tests break


def outcome(report: SyncReport, category: C, layer: Layer = Layer.V2) -> Outcome:
    """The outcome of one layer in `report`."""
    (result,) = [r for r in report.results if r.category is category and r.layer is layer]
    return result.outcome


def error(report: SyncReport, category: C, layer: Layer = Layer.V2) -> str:
    """The error of one layer in `report`."""
    (result,) = [r for r in report.results if r.category is category and r.layer is layer]
    assert result.error is not None
    return result.error


def snapshot(replica: Path) -> dict[str, tuple[bytes, int]]:
    """Every data file's bytes and mtime (state and lock excluded)."""
    return {
        str(p.relative_to(replica)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(replica.rglob("*.json")) + sorted(replica.rglob("*.csv"))
        if ".horde-replica-sync" not in p.parts
    }


@pytest.fixture(name="seeded")
async def _seeded(server: FaultServer, sync: SyncFn, replica: Path) -> dict[str, tuple[bytes, int]]:
    """A healthy PRIMARY and a replica synced from it once."""
    script_primary(server)
    report = await sync(categories=ONE)
    assert report.ok, report.failed
    return snapshot(replica)


class TestPrimaryFaults:
    """Each PRIMARY fault leaves the last good copy in place and explains itself."""

    @pytest.mark.parametrize(
        ("replies", "expected_outcome", "reason"),
        [
            ((Reply(200, b'{"a": {"name": '),), Outcome.REFUSED, "not valid JSON"),
            ((Reply(200, b'[{"name": "x"}]'),), Outcome.REFUSED, "not an object"),
            ((Reply(200, b'{"x": {"nome": "x"}}'),), Outcome.REFUSED, "x: no name"),
            ((Reply(200, b"\xff\xfe{}"),), Outcome.REFUSED, "not UTF-8"),
            ((Reply(200, b"{}"),), Outcome.REFUSED, "would empty the category"),
            ((Reply(200, b"[" * 100_000),), Outcome.REFUSED, "JSON"),
            ((Reply(200, records(C.esrgan, 400), truncate_to=100),), Outcome.FAILED, "connection"),
            ((Reply(reset=True),), Outcome.FAILED, "connection"),
            ((Reply(500),), Outcome.FAILED, "HTTP 500"),
            ((Reply(422, b'{"detail": []}'),), Outcome.FAILED, "does not know category 'esrgan'"),
            ((Reply(307, headers={"Location": "/elsewhere"}),), Outcome.FAILED, "redirect"),
            ((Reply(200, b"{}", delay=1.5),), Outcome.FAILED, "timed out"),
        ],
        ids=[
            "invalid-json",
            "wrong-shape",
            "record-without-name",
            "not-utf8",
            "empty-over-nonempty",
            "deeply-nested",
            "truncated-body",
            "connection-reset",
            "http-500",
            "http-422",
            "redirect",
            "slower-than-timeout",
        ],
    )
    async def test_fault_keeps_last_good_copy(
        self,
        seeded: dict[str, tuple[bytes, int]],
        server: FaultServer,
        sync: SyncFn,
        replica: Path,
        state_of: StateOf,
        replies: tuple[Reply, ...],
        expected_outcome: Outcome,
        reason: str,
    ) -> None:
        """The v2 file keeps its bytes and mtime; the report and the state name the reason."""
        server.script(v2_path(C.esrgan), *replies)
        report = await sync(
            categories=ONE, force=True, request_timeout_seconds=0.5, retry_attempts=1
        )
        assert outcome(report, C.esrgan) is expected_outcome
        assert reason in error(report, C.esrgan)
        assert v2_path(C.esrgan) in error(report, C.esrgan) or "esrgan" in error(report, C.esrgan)
        assert snapshot(replica) == seeded
        layer = state_of().layer(C.esrgan, Layer.V2)
        assert layer.last_outcome == expected_outcome.value
        assert layer.last_error is not None and reason in layer.last_error
        assert not list(replica.rglob("*.hrs-tmp"))

    async def test_fault_clears_on_next_run(
        self,
        seeded: dict[str, tuple[bytes, int]],
        server: FaultServer,
        sync: SyncFn,
        state_of: StateOf,
    ) -> None:
        """Once the fault is gone, the next run succeeds and clears the recorded error."""
        server.script(v2_path(C.esrgan), Reply(200, b"nope"))
        assert not (await sync(categories=ONE, force=True)).ok
        server.script(v2_path(C.esrgan), Reply(body=records(C.esrgan, 5, tag="b")))
        report = await sync(categories=ONE)
        assert outcome(report, C.esrgan) is Outcome.UPDATED
        assert state_of().layer(C.esrgan, Layer.V2).last_error is None

    async def test_500_then_success_is_retried(
        self, seeded: dict[str, tuple[bytes, int]], server: FaultServer, sync: SyncFn, replica: Path
    ) -> None:
        """Two 500s then a 200 within the retry budget publish the new data."""
        body = records(C.esrgan, 5, tag="new")
        server.script(v2_path(C.esrgan), Reply(500), Reply(503), Reply(body=body))
        report = await sync(categories=ONE, force=True)
        assert outcome(report, C.esrgan) is Outcome.UPDATED
        assert server.count(v2_path(C.esrgan)) == 1 + 3  # seeding run + three attempts
        assert (replica / "esrgan.json").read_bytes() == body

    async def test_429_retry_after_is_honoured(
        self, seeded: dict[str, tuple[bytes, int]], server: FaultServer, sync: SyncFn
    ) -> None:
        """A short Retry-After is waited out and retried; a long one is not hammered."""
        body = records(C.esrgan, 5, tag="new")
        server.script(v2_path(C.esrgan), Reply(429, headers={"Retry-After": "0"}), Reply(body=body))
        report = await sync(categories=ONE, force=True)
        assert outcome(report, C.esrgan) is Outcome.UPDATED
        server.script(v2_path(C.esrgan), Reply(429, headers={"Retry-After": "3600"}))
        before = server.count(v2_path(C.esrgan))
        report = await sync(categories=ONE, force=True)
        assert outcome(report, C.esrgan) is Outcome.FAILED
        assert "HTTP 429" in error(report, C.esrgan)
        assert server.count(v2_path(C.esrgan)) == before + 1

    async def test_oversize_body_is_refused_while_streaming(
        self, seeded: dict[str, tuple[bytes, int]], server: FaultServer, sync: SyncFn, replica: Path
    ) -> None:
        """A body over the cap is abandoned with a message naming the cap."""
        server.script(v2_path(C.esrgan), Reply(body=records(C.esrgan, 2000)))
        report = await sync(categories=ONE, force=True, max_body_bytes=4096)
        assert outcome(report, C.esrgan) is Outcome.FAILED
        assert "4096-byte cap" in error(report, C.esrgan)
        assert snapshot(replica) == seeded

    async def test_404_is_absent_and_keeps_the_file(
        self, seeded: dict[str, tuple[bytes, int]], server: FaultServer, sync: SyncFn, replica: Path
    ) -> None:
        """A 404 means "no data there": nothing is published or deleted, and it is not an error."""
        server.script(v2_path(C.esrgan), Reply(404, b'{"detail": "not found"}'))
        report = await sync(categories=ONE, force=True)
        assert outcome(report, C.esrgan) is Outcome.ABSENT
        assert report.ok
        assert snapshot(replica) == seeded

    async def test_shrink_guard_can_be_overridden(
        self, seeded: dict[str, tuple[bytes, int]], server: FaultServer, sync: SyncFn, replica: Path
    ) -> None:
        """A 75% drop is refused, then published when the operator allows shrinking."""
        server.script(v2_path(C.esrgan), Reply(body=records(C.esrgan, 1)))
        assert outcome(await sync(categories=ONE, force=True), C.esrgan) is Outcome.REFUSED
        report = await sync(categories=ONE, force=True, allow_shrink=True)
        assert outcome(report, C.esrgan) is Outcome.UPDATED
        assert len(json.loads((replica / "esrgan.json").read_bytes())) == 1

    async def test_gutted_records_are_refused(
        self,
        seeded: dict[str, tuple[bytes, int]],
        server: FaultServer,
        sync: SyncFn,
        replica: Path,
        state_of: StateOf,
    ) -> None:
        """Every name kept, every other field dropped: refused (the shrink guard's override
        does not help), the records named, the last good copy kept (issue 11 #3)."""
        good = json.loads(records(C.esrgan, 4))
        gutted = {key: {"name": record["name"]} for key, record in good.items()}
        server.script(v2_path(C.esrgan), Reply(body=json.dumps(gutted).encode()))
        report = await sync(categories=ONE, force=True, allow_shrink=True)
        assert outcome(report, C.esrgan) is Outcome.REFUSED
        reason = error(report, C.esrgan)
        assert "4 of 4 records unusable by upstream's readers: esrgan-0: no config;" in reason
        assert "esrgan-2: no config (first 3)" in reason
        assert snapshot(replica) == seeded
        last_error = state_of().layer(C.esrgan, Layer.V2).last_error
        assert last_error is not None and "records unusable" in last_error


class TestAbsenceMustBeProved:
    """A 404 means "no data" only from a server that shows it is a PRIMARY."""

    async def test_404_to_everything_is_a_failure(self, server: FaultServer, sync: SyncFn) -> None:
        """A typo in primary_url (every path 404): failed, not ok, the replica never "ready"."""
        report = await sync(categories="esrgan,lora", github_fallback=False)  # nothing scripted
        assert not report.ok
        assert {r.error_kind for r in report.results} == {ErrorKind.UNPROVEN_ABSENCE}
        assert all(not r.verified for r in report.results)

    async def test_404_beside_usable_metadata_is_absent(
        self, server: FaultServer, sync: SyncFn
    ) -> None:
        """The real PRIMARY answers 404 for an empty category while its metadata is fine."""
        script_primary(server)
        server.script(v2_path(C.lora), Reply(404, b'{"detail":"not found or is empty"}'))
        report = await sync(categories="esrgan,lora", github_fallback=False)
        assert report.ok
        assert outcome(report, C.lora) is Outcome.ABSENT


class TestRollback:
    """A last_updated that goes back in time is followed, logged, counted and shown."""

    async def test_rollback_is_recorded(
        self, server: FaultServer, sync: SyncFn, state_of: StateOf
    ) -> None:
        """The older data is published (the PRIMARY is authoritative); report and state say so."""
        script_primary(server, stamp=2000, tag="new")
        await sync(categories=ONE)
        script_primary(server, stamp=1000, tag="old")
        report = await sync(categories=ONE, allow_shrink=True)
        assert report.rollbacks == {C.esrgan: (2000, 1000)}
        assert outcome(report, C.esrgan) is Outcome.UPDATED
        layer = state_of().layer(C.esrgan, Layer.V2)
        assert (layer.rolled_back_from, layer.upstream_last_updated) == (2000, 1000)


class TestDeadlines:
    """No server, however slow, holds a run past its deadline."""

    async def test_dripped_metadata_cannot_hold_the_run(
        self, server: FaultServer, sync: SyncFn
    ) -> None:
        """Metadata sent a byte every 0.5 s: the run ends at its timeout, failed and counted."""
        script_primary(server)
        for family in ("v1", "v2"):
            server.script(
                f"/api/model_references/{family}/metadata/metadata",
                Reply(body=metadata(1000), drip=0.5),
            )
        started = time.monotonic()
        report = await sync(categories=ONE, run_timeout_seconds=2, github_fallback=False)
        assert time.monotonic() - started < 6
        assert not report.ok
        assert report.primary_error_kind is ErrorKind.RUN_TIMEOUT
        assert "run timeout" in (report.primary_error or "")

    async def test_dripped_body_meets_the_request_deadline(
        self, server: FaultServer, sync: SyncFn
    ) -> None:
        """A v2 body dripped slowly fails its layer at the request deadline, per attempt."""
        script_primary(server)
        server.script(v2_path(C.esrgan), Reply(body=records(C.esrgan, 4), drip=0.2))
        started = time.monotonic()
        report = await sync(
            categories=ONE, request_deadline_seconds=0.5, retry_attempts=1, github_fallback=False
        )
        assert time.monotonic() - started < 5
        esrgan = next(r for r in report.results if r.layer is Layer.V2)
        assert esrgan.outcome is Outcome.FAILED and esrgan.error_kind is ErrorKind.TIMEOUT
        assert "request deadline" in (esrgan.error or "")


class TestChangeDetection:
    """Metadata drives what is fetched; nothing else is downloaded."""

    async def test_no_change_run_costs_two_requests(
        self, seeded: dict[str, tuple[bytes, int]], server: FaultServer, sync: SyncFn, replica: Path
    ) -> None:
        """With metadata unchanged, a run asks for metadata only and writes nothing."""
        before = server.count()
        report = await sync(categories=ONE)
        assert server.count() - before == 2
        assert all(r.cache_hit for r in report.results)
        assert snapshot(replica) == seeded

    async def test_one_broken_endpoint_fails_only_its_category(
        self, server: FaultServer, sync: SyncFn
    ) -> None:
        """A wrong Content-Length on v2/blip fails blip; every other layer still comes from the
        PRIMARY, which is not declared down for the run."""
        script_primary(server)
        server.script(v2_path(C.blip), Reply(200, records(C.blip, 400), truncate_to=100))
        report = await sync(categories="blip,clip,esrgan,gfpgan", github_fallback=False)
        failed = {(r.category, r.layer) for r in report.failed}
        assert failed == {(C.blip, Layer.V2)}
        assert report.primary_error is None
        others = [r for r in report.results if (r.category, r.layer) != (C.blip, Layer.V2)]
        assert {(r.outcome, r.source) for r in others} == {(Outcome.UPDATED, SourceName.PRIMARY)}

    async def test_connection_failures_on_two_categories_are_the_server(
        self, server: FaultServer, sync: SyncFn
    ) -> None:
        """Resets on two categories' endpoints mark the PRIMARY down: the rest is skipped."""
        script_primary(server)
        for category in (C.blip, C.clip):
            server.script(v2_path(category), Reply(reset=True))
        report = await sync(categories="blip,clip,esrgan", github_fallback=False, max_concurrency=1)
        assert report.primary_error is not None
        esrgan = next(r for r in report.results if r.category is C.esrgan)
        assert esrgan.outcome is Outcome.FAILED and "skipped" in (esrgan.error or "")

    async def test_one_bad_stamp_blinds_only_its_category(
        self, server: FaultServer, sync: SyncFn
    ) -> None:
        """esrgan's last_updated as a string (in both families) does not hide blip's move."""
        script_primary(server)
        await sync(categories="esrgan,blip")
        moved = json.loads(metadata(2000))
        moved["esrgan"]["last_updated"] = "2000"
        for family in ("v1", "v2"):
            server.script(
                f"/api/model_references/{family}/metadata/metadata",
                Reply(body=json.dumps(moved).encode()),
            )
        server.script(v2_path(C.blip), Reply(body=records(C.blip, 4, tag="moved")))
        report = await sync(categories="esrgan,blip")
        assert outcome(report, C.blip) is Outcome.UPDATED
        assert set(report.metadata_unusable) == {C.esrgan}
        assert "metadata" in report.metadata_unusable[C.esrgan]
        esrgan = next(r for r in report.results if r.category is C.esrgan)
        assert esrgan.cache_hit and not esrgan.verified  # the cache TTL decides for it

    async def test_moved_metadata_refetches_only_that_category(
        self, server: FaultServer, sync: SyncFn, replica: Path
    ) -> None:
        """A newer last_updated for one category refetches it and only it."""
        script_primary(server)
        await sync(categories="esrgan,blip")
        moved = json.loads(metadata(1000))
        moved["esrgan"]["last_updated"] = 2000
        server.script(
            "/api/model_references/v1/metadata/metadata", Reply(body=json.dumps(moved).encode())
        )
        server.script(v2_path(C.esrgan), Reply(body=records(C.esrgan, 4, tag="b")))
        before = {p: server.count(p) for p in (v2_path(C.esrgan), v2_path(C.blip))}
        report = await sync(categories="esrgan,blip")
        assert outcome(report, C.esrgan) is Outcome.UPDATED
        assert outcome(report, C.esrgan, Layer.LEGACY) is Outcome.UNCHANGED
        assert server.count(v2_path(C.esrgan)) == before[v2_path(C.esrgan)] + 1
        assert server.count(v2_path(C.blip)) == before[v2_path(C.blip)]

    async def test_hand_edited_file_is_repaired(
        self, seeded: dict[str, tuple[bytes, int]], sync: SyncFn, replica: Path
    ) -> None:
        """A file edited while the daemon was down differs from the state and is re-fetched."""
        (replica / "esrgan.json").write_text("{}")
        report = await sync(categories=ONE)
        assert outcome(report, C.esrgan) is Outcome.UPDATED
        assert (replica / "esrgan.json").read_bytes() == seeded["esrgan.json"][0]


class TestGithubFallback:
    """GitHub serves the legacy layer only when the PRIMARY is unavailable."""

    async def test_primary_down_falls_back_to_github(
        self,
        server: FaultServer,
        sync: SyncFn,
        replica: Path,
        shared_dir: Path,
        state_of: StateOf,
    ) -> None:
        """With nothing listening at the PRIMARY, legacy files come from GitHub byte for byte."""
        legacy = shared_dir / "reference-data" / "legacy"
        script_github(server, legacy)
        dead = f"http://127.0.0.1:{free_port()}/api"
        report = await sync(primary_url=dead, categories="esrgan,text_generation,lora")
        assert report.primary_error is not None
        for category in (C.esrgan, C.text_generation):
            for layer in (Layer.V2, Layer.LEGACY):  # v2 converted from the legacy files
                assert outcome(report, category, layer) is Outcome.UPDATED
                assert state_of().layer(category, layer).source == "github"
        # Each legacy file was downloaded once although two layers needed it.
        assert server.count(github_path(C.text_generation, "models.csv")) == 1
        assert (replica / "legacy" / "esrgan.json").read_bytes() == (
            legacy / "esrgan.json"
        ).read_bytes()
        assert (replica / "legacy" / "models.csv").read_bytes() == (
            legacy / "models.csv"
        ).read_bytes()
        assert (replica / "legacy" / "db.json").read_bytes() == (legacy / "db.json").read_bytes()
        assert outcome(report, C.lora) is Outcome.FAILED  # no GitHub source at all
        assert "127.0.0.1" in error(report, C.lora)

    async def test_github_304_downloads_nothing(
        self, server: FaultServer, sync: SyncFn, replica: Path, shared_dir: Path
    ) -> None:
        """A forced re-check sends If-None-Match; a 304 downloads and rewrites nothing."""
        script_github(server, shared_dir / "reference-data" / "legacy")
        await sync(use_primary=False, categories="esrgan,text_generation")
        before = snapshot(replica)
        report = await sync(use_primary=False, categories="esrgan,text_generation", force=True)
        legacy = [r for r in report.results if r.layer is Layer.LEGACY]
        assert {r.outcome for r in legacy} == {Outcome.UNCHANGED}
        assert sum(r.bytes_downloaded for r in legacy) == 0
        assert all("if-none-match" in r.headers for r in server.requests[-3:])
        assert snapshot(replica) == before

    async def test_primary_404_never_falls_back(
        self, server: FaultServer, sync: SyncFn, shared_dir: Path
    ) -> None:
        """A PRIMARY that answers 404 is authoritative: GitHub is not asked."""
        script_primary(server)
        script_github(server, shared_dir / "reference-data" / "legacy")
        server.script(v1_path(C.esrgan), Reply(404))
        report = await sync(categories=ONE)
        assert outcome(report, C.esrgan, Layer.LEGACY) is Outcome.ABSENT
        assert server.count(github_path(C.esrgan, "esrgan.json")) == 0

    async def test_github_rate_limit_starts_a_cooldown(
        self, server: FaultServer, sync: SyncFn, replica: Path
    ) -> None:
        """A 429 with Retry-After is not retried, and the other files are not requested either."""
        limited = Reply(429, headers={"Retry-After": "120"})
        server.script(github_path(C.text_generation, "models.csv"), limited)
        server.script(github_path(C.text_generation, "db.json"), limited)
        report = await sync(use_primary=False, categories="text_generation")
        assert outcome(report, C.text_generation, Layer.LEGACY) is Outcome.FAILED
        assert "HTTP 429" in error(report, C.text_generation, Layer.LEGACY)
        assert server.count() == 1
        assert not (replica / "legacy").exists()


class TestStateFile:
    """The state file is bookkeeping: failing to write it never fails the sync."""

    async def test_unwritable_state_is_logged_not_fatal(
        self, server: FaultServer, sync: SyncFn, replica: Path, tmp_path: Path
    ) -> None:
        """With the state directory unusable, the data is still published and the run ends."""
        script_primary(server)
        blocked = tmp_path / "not-a-dir"
        blocked.write_text("a file where the state directory should be")
        report = await sync(categories=ONE, state_dir=blocked / "state")
        assert all(r.outcome.ok for r in report.results)
        assert (replica / "esrgan.json").exists()
        assert report.state_error is not None and "not-a-dir" in report.state_error
        assert not report.ok  # reported, so exit code and metrics show it
