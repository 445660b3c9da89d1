"""Issue 20, item 1, with a real cache: nginx keyed on the path alone (`proxy_cache_key $uri`,
what CloudFront's legacy cache settings and "ignore query string" options do), in front of a
PRIMARY that really wrote. Every answer, `&fresh=` included, is the body nginx stored first.
The new stamp must never be recorded for those bytes, and the daemon must say why."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, Layer
from tests.environment import clean_env
from tests.faultserver import FaultServer
from tests.fleet.test_cache_poisoning import NEW, OLD, body, serve
from tests.harness.site_cache import METADATA_MAX_AGE_SECONDS, SiteCache
from tests.interop.peer import STATE_DIR_NAME, run_sync
from tests.processes import run_cli

ESRGAN: Final = MODEL_REFERENCE_CATEGORY.esrgan
IGNORE_QUERY: Final = (
    ("proxy_cache_key $uri?last_updated=$arg_last_updated&v2=$arg_v2;", "proxy_cache_key $uri;"),
    ("proxy_cache_bypass $unstamped $arg_fresh;", ""),
    ("proxy_no_cache $unstamped;", ""),
)


@pytest.fixture
def path_keyed_cache(scripted: FaultServer, tmp_path: Path) -> Iterator[SiteCache]:
    cache = SiteCache(tmp_path / "site-cache", scripted.url, edits=IGNORE_QUERY)
    try:
        yield cache
    finally:
        cache.stop()


def test_a_cache_ignoring_query_strings_never_gets_the_new_stamp_recorded(
    scripted: FaultServer, path_keyed_cache: SiteCache, tmp_path: Path
) -> None:
    replica = tmp_path / "host"
    serve(scripted, OLD)
    first = run_sync(path_keyed_cache.url, replica, "--categories", ESRGAN.value)
    assert first.returncode == 0, first.describe()
    serve(scripted, NEW)  # the PRIMARY writes; nginx keeps the OLD body for a day
    time.sleep(METADATA_MAX_AGE_SECONDS)  # until nginx's metadata shows NEW
    for attempt in range(3):
        run = run_sync(path_keyed_cache.url, replica, "--categories", ESRGAN.value)
        state = json.loads((replica / STATE_DIR_NAME / "state.json").read_text())
        v2 = state["categories"][ESRGAN.value][Layer.V2.value]
        assert v2["upstream_last_updated"] == OLD, f"run {attempt + 1}: OLD bytes stamped NEW"
    assert v2["unshown_runs"] == 3  # what /readyz and HordeReplicaStampNotShown read
    older = [e for e in run.events if e.get("event") == "sync.older_answer"]
    v2_older = [e for e in older if e["detail"].startswith(f"{ESRGAN.value}.json")]
    assert v2_older and "ignores query strings" in v2_older[-1]["detail"], run.describe()
    assert (replica / "esrgan.json").read_bytes() == body(OLD)
    where = ("--replica-dir", str(replica), "--categories", ESRGAN.value)
    status = run_cli("status", "--json", *where, env=clean_env())
    assert status.returncode == 1, status.stdout + status.stderr  # `status` agrees with /readyz
    rows = {row["layer"]: row for row in json.loads(status.stdout)["layers"]}
    assert "ignores query strings" in (rows["v2"]["problem"] or "")
