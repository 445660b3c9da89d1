"""The side catalogs on the wire: real sockets, the real engine and store (catalogs.py).

A malformed catalog body is refused with an error naming the catalog, the last good copy
stays byte for byte, and the refusal is counted; the licensing export is asked for only
under the revision its probe showed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry

from horde_replica_sync.catalogs import SPECS, Catalog
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.freshness import layer_keys
from horde_replica_sync.metrics import PREFIX, Metrics
from horde_replica_sync.report import Outcome
from horde_replica_sync.state import ReplicaState
from tests.faults.conftest import SyncFn
from tests.faultserver import FaultServer, Reply, metadata, records, v2_path

BASELINES = "/api/" + SPECS[Catalog.baselines].export
LICENSING = "/api/" + SPECS[Catalog.licensing].export
PROBE, _, PROBE_QUERY = ("/api/" + str(SPECS[Catalog.licensing].probe)).partition("?")
NAMES = "esrgan,baselines,licensing"


def baselines(revision: int) -> bytes:
    records_ = {n: {"name": n} for n in ("sd1", "sdxl")}
    return json.dumps({"metadata": {"revision": revision}, "baselines": records_}).encode()


def licensing(revision: int) -> bytes:
    definition = {
        "license_id": "MIT",
        "name": "MIT License",
        "canonical_url": "https://opensource.org/license/mit",
        "commercial_use": "allowed",
        "redistribution": "allowed",
    }
    metadata_ = {"schema_version": 1, "revision": revision, "updated_at": 100 * revision}
    return json.dumps({"metadata": metadata_, "licenses": [definition], "assets": []}).encode()


def probe(revision: int) -> bytes:
    page = {"items": [], "metadata": {"revision": revision, "updated_at": 100 * revision}}
    return json.dumps(page).encode()


def serve(server: FaultServer, revision: int) -> None:
    """A PRIMARY with esrgan and the two catalogs at `revision`."""
    for family in ("v1", "v2"):
        server.script(f"/api/model_references/{family}/metadata/metadata", Reply(body=metadata(1)))
    server.script(v2_path(C.esrgan), Reply(body=records(C.esrgan, 2)))
    server.script(BASELINES, Reply(body=baselines(revision)))
    server.script(PROBE, Reply(body=probe(revision)))
    server.script(LICENSING, Reply(body=licensing(revision)))


async def test_a_malformed_catalog_is_refused_named_kept_and_counted(
    server: FaultServer,
    sync: SyncFn,
    replica: Path,
    state_of: Callable[[], ReplicaState],
) -> None:
    """A truncated baselines export: refused naming the catalog, last good kept, counted."""
    serve(server, 1)
    assert (await sync(categories=NAMES)).ok
    kept = (replica / "baselines" / "catalog.json").read_bytes()
    server.script(BASELINES, Reply(body=baselines(2)[:40]))

    report = await sync(categories=NAMES)

    result = next(r for r in report.results if r.category is Catalog.baselines)
    assert result.outcome is Outcome.REFUSED
    assert result.error is not None
    assert result.error.startswith("the baselines catalog (http://"), result.error
    assert "not valid JSON" in result.error
    assert (replica / "baselines" / "catalog.json").read_bytes() == kept
    state = state_of().layer(Catalog.baselines, Layer.CATALOG)
    assert state.last_outcome == "refused" and state.last_error == result.error
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.track(layer_keys((C.esrgan, Catalog.baselines)), state_of())
    metrics.observe(report)
    labels = {"category": "baselines", "layer": "catalog", "outcome": "refused"}
    assert registry.get_sample_value(f"{PREFIX}_layer_syncs_total", labels) == 1
    errors = {"source": "primary", "reason": "invalid"}
    assert registry.get_sample_value(f"{PREFIX}_fetch_errors_total", errors) == 1


async def test_the_licensing_export_is_asked_for_under_its_probed_revision(
    server: FaultServer, sync: SyncFn, replica: Path
) -> None:
    """Cold: probe, then the export keyed by that revision; unchanged: the probe alone."""
    serve(server, 1)
    assert (await sync(categories=NAMES)).ok
    asked = [(seen.path, parse_qs(seen.query)) for seen in server.requests]
    assert (PROBE, parse_qs(PROBE_QUERY)) in asked
    assert (LICENSING, {"revision": ["1:100"]}) in asked
    assert json.loads((replica / "licensing" / "licenses.json").read_bytes())["revision"] == 1
    before = len([s for s in server.requests if s.path == LICENSING])

    assert (await sync(categories=NAMES)).ok

    assert len([s for s in server.requests if s.path == LICENSING]) == before
