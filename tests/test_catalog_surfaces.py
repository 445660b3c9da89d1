"""The catalogs on every operator surface: the hook's HORDE_REPLICA_CHANGED, freshness (read
by /readyz and the staleness metric) and `status` (catalog_sync.py produces ordinary layers)."""

from __future__ import annotations

from pathlib import Path

from horde_replica_sync.catalogs import ALL_NAMES, Catalog
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.config import load_settings
from horde_replica_sync.freshness import layer_keys, staleness
from horde_replica_sync.hook import announce, changed_value
from horde_replica_sync.report import LayerResult, Outcome, SyncReport
from horde_replica_sync.state import FileRecord, LastOutcome, ReplicaState
from horde_replica_sync.status import collect, render_table
from horde_replica_sync.store import ReplicaStore


def test_the_hook_names_changed_catalogs_after_the_categories() -> None:
    """A run that published a catalog announces it by its name, in the catalogue's order."""
    report = SyncReport(
        results=(
            LayerResult(Catalog.licensing, Layer.CATALOG, Outcome.UPDATED),
            LayerResult(C.esrgan, Layer.V2, Outcome.UPDATED),
        ),
        forced=False,
        dry_run=False,
        duration_seconds=0.1,
    )
    announced = announce(report, unannounced=())
    assert changed_value(announced) == "esrgan,licensing"


def test_freshness_covers_each_catalog_as_one_layer() -> None:
    """Every selected catalog is one layer /readyz and the staleness metric judge."""
    keys = layer_keys(ALL_NAMES)
    assert keys[-3:] == tuple((c, Layer.CATALOG) for c in Catalog)
    state = ReplicaState()
    state.layer(Catalog.baselines, Layer.CATALOG).verified_at = 100.0
    verdict = staleness(state, keys[-3:], now=150.0, bound_seconds=60)
    assert verdict.never_confirmed == ("text_guidance/catalog", "licensing/catalog")
    assert verdict.stale == ()


def test_status_shows_each_catalog_its_file_and_why_it_is_kept(tmp_path: Path) -> None:
    """`status` lists the catalogs with their main file and the reason a copy is only kept."""
    replica = tmp_path / "replica"
    settings = load_settings(replica_dir=replica, categories="esrgan,baselines,licensing")
    store = ReplicaStore(replica, settings.effective_state_dir)
    (replica / "baselines").mkdir(parents=True)
    (replica / "baselines" / "catalog.json").write_bytes(b"{}")
    state = ReplicaState()
    layer = state.layer(Catalog.baselines, Layer.CATALOG)
    layer.files = {"baselines/catalog.json": FileRecord(sha256="ab" * 32, size=2, etag="1:")}
    layer.verified_at, layer.last_outcome = 1000.0, LastOutcome.FAILED
    layer.last_error = "the baselines catalog: the PRIMARY is down; the last good copy is kept"
    store.save_state(state)

    rows = {row.category: row for row in collect(settings, now=1010.0)}

    assert rows["baselines"].layer == "catalog"
    assert rows["baselines"].file == str(replica / "baselines" / "catalog.json")
    assert rows["baselines"].present and rows["baselines"].problem is None
    assert rows["licensing"].problem == "missing"
    table = render_table(list(rows.values()))
    assert "last good copy is kept" in table
