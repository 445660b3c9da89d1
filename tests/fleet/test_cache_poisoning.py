"""A future stamp asked of the site cache (real nginx, the example config) before the PRIMARY
has it: the PRIMARY ignores the stamp and answers with what it has, and nginx stores that old
body for a day under the new stamp's key. Who asks early: a compromised or buggy host of the
site, or a daemon whose PRIMARY bumped its metadata before its data. Then what do the site's
hosts get once the stamp is real?"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Final

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, Layer, spec_for
from tests.faultserver import FaultServer, Reply, metadata, minimal_record, v1_path, v2_path
from tests.harness.site_cache import SiteCache
from tests.interop.peer import run_sync

ESRGAN: Final = MODEL_REFERENCE_CATEGORY.esrgan
OLD, NEW = 1000, 2000
_NO_PROXY_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def body(stamp: int) -> bytes:
    """An esrgan body whose records say when they were updated (v2 evidence) and by which tag."""
    records = {}
    for i in range(3):
        record = minimal_record(ESRGAN, f"esrgan-{i}", f"as of {stamp}")
        record["metadata"] = {"updated_at": stamp}
        records[record["name"]] = record
    return json.dumps(records, separators=(",", ":")).encode()


def serve(primary: FaultServer, stamp: int) -> None:
    """The PRIMARY at `stamp`: both metadata families and both layers."""
    for family in ("v1", "v2"):
        path = f"/api/model_references/{family}/metadata/metadata"
        primary.script(path, Reply(body=metadata(stamp)))
    primary.script(v2_path(ESRGAN), Reply(body=body(stamp)))
    primary.script(v1_path(ESRGAN), Reply(body=body(stamp)))


def ask_early(cache: SiteCache, path: str, stamp: int) -> None:
    """What a careless host does: ask for a stamp the PRIMARY does not have yet."""
    url = f"http://127.0.0.1:{cache.port}{path}?last_updated={stamp}"
    with _NO_PROXY_OPENER.open(url, timeout=10) as response:
        assert response.read() == body(OLD)  # the PRIMARY ignored the stamp; nginx kept it


def sync_host(cache: SiteCache, replica: Path) -> dict[Layer, bytes]:
    """One host's `sync --once` through the site cache: what it then holds, per layer."""
    run = run_sync(cache.url, replica, "--categories", ESRGAN.value)
    assert run.returncode == 0, run.describe()
    spec = spec_for(ESRGAN)
    return {layer: (replica / spec.relpath(layer)).read_bytes() for layer in spec.layers}


def test_an_early_v2_answer_is_refetched_and_heals_the_site(
    scripted: FaultServer, scripted_cache: SiteCache, tmp_path: Path
) -> None:
    """Both layers asked early: the v2 body shows it is older than its stamp, so the first
    host asks past the cache for both layers, and the site's entries are right from then on."""
    serve(scripted, OLD)
    ask_early(scripted_cache, v2_path(ESRGAN), NEW)
    ask_early(scripted_cache, v1_path(ESRGAN), NEW)
    serve(scripted, NEW)
    new = {Layer.V2: body(NEW), Layer.LEGACY: body(NEW)}
    assert sync_host(scripted_cache, tmp_path / "first") == new
    fresh = [seen for seen in scripted.requests if "fresh=" in seen.query]
    assert sorted(seen.path for seen in fresh) == sorted([v1_path(ESRGAN), v2_path(ESRGAN)])
    assert sync_host(scripted_cache, tmp_path / "second") == new
    assert len([seen for seen in scripted.requests if "fresh=" in seen.query]) == len(fresh)


def test_an_early_legacy_answer_is_not_recorded_as_the_new_stamp(
    scripted: FaultServer, scripted_cache: SiteCache, tmp_path: Path
) -> None:
    """Only the legacy layer asked early, under the stamp to come: the site's hosts ask for it
    with their v2 body's digest too, which the early request could not name, so the old body
    nginx stored is never what they get."""
    serve(scripted, OLD)
    ask_early(scripted_cache, v1_path(ESRGAN), NEW)
    serve(scripted, NEW)
    held = sync_host(scripted_cache, tmp_path / "host")
    assert held[Layer.V2] == body(NEW)
    assert held[Layer.LEGACY] == body(NEW), "the legacy layer is the old bytes, stamped NEW"
