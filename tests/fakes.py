"""In-memory fakes at the engine's seams (ports.py): scripted sources, a memory publisher, a clock.

They let the engine's decision table run in-process in milliseconds; the real HTTP sources,
store and daemon are exercised by the socket and process tests beside them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

import apscheduler.executors.base
import apscheduler.schedulers.base
import apscheduler.triggers.interval
import pytest

from horde_replica_sync import scheduler
from horde_replica_sync.backends.replica import ReplicaDirectoryBackend
from horde_replica_sync.catalog_sync import CatalogRules
from horde_replica_sync.catalogs import Catalog
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, GithubRepo
from horde_replica_sync.chain import SourceChain
from horde_replica_sync.errors import StoreError
from horde_replica_sync.ports import PLAIN, DataKey, Fetched, NotModified, Operation, Stamps
from horde_replica_sync.report import SyncReport
from horde_replica_sync.state import ReplicaState
from horde_replica_sync.store import ReplicaStore, sha256_hex
from horde_replica_sync.sync import SyncEngine, SyncOptions

C = MODEL_REFERENCE_CATEGORY
Script = bytes | None | Exception  # a body, a 404, or what the source raises


def body(*names: str, extra: str = "") -> bytes:
    """A valid records object with one record per name (with a file, as record_rules wants)."""
    return json.dumps({n: _record(n, extra) for n in names}).encode()


def _record(name: str, extra: str) -> dict[str, object]:
    download = {"file_name": f"{name}.pth", "file_url": f"https://files.test/{name}.pth"}
    return {"name": name, "extra": extra, "config": {"download": [download]}}


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Wall:
    """The process's wall clock as APScheduler reads it, stepped by `offset` seconds (what an
    NTP step does: the event loop's monotonic clock runs on)."""

    offset = 0.0
    real = datetime

    class Stepped(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Wall.Stepped:
            stepped = Wall.real.now(tz) + timedelta(seconds=Wall.offset)
            return cls.fromtimestamp(stepped.timestamp(), tz)

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch) -> type[Wall]:
        """Step APScheduler's (and the ticker's) `datetime.now` from now on; starts at 0."""
        cls.offset = 0.0
        for module in (
            apscheduler.schedulers.base,
            apscheduler.executors.base,
            apscheduler.triggers.interval,
            scheduler,
        ):
            monkeypatch.setattr(module, "datetime", cls.Stepped)
        return cls


@dataclass
class ScriptedPrimary:
    """A PRIMARY whose answers a test sets per category and layer."""

    stamps: dict[MODEL_REFERENCE_CATEGORY, int] | Exception = field(default_factory=dict)
    v2: dict[MODEL_REFERENCE_CATEGORY, Script | list[Script]] = field(default_factory=dict)
    legacy: dict[MODEL_REFERENCE_CATEGORY, Script | list[Script]] = field(default_factory=dict)
    unusable: dict[MODEL_REFERENCE_CATEGORY, str] = field(default_factory=dict)  # metadata entries
    operations: dict[MODEL_REFERENCE_CATEGORY, Operation] = field(default_factory=dict)
    legacy_writes: set[MODEL_REFERENCE_CATEGORY] = field(default_factory=set)  # v1 family's
    calls: list[str] = field(default_factory=list)
    keys: list[tuple[str, int | None, bool]] = field(default_factory=list)  # (url, stamp, fresh)
    companions: list[str | None] = field(default_factory=list)  # each request's DataKey.v2
    catalogs: dict[str, Script | list[Script]] = field(default_factory=dict)  # by path
    catalog_keys: list[tuple[str, str | None, bool]] = field(default_factory=list)

    def catalog_url(self, path: str) -> str:
        return f"http://primary.test/{path}"

    async def fetch_catalog(
        self, path: str, *, revision: str | None = None, fresh: bool = False
    ) -> Fetched | None:
        self.catalog_keys.append((path, revision, fresh))
        return self._answer(self.catalog_url(path), self.catalogs.get(path), PLAIN)

    def v2_url(self, category: MODEL_REFERENCE_CATEGORY) -> str:
        return f"http://primary.test/v2/{category.value}"

    async def fetch_v2(
        self, category: MODEL_REFERENCE_CATEGORY, key: DataKey = PLAIN
    ) -> Fetched | None:
        return self._answer(self.v2_url(category), self.v2.get(category), key)

    async def fetch_legacy(
        self, category: MODEL_REFERENCE_CATEGORY, key: DataKey = PLAIN
    ) -> Fetched | None:
        url = f"http://primary.test/v1/{category.value}"
        return self._answer(url, self.legacy.get(category), key)

    async def fetch_last_updated(self) -> Stamps:
        self.calls.append("metadata")
        if isinstance(self.stamps, Exception):
            raise self.stamps
        return Stamps(
            dict(self.stamps),
            dict(self.unusable),
            dict(self.operations),
            frozenset(self.legacy_writes),
        )

    def _answer(self, url: str, script: Script | list[Script], key: DataKey) -> Fetched | None:
        self.calls.append(url)
        self.keys.append((url, key.stamp, key.fresh))
        self.companions.append(key.v2)
        if isinstance(script, list):  # answers in turn; the last one repeats
            script = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(script, Exception):
            raise script
        return None if script is None else Fetched(url, script)

    @property
    def data_calls(self) -> list[str]:
        """The data URLs asked for, metadata polls left out."""
        return [c for c in self.calls if c != "metadata"]


