"""A simulated fleet: many hosts' `sync --once` against one real PRIMARY, with or without the
site cache (real nginx, config/nginx-site-cache.example.conf) in between.

Each host is its own replica directory, synced by its own `sync --once` process. The PRIMARY
is changed for one category the way its own data changes offline (`change_category`): edit the
legacy file, drop that category's v2 file and `meta/` records, restart on the same data dir
(that category is re-initialised, the others keep their stamps). What the PRIMARY sees is read
from its access log (requests, by path) and a byte-counting relay in front of it (wire bytes).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from horde_replica_sync.catalogs import SPECS as CATALOG_SPECS
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY
from tests.faultserver import v1_path, v2_path
from tests.harness.relay import Relay
from tests.harness.site_cache import METADATA_CACHE_SECONDS, METADATA_MAX_AGE_SECONDS, SiteCache
from tests.interop.peer import LOCK_FILE_NAME, CliRun, Primary, run_sync

METADATA_PATHS: Final = frozenset(
    f"/api/model_references/{family}/metadata/metadata" for family in ("v1", "v2")
)
# What every run polls besides the metadata: the catalogs' checks (catalogs.py), cached by
# the site like metadata (5 s). The two small exports are their own check.
CATALOG_CHECK_PATHS: Final = frozenset(
    "/api/" + (spec.probe or spec.export).partition("?")[0] for spec in CATALOG_SPECS.values()
)
POLL_PATHS: Final = METADATA_PATHS | CATALOG_CHECK_PATHS
# The category an image edit changes, and its two layers' files and PRIMARY paths.
CHANGED_CATEGORY: Final = "image_generation"
CHANGED_LEGACY_FILE: Final = "stable_diffusion.json"  # in the PRIMARY's legacy/ and ours
CHANGED_V2_FILE: Final = "stable_diffusion.json"  # the PRIMARY's served v2 file, and ours
CHANGED_PATHS: Final = frozenset(
    {
        v2_path(MODEL_REFERENCE_CATEGORY(CHANGED_CATEGORY)),
        v1_path(MODEL_REFERENCE_CATEGORY(CHANGED_CATEGORY)),
    }
)
DEFAULT_INTERVAL_SECONDS: Final = 60.0  # the daemon's defaults the figures extrapolate with
DEFAULT_JITTER_SECONDS: Final = 6.0
POLLS_PER_HOUR: Final = 3600 / DEFAULT_INTERVAL_SECONDS
LOG_SETTLE_SECONDS: Final = 0.15  # uvicorn writes the access line just after the response

_PRIMARY_REQUEST: Final = re.compile(r'"GET (\S+) HTTP/[0-9.]+" [0-9]{3}')


# -- the PRIMARY -------------------------------------------------------------------------------


def change_category(primary: Primary, marker: str) -> int:
    """Edit CHANGED_CATEGORY's legacy file, restart the PRIMARY so it re-initialises that
    category alone; returns its new `last_updated`.

    Removing the category's v2 file and its `meta/` records makes the restart derive v2 anew
    with every record's `updated_at` and the category's `last_updated` set to now, as an edit
    through the PRIMARY would; the other categories keep their files and stamps. (Moving
    `last_updated` alone would announce a change no v2 record shows.)
    """
    before = primary.get_json("/model_references/v2/metadata/metadata")[CHANGED_CATEGORY]
    primary.stop()
    legacy = primary.legacy_dir / CHANGED_LEGACY_FILE
    data = json.loads(legacy.read_text(encoding="utf-8"))
    first = next(iter(data.values()))
    first["description"] = f"{first.get('description', '')} [{marker}]"
    legacy.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")
    served = primary.data_dir / "horde_model_reference"
    (served / CHANGED_V2_FILE).unlink()
    for family in ("v2", "legacy"):
        (served / "meta" / family / f"{CHANGED_CATEGORY}_metadata.json").unlink()
    time.sleep(max(0.0, before["last_updated"] + 1 - time.time()))  # stamps are whole seconds
    primary.start()
    stamp = int(
        primary.get_json("/model_references/v2/metadata/metadata")[CHANGED_CATEGORY]["last_updated"]
    )
    if stamp <= before["last_updated"]:
        msg = f"{CHANGED_CATEGORY}'s stamp did not move: {before['last_updated']} -> {stamp}"
        raise AssertionError(msg)
    return stamp


def primary_paths(primary: Primary, since: int = 0) -> list[str]:
    """The paths (query dropped) of the PRIMARY's logged GETs, from the `since`-th one on."""
    text = primary.log_path.read_text(encoding="utf-8", errors="replace")
    targets = _PRIMARY_REQUEST.findall(text)[since:]
    return [target.partition("?")[0] for target in targets]


