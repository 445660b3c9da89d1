"""The side catalogs' decisions, in process over the fakes (catalog_sync.py).

The same flows against the real PRIMARY and upstream's real reader are in
tests/interop/test_catalogs.py; a malformed body over real sockets in tests/faults.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from horde_replica_sync.catalogs import SPECS, Catalog
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.errors import ErrorKind, SourceUnavailable
from horde_replica_sync.report import LayerResult, MissReason, Outcome, SyncReport
from horde_replica_sync.sync import SyncEngine
from tests.fakes import (
    FakeClock,
    MemoryPublisher,
    ScriptedPrimary,
    body,
    engine_for,
    memory_backend,
)

BASELINES, LICENSING = SPECS[Catalog.baselines], SPECS[Catalog.licensing]
assert LICENSING.probe is not None
PROBE = LICENSING.probe


def baselines(revision: int, *names: str, kudos: float = 1) -> bytes:
    """A baselines export at `revision` with one baseline per name."""
    records = {n: {"name": n, "horde_policy": {"kudos": kudos}} for n in names}
    return json.dumps({"metadata": {"revision": revision}, "baselines": records}).encode()


def licensing(revision: int, *ids: str) -> bytes:
    """A licensing export at `revision`: one definition per id, one model and one other asset."""
    licenses = [
        {
            "license_id": i,
            "name": f"licence {i}",
            "canonical_url": f"https://l.test/{i}",
            "commercial_use": "allowed",
            "redistribution": "allowed",
        }
        for i in ids
    ]
    conclusion = {
        "license_expression": ids[0],
        "license_ids": [ids[0]],
        "commercial_use": "allowed",
        "redistribution": "allowed",
        "files": {},
    }
    assets = [
        {
            "asset_kind": "model",
            "asset_identifier": "m",
            "display_name": "m",
            "licensing": conclusion,
            "metadata": None,
        },
        {
            "asset_kind": "software_component",
            "asset_identifier": "s",
            "display_name": "s",
            "licensing": conclusion,
            "metadata": {"revision": 1},
        },
    ]
    metadata = {"schema_version": 1, "revision": revision, "updated_at": 10 * revision}
    return json.dumps({"metadata": metadata, "licenses": licenses, "assets": assets}).encode()


def probe(revision: int) -> bytes:
    """The licensing probe page at `revision`."""
    return json.dumps(
        {"items": [], "metadata": {"revision": revision, "updated_at": 10 * revision}}
    ).encode()


class CatalogRig:
    """An engine syncing esrgan and two catalogs over the fakes, re-run as the daemon would."""

    def __init__(self, tmp_path: Path, primary: ScriptedPrimary | None) -> None:
        self.clock = FakeClock()
        self.publisher = MemoryPublisher()
        self.primary = primary
        cache = memory_backend(tmp_path, (C.esrgan,), self.clock)
        self.engine: SyncEngine = engine_for(
            cache,
            self.publisher,
            primary=primary,
            clock=self.clock,
            catalogs=(Catalog.baselines, Catalog.licensing),
        )

    def run(self, *, force: bool = False) -> SyncReport:
        return asyncio.run(self.engine.run(force=force))


def scripted(**answers: Any) -> ScriptedPrimary:
    primary = ScriptedPrimary(stamps={C.esrgan: 100})
    primary.v2[C.esrgan] = body("x")
    primary.catalogs = {
        BASELINES.export: baselines(1, "sd1", "sdxl"),
        PROBE: probe(1),
        LICENSING.export: licensing(1, "MIT", "Apache-2.0"),
        **answers,
    }
    return primary


def of(report: SyncReport, catalog: Catalog) -> LayerResult:
    return next(r for r in report.results if r.category is catalog)


def synced(tmp_path: Path) -> CatalogRig:
    rig = CatalogRig(tmp_path, scripted())
    assert rig.run().ok
    assert rig.primary is not None
    rig.primary.catalog_keys.clear()
    rig.publisher.writes.clear()
    return rig


class TestCatalogDecisions:
    def test_a_cold_run_publishes_upstreams_files_and_keys_the_large_export(
        self, tmp_path: Path
    ) -> None:
        """Cold: every catalog file is written; the licensing export is keyed by its probe."""
        rig = CatalogRig(tmp_path, scripted())
        report = rig.run()
        assert report.ok
        assert of(report, Catalog.baselines).miss is MissReason.FIRST_LOAD
        assert of(report, Catalog.licensing).outcome is Outcome.UPDATED
        assert set(rig.publisher.files) >= {
            "baselines/catalog.json",
            "licensing/licenses.json",
            "licensing/assets.json",
        }
        assert rig.primary is not None
        assert (LICENSING.export, "1:10", False) in rig.primary.catalog_keys
        assets = json.loads(rig.publisher.files["licensing/assets.json"])
        assert list(assets["records"]) == ["software_component:s"]  # models live elsewhere
        assert "files" not in assets["records"]["software_component:s"]["licensing"]

    def test_nothing_moved_is_a_hit_and_writes_nothing(self, tmp_path: Path) -> None:
        """Unchanged: the licensing probe alone (no export), the small export compared, no write."""
        rig = synced(tmp_path)
        report = rig.run()
        assert report.ok
        assert rig.publisher.writes == []
        assert rig.primary is not None
        assert [k[0] for k in rig.primary.catalog_keys] == [BASELINES.export, PROBE]
        for catalog in (Catalog.baselines, Catalog.licensing):
            result = of(report, catalog)
            assert (result.outcome, result.miss, result.verified) == (Outcome.UNCHANGED, None, True)

    def test_a_moved_revision_fetches_and_rewrites(self, tmp_path: Path) -> None:
        """The probe shows a new revision: the export under that key, both envelopes rewritten."""
        rig = synced(tmp_path)
        assert rig.primary is not None
        rig.primary.catalogs[PROBE] = probe(2)
        rig.primary.catalogs[LICENSING.export] = licensing(2, "MIT", "Apache-2.0")
        rig.primary.catalogs[BASELINES.export] = baselines(2, "sd1", "sdxl", kudos=3)
        report = rig.run()
        assert report.ok
        assert of(report, Catalog.licensing).miss is MissReason.CHANGED_UPSTREAM
        assert of(report, Catalog.baselines).outcome is Outcome.UPDATED
        assert (LICENSING.export, "2:20", False) in rig.primary.catalog_keys
        assert sorted(rig.publisher.writes) == [
            "baselines/catalog.json",
            "licensing/assets.json",
            "licensing/licenses.json",
        ]

    def test_an_older_body_under_a_new_key_is_asked_for_past_the_caches(
        self, tmp_path: Path
    ) -> None:
        """A site cache answering revision 2's key with revision 1's body: asked again, fresh."""
        rig = synced(tmp_path)
        assert rig.primary is not None
        rig.primary.catalogs[PROBE] = probe(2)
        rig.primary.catalogs[LICENSING.export] = [
            licensing(1, "MIT", "Apache-2.0"),
            licensing(2, "MIT", "Apache-2.0"),
        ]
        assert rig.run().ok
        assert (LICENSING.export, "2:20", True) in rig.primary.catalog_keys
        assert json.loads(rig.publisher.files["licensing/licenses.json"])["revision"] == 2

    def test_a_file_edited_on_disk_is_repaired(self, tmp_path: Path) -> None:
        """Our file changed under us: refetched (not just probed) and written back."""
        rig = synced(tmp_path)
        rig.publisher.files["licensing/assets.json"] = b"{}"
        report = rig.run()
        assert of(report, Catalog.licensing).miss is MissReason.EDITED_ON_DISK
        assert rig.publisher.writes == ["licensing/assets.json"]

    def test_the_ttl_forces_a_full_fetch(self, tmp_path: Path) -> None:
        """Past cache_ttl_seconds the export is fetched even though the revision held."""
        rig = synced(tmp_path)
        rig.clock.now += 3601
        report = rig.run()
        assert of(report, Catalog.licensing).miss is MissReason.EXPIRED
        assert rig.primary is not None
        assert LICENSING.export in [k[0] for k in rig.primary.catalog_keys]
        assert rig.publisher.writes == []

    def test_a_malformed_export_is_refused_naming_the_catalog(self, tmp_path: Path) -> None:
        """A body upstream's reader could not load: refused, named, last good copy kept."""
        rig = synced(tmp_path)
        assert rig.primary is not None
        kept = rig.publisher.files["baselines/catalog.json"]
        rig.primary.catalogs[BASELINES.export] = b'{"metadata": {"revision": 2}, "baselines": []}'
        report = rig.run()
        result = of(report, Catalog.baselines)
        assert result.outcome is Outcome.REFUSED
        assert result.error_kind is ErrorKind.INVALID
        assert result.error is not None and "baselines catalog" in result.error
        assert rig.publisher.files["baselines/catalog.json"] == kept
        assert not report.ok
        state = rig.engine.state.layer(Catalog.baselines, Layer.CATALOG)
        assert state.last_outcome == "refused"
        # Fixed upstream: the next run fetches again (failed last time) and publishes.
        rig.primary.catalogs[BASELINES.export] = baselines(2, "sd1", "sdxl")
        again = rig.run()
        assert of(again, Catalog.baselines).miss is MissReason.FAILED_LAST_TIME
        assert again.ok

    def test_a_field_upstreams_reader_does_not_know_is_refused_naming_it(
        self, tmp_path: Path
    ) -> None:
        """A newer PRIMARY's new field would stop every 8.6.2 reader: refused, kept, named."""
        rig = synced(tmp_path)
        assert rig.primary is not None
        kept = rig.publisher.files["baselines/catalog.json"]
        data = json.loads(baselines(2, "sd1", "sdxl"))
        data["baselines"]["sd1"]["horde_policy"]["kudos_video"] = 2
        rig.primary.catalogs[BASELINES.export] = json.dumps(data).encode()
        result = of(rig.run(), Catalog.baselines)
        assert result.outcome is Outcome.REFUSED
        assert result.error is not None
        assert "baselines.sd1.horde_policy.kudos_video: Extra inputs are not permitted" in (
            result.error
        )
        assert rig.publisher.files["baselines/catalog.json"] == kept

    def test_the_shrink_guard_covers_catalogs(self, tmp_path: Path) -> None:
        """A catalog that suddenly loses most of its records is refused."""
        rig = synced(tmp_path)
        assert rig.primary is not None
        rig.primary.catalogs[BASELINES.export] = baselines(2)
        result = of(rig.run(), Catalog.baselines)
        assert result.error_kind is ErrorKind.SHRINK

    def test_the_primary_down_keeps_the_last_good_copy(self, tmp_path: Path) -> None:
        """No metadata: the catalogs fail without a request, their files untouched."""
        rig = synced(tmp_path)
        assert rig.primary is not None
        rig.primary.stamps = SourceUnavailable("http://primary.test/meta", "connection refused")
        files = dict(rig.publisher.files)
        report = rig.run()
        result = of(report, Catalog.licensing)
        assert result.outcome is Outcome.FAILED
        assert result.error is not None and "last good copy is kept" in result.error
        assert rig.primary.catalog_keys == []
        assert rig.publisher.files == files

    def test_without_a_primary_the_catalogs_say_they_have_no_source(self, tmp_path: Path) -> None:
        """GitHub-only: nothing is faked or deleted, and the result says why."""
        rig = synced(tmp_path)
        files = dict(rig.publisher.files)
        rig.engine = engine_for(
            memory_backend(tmp_path, (C.esrgan,), rig.clock),
            rig.publisher,
            primary=None,
            clock=rig.clock,
            state=rig.engine.state,
            catalogs=(Catalog.baselines,),
        )
        result = of(rig.run(), Catalog.baselines)
        assert result.outcome is Outcome.ABSENT
        assert result.error is not None
        assert "only from the PRIMARY" in result.error and "last good copy is kept" in result.error
        assert rig.publisher.files == files