@dataclass
class ScriptedGithub:
    """GitHub raw files by name; an ETag echoes back as 304."""

    files: dict[str, Script] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    async def fetch(self, repo: GithubRepo, file: str, etag: str | None) -> Fetched | NotModified:
        url = f"http://github.test/{repo.value}/{file}"
        self.calls.append(file)
        script = self.files.get(file)
        if isinstance(script, Exception):
            raise script
        if script is None:
            raise AssertionError(f"GitHub has no script for {file}")
        tag = f'"{hash(script)}"'
        if etag == tag:
            return NotModified(url, etag)
        return Fetched(url, script, tag)


@dataclass
class MemoryPublisher:
    """A replica in a dict: what is published, how often, and the states saved."""

    files: dict[str, bytes] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)
    fail_state: bool = False

    def read(self, relpath: str) -> bytes | None:
        return self.files.get(relpath)

    def digest(self, relpath: str) -> str | None:
        content = self.files.get(relpath)
        return None if content is None else sha256_hex(content)

    def holds(self, relpath: str, content: bytes) -> bool:
        return self.files.get(relpath) == content

    def publish(self, relpath: str, content: bytes, *, unchanged: bool) -> bool:
        if unchanged:
            return False
        self.files[relpath] = content
        self.writes.append(relpath)
        return True

    def save_state(self, state: ReplicaState, *, durable: bool) -> None:
        if self.fail_state:
            raise StoreError("cannot write state.json: No space left on device")
        self.saved.append(state.model_dump_json())


def memory_backend(
    tmp_path: Path,
    categories: tuple[MODEL_REFERENCE_CATEGORY, ...],
    clock: FakeClock,
    *,
    ttl: int | None = 3600,
    backend_type: type[ReplicaDirectoryBackend] = ReplicaDirectoryBackend,
) -> ReplicaDirectoryBackend:
    """The real REPLICA backend; its validation files live where nothing is ever written."""
    store = ReplicaStore(tmp_path / "nothing-here", tmp_path / "nothing-here-state")
    return backend_type(store, categories=categories, cache_ttl_seconds=ttl, clock=clock)


class AgreeingEngine(SyncEngine):
    """The engine, checking after every run that its cache and its state agree on each layer."""

    async def run(self, *, force: bool = False) -> SyncReport:
        report = await super().run(force=force)
        disagree = self.disagreements(report)
        assert not disagree, f"the cache and the state disagree on {disagree}"
        return report


def engine_for(
    cache: ReplicaDirectoryBackend,
    publisher: MemoryPublisher,
    *,
    primary: ScriptedPrimary | None,
    github: ScriptedGithub | None = None,
    clock: FakeClock,
    state: ReplicaState | None = None,
    run_timeout_seconds: float = 5.0,
    dry_run: bool = False,
    shrink: float | None = 0.5,
    catalogs: tuple[Catalog, ...] = (),
    catalog_ttl: float | None = 3600,
) -> SyncEngine:
    """A sync engine over the fakes, configured for `cache.categories` and `catalogs`; every
    run checks that the cache and the state agree (`SyncEngine.disagreements`)."""
    chain = SourceChain(
        primary, github, github_fallback=github is not None, max_shrink_fraction=shrink
    )
    options = SyncOptions(
        categories=(*cache.categories, *catalogs),
        max_concurrency=4,
        run_timeout_seconds=run_timeout_seconds,
        catalog_rules=CatalogRules(ttl_seconds=catalog_ttl, max_shrink_fraction=shrink),
    )
    return AgreeingEngine(
        cache,
        chain,
        publisher,
        primary=primary,
        options=options,
        state=state if state is not None else ReplicaState(),
        dry_run=dry_run,
        clock=clock,
    )