# -- the hosts ---------------------------------------------------------------------------------


def seed_hosts(template: Path, root: Path, count: int) -> list[Path]:
    """`count` host replicas, each a copy of the synced `template` (state included, lock not)."""
    hosts = [root / f"host-{i:03d}" for i in range(count)]
    for host in hosts:
        shutil.copytree(template, host, ignore=shutil.ignore_patterns(LOCK_FILE_NAME))
    return hosts


def sync_hosts(url: str, hosts: Sequence[Path], *, parallel: int = 1) -> list[CliRun]:
    """Every host's `sync --once` against `url`, `parallel` at a time; each must succeed."""
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        runs = list(pool.map(lambda host: run_sync(url, host), hosts))
    failed = [run for run in runs if run.returncode != 0]
    if failed:
        msg = f"{len(failed)} of {len(runs)} syncs failed; the first:\n{failed[0].describe()}"
        raise AssertionError(msg)
    return runs


# -- the measurement ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetRound:
    """Every host's `sync --once` in turn, as the PRIMARY saw it."""

    hosts: int
    metadata_requests: int
    data_requests: int
    wire_bytes: int  # every byte the PRIMARY sent (relay)
    seconds: float  # the whole round, wall time
    run_seconds: tuple[float, ...]  # each host's engine run (`sync.run_done` duration)
    replicas_current: int  # hosts whose changed files equal what the PRIMARY serves

    @property
    def requests(self) -> int:
        """Requests at the PRIMARY."""
        return self.metadata_requests + self.data_requests


@dataclass(frozen=True, slots=True)
class FleetSetup:
    """An idle round (nothing changed) and a change round (one category changed)."""

    idle: FleetRound
    change: FleetRound


@dataclass(frozen=True, slots=True)
class FleetFigures:
    """The fleet without and with the site cache, and the size of what the change moved."""

    hosts: int
    direct: FleetSetup
    cached: FleetSetup
    changed_body_bytes: int  # v2 + v1 bodies of CHANGED_CATEGORY


def measure_round(
    primary: Primary, relay: Relay, url: str, hosts: Sequence[Path], expected: dict[str, bytes]
) -> FleetRound:
    """Sync every host in turn through `url`; count what reached the PRIMARY behind `relay`.

    `expected`: replica-relative file -> the bytes the PRIMARY serves (checked after).
    """
    since, down = len(primary_paths(primary)), relay.bytes_down()
    started = time.monotonic()
    runs = sync_hosts(url, hosts)
    seconds = time.monotonic() - started
    time.sleep(LOG_SETTLE_SECONDS)
    paths = primary_paths(primary, since)
    metadata = sum(1 for path in paths if path in POLL_PATHS)
    current = sum(
        all((host / rel).read_bytes() == body for rel, body in expected.items()) for host in hosts
    )
    return FleetRound(
        hosts=len(hosts),
        metadata_requests=metadata,
        data_requests=len(paths) - metadata,
        wire_bytes=relay.bytes_down() - down,
        seconds=seconds,
        run_seconds=tuple(run.run_seconds for run in runs),
        replicas_current=current,
    )


