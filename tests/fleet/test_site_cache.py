"""Ten hosts behind the site cache (real nginx) and the real PRIMARY: a change costs the PRIMARY
one download per changed layer, and every replica ends with the bytes the PRIMARY serves."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Final

import pytest

from horde_replica_sync.catalogs import SPECS as CATALOG_SPECS
from tests.harness.fleet import (
    CHANGED_CATEGORY,
    CHANGED_PATHS,
    LOG_SETTLE_SECONDS,
    POLL_PATHS,
    change_category,
    served_changed_files,
    sync_hosts,
)
from tests.harness.site_cache import (
    METADATA_CACHE_SECONDS,
    METADATA_MAX_AGE_SECONDS,
    SiteCache,
)
from tests.interop.peer import Primary

pytestmark = pytest.mark.peer

HOSTS: Final = 10
_NO_PROXY_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def cached_stamp(cache: SiteCache, family: str) -> int:
    """CHANGED_CATEGORY's `last_updated` in the metadata the site cache hands out."""
    url = f"{cache.url}/model_references/{family}/metadata/metadata"
    with _NO_PROXY_OPENER.open(url, timeout=10) as response:
        return int(json.loads(response.read())[CHANGED_CATEGORY]["last_updated"])


def prime_polls(cache: SiteCache) -> None:
    """Fetch every poll URL (metadata, catalog checks) through the cache: each entry is fresh
    for one cache period from now. nginx's `proxy_cache_lock` collapses concurrent misses, not
    concurrent requests for an entry that just expired, so a round that straddles an expiry
    may pass each of its hosts' requests upstream: the measured round starts on fresh ones."""
    for check in (
        "model_references/v1/metadata/metadata",
        "model_references/v2/metadata/metadata",
        *(spec.probe or spec.export for spec in CATALOG_SPECS.values()),
    ):
        with _NO_PROXY_OPENER.open(f"{cache.url}/{check}", timeout=10) as response:
            response.read()


def wait_for_stamp(cache: SiteCache, stamp: int) -> float:
    """Poll the site cache until both families show `stamp`; how long that took."""
    started = time.monotonic()
    deadline = started + METADATA_MAX_AGE_SECONDS + 5
    while time.monotonic() < deadline:
        if all(cached_stamp(cache, family) == stamp for family in ("v1", "v2")):
            return time.monotonic() - started
        time.sleep(0.2)
    pytest.fail(f"the site cache did not show stamp {stamp} within {deadline - started:.0f} s")


def test_a_change_reaches_every_host_for_one_download_per_layer(
    real_primary: Primary, site_cache: SiteCache, tmp_path: Path
) -> None:
    """Cold-sync 10 hosts, change image_generation, sync all 10 again (concurrently)."""
    hosts = [tmp_path / f"host-{i:02d}" for i in range(HOSTS)]
    sync_hosts(site_cache.url, hosts, parallel=HOSTS)

    stamp = change_category(real_primary, "fleet-test")
    seen_after = wait_for_stamp(site_cache, stamp)
    assert seen_after <= METADATA_MAX_AGE_SECONDS, "metadata older than the cache period"
    prime_polls(site_cache)
    primed = time.monotonic()
    time.sleep(LOG_SETTLE_SECONDS)  # both logs write a request's line after its response
    since, primary_since = site_cache.log_size(), real_primary.request_count()
    started = time.monotonic()
    sync_hosts(site_cache.url, hosts, parallel=HOSTS)
    elapsed = time.monotonic() - started
    fresh_throughout = time.monotonic() - primed < METADATA_CACHE_SECONDS
    time.sleep(LOG_SETTLE_SECONDS)
    primary_requests = real_primary.request_count() - primary_since

    served = served_changed_files(real_primary)  # asked directly, after counting
    for host in hosts:
        for rel, body in served.items():
            assert (host / rel).read_bytes() == body, f"{host.name}/{rel} is not the new bytes"

    lines = site_cache.lines(since)
    asked = Counter(line.path for line in lines if line.path in CHANGED_PATHS)
    assert all(asked[path] >= HOSTS for path in CHANGED_PATHS), f"not every host fetched: {asked}"
    upstream = [line for line in lines if line.reached_primary]
    assert primary_requests == len(upstream), "nginx's log and the PRIMARY's agree"
    metadata = [line for line in upstream if line.path in POLL_PATHS]  # and catalog checks
    data = Counter(line.path for line in upstream if line.path not in POLL_PATHS)
    assert data == dict.fromkeys(CHANGED_PATHS, 1), (
        f"the PRIMARY should see one download per changed layer, saw {dict(data)}: "
        + ", ".join(sorted({f"{line.target} {line.cache}" for line in upstream}))
    )
    if fresh_throughout:  # 10 hosts' polls, all answered by the cache
        assert metadata == [], f"{len(metadata)} polls reached the PRIMARY in {elapsed:.1f} s"
    else:  # a loaded host: the round outlived the entries (each expiry may pass every host)
        periods = int(elapsed // METADATA_CACHE_SECONDS) + 1
        assert len(metadata) <= len(POLL_PATHS) * periods * HOSTS, (
            f"{len(metadata)} polls reached the PRIMARY in {elapsed:.1f} s"
        )