def served_changed_files(primary: Primary) -> dict[str, bytes]:
    """The changed category's files as the PRIMARY serves them now (asked directly)."""
    return {
        CHANGED_V2_FILE: primary.v2(CHANGED_CATEGORY),
        f"legacy/{CHANGED_LEGACY_FILE}": primary.v1(CHANGED_CATEGORY),
    }


def measure_setup(primary: Primary, relay: Relay, url: str, hosts: Sequence[Path]) -> FleetSetup:
    """An idle round, then change CHANGED_CATEGORY and a change round, all through `url`.

    After the change it waits out the metadata cache period first (with or without a cache,
    so both setups are timed alike), so every host sees the change in this round.
    """
    idle = measure_round(primary, relay, url, hosts, served_changed_files(primary))
    change_category(primary, f"fleet-{time.monotonic_ns()}")
    expected = served_changed_files(primary)  # asked directly, before the round is counted
    time.sleep(METADATA_MAX_AGE_SECONDS + 0.2)
    change = measure_round(primary, relay, url, hosts, expected)
    return FleetSetup(idle, change)


def measure_fleet(primary: Primary, relay: Relay, work: Path, hosts: int) -> FleetFigures:
    """`hosts` replicas, seeded from one cold sync; both setups against `primary` (via `relay`).

    The direct setup syncs from the relay; the cached one from nginx, whose upstream is the
    relay, so the PRIMARY's bytes are counted the same way in both.
    """
    template = work / "fleet-template"
    first = run_sync(relay.url, template)
    if first.returncode != 0:
        msg = f"the fleet's template sync failed:\n{first.describe()}"
        raise AssertionError(msg)
    replicas = seed_hosts(template, work / "fleet", hosts)
    direct = measure_setup(primary, relay, relay.url, replicas)
    cache = SiteCache(work / "site-cache", f"http://127.0.0.1:{relay.port}")
    try:
        cached = measure_setup(primary, relay, cache.url, replicas)
    finally:
        cache.stop()
    body = sum(len(b) for b in served_changed_files(primary).values())
    return FleetFigures(hosts, direct, cached, body)


# -- what the figures extrapolate to -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hourly:
    """Requests and bytes at the PRIMARY per idle hour, for the fleet."""

    requests: float
    wire_bytes: float


def direct_idle_hour(idle: FleetRound) -> Hourly:
    """Without a cache every host's poll reaches the PRIMARY: the round, POLLS_PER_HOUR times."""
    return Hourly(idle.requests * POLLS_PER_HOUR, idle.wire_bytes * POLLS_PER_HOUR)


def cached_idle_bound() -> float:
    """The most requests an idle hour can cost the PRIMARY behind the site cache, at any size:
    every poll path once per cache period."""
    return len(POLL_PATHS) * 3600 / METADATA_CACHE_SECONDS


def cached_idle_hour(idle: FleetRound) -> Hourly:
    """With the site cache the PRIMARY sees the 5 polls (2 metadata, 3 catalog checks) once per
    cache period in which any host polls: with the hosts' polls spread evenly over the interval
    (the jitter's job), 5 x 3600/5 x (1 - (1 - 5/60)^hosts); at most `cached_idle_bound()`.
    Bytes: that many times the round's mean metadata answer."""
    periods = 3600 / METADATA_CACHE_SECONDS
    busy = 1 - (1 - METADATA_CACHE_SECONDS / DEFAULT_INTERVAL_SECONDS) ** idle.hosts
    requests = len(POLL_PATHS) * periods * busy
    per_request = idle.wire_bytes / idle.metadata_requests if idle.metadata_requests else 0.0
    return Hourly(requests, requests * per_request)


def convergence_bound(change: FleetRound, *, cached: bool) -> float:
    """Seconds from a change to the last host holding it: the next tick (interval + jitter at
    most), plus the metadata's age at the site cache, plus that host's run (the slowest)."""
    age = METADATA_MAX_AGE_SECONDS if cached else 0.0
    return DEFAULT_INTERVAL_SECONDS + DEFAULT_JITTER_SECONDS + age + max(change.run_seconds)
