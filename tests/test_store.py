"""The replica store and its publisher: atomic publish, no needless rewrites, temp cleanup,
lock, state."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from horde_replica_sync.catalogs import Catalog
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.errors import LockHeldError, SourceName, StoreError
from horde_replica_sync.publish import ComparingPublisher, StorePublisher
from horde_replica_sync.state import FileRecord, LastOutcome, ReplicaState
from horde_replica_sync.store import ReplicaStore


@pytest.fixture(name="store")
def _store(tmp_path: Path) -> ReplicaStore:
    return ReplicaStore(tmp_path / "replica", tmp_path / "state")


class TestPublish:
    """Publishing through the store's publisher is atomic and writes only changed bytes."""

    def test_publish_creates_directories_and_file(self, store: ReplicaStore) -> None:
        """A first publish creates the tree, with a file readers of any user can read."""
        assert publish(store, "legacy/esrgan.json", b"{}")
        path = store.path("legacy/esrgan.json")
        assert path.read_bytes() == b"{}"
        assert path.stat().st_mode & 0o777 == 0o644

    def test_same_bytes_are_not_rewritten(self, store: ReplicaStore) -> None:
        """Publishing identical bytes keeps the inode and mtime readers watch."""
        publish(store, "esrgan.json", b'{"a": {"name": "a"}}')
        before = store.path("esrgan.json").stat()
        assert not publish(store, "esrgan.json", b'{"a": {"name": "a"}}')
        after = store.path("esrgan.json").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    def test_new_bytes_replace_the_file(self, store: ReplicaStore) -> None:
        """New bytes arrive through a rename: a new inode, never an in-place edit."""
        publish(store, "esrgan.json", b"{}")
        before = store.path("esrgan.json").stat().st_ino
        assert publish(store, "esrgan.json", b'{"b": {"name": "b"}}')
        assert store.path("esrgan.json").stat().st_ino != before
        assert not list(store.replica_dir.glob(".*"))

    def test_failure_keeps_the_old_file_and_no_temp(self, store: ReplicaStore) -> None:
        """When the write cannot happen, the error names the path and nothing is left behind."""
        publish(store, "esrgan.json", b"{}")
        store.path("legacy").write_text("a file where a directory should be")
        with pytest.raises(StoreError, match=r"legacy/esrgan\.json"):
            publish(store, "legacy/esrgan.json", b"{}")
        assert store.path("esrgan.json").read_bytes() == b"{}"
        assert not list(store.replica_dir.rglob("*.hrs-tmp"))

    def test_a_dry_run_compares_and_writes_nothing(self, store: ReplicaStore) -> None:
        """The dry run's publisher says what would change and leaves the replica alone."""
        publish(store, "esrgan.json", b"{}")
        dry = ComparingPublisher(store)
        assert dry.publish("esrgan.json", b"[]", unchanged=dry.holds("esrgan.json", b"[]"))
        assert not dry.publish("esrgan.json", b"{}", unchanged=dry.holds("esrgan.json", b"{}"))
        assert store.path("esrgan.json").read_bytes() == b"{}"

    def test_stale_temps_are_removed(self, store: ReplicaStore) -> None:
        """Temp files a killed process left behind are deleted; data files are not."""
        publish(store, "esrgan.json", b"{}")
        publish(store, "legacy/esrgan.json", b"{}")
        stale = [
            store.path(".esrgan.json.abc123.hrs-tmp"),
            store.path("legacy/.esrgan.json.def456.hrs-tmp"),
        ]
        for path in stale:
            path.write_bytes(b"{partial")
        assert sorted(store.remove_stale_temps()) == sorted(stale)
        assert store.path("esrgan.json").exists()
        assert store.path("legacy/esrgan.json").exists()


def publish(store: ReplicaStore, relpath: str, content: bytes) -> bool:
    """Publish as the engine does: the publisher writes what the store does not hold yet."""
    publisher = StorePublisher(store)
    return publisher.publish(relpath, content, unchanged=publisher.holds(relpath, content))


class TestLock:
    """One writer per replica."""

    def test_second_holder_is_refused_with_the_pid(self, store: ReplicaStore) -> None:
        """A second lock on the same replica fails, naming the directory and the holder."""
        with store.locked():
            other = ReplicaStore(store.replica_dir, store.state_dir)
            with pytest.raises(LockHeldError, match=f"pid {os.getpid()}"), other.locked():
                pass

    def test_lock_is_released(self, store: ReplicaStore) -> None:
        """After the holder leaves, the lock can be taken again."""
        with store.locked():
            pass
        with store.locked():
            pass


class TestState:
    """The state file round-trips and never blocks a start."""

    def test_round_trip(self, store: ReplicaStore) -> None:
        """What is saved is what is loaded."""
        state = ReplicaState()
        layer = state.layer(C.esrgan, Layer.V2)
        layer.files["esrgan.json"] = FileRecord(sha256="0" * 64, size=2, etag='"x"')
        layer.source, layer.records, layer.upstream_last_updated = SourceName.PRIMARY, 3, 1000
        store.save_state(state)
        assert store.load_state() == state

    def test_an_old_state_file_loads_its_outcomes(self, store: ReplicaStore) -> None:
        """A state file as earlier releases wrote it (outcomes as plain strings, `ok` for
        updated and unchanged) loads into the enum, and is saved with the same strings."""
        store.state_dir.mkdir(parents=True)
        store.state_path.write_text(json.dumps(OLD_STATE, indent=2), encoding="utf-8")
        state = store.load_state()
        stored = [state.layer(name, layer).last_outcome for name, layer in OLD_LAYERS]
        assert stored == [LastOutcome.OK, LastOutcome.REFUSED, LastOutcome.FAILED]
        assert all(isinstance(outcome, LastOutcome) for outcome in stored)
        assert state.layer(C.gfpgan, LEGACY).last_outcome is LastOutcome.ABSENT
        assert state.layer(Catalog.baselines, Layer.CATALOG).last_outcome is LastOutcome.OK
        assert [state.layer(name, layer).last_failed for name, layer in OLD_LAYERS] == [
            False,
            True,
            True,
        ]
        store.save_state(state)
        saved = json.loads(store.state_path.read_bytes())
        assert saved["categories"]["esrgan"]["v2"]["last_outcome"] == "ok"
        assert saved["categories"]["gfpgan"]["legacy"]["last_outcome"] == "absent"
        assert saved["catalogs"]["baselines"]["last_outcome"] == "ok"

    @pytest.mark.parametrize(
        "content", [b"", b"{not json", b'{"schema_version": 99}', b'{"categories": {"nope": {}}}']
    )
    def test_bad_state_starts_empty(self, store: ReplicaStore, content: bytes) -> None:
        """A missing, corrupt or foreign state file is replaced by an empty state."""
        store.state_dir.mkdir(parents=True)
        store.state_path.write_bytes(content)
        assert store.load_state() == ReplicaState()


V2, LEGACY = Layer.V2, Layer.LEGACY
OLD_LAYERS = ((C.esrgan, V2), (C.esrgan, LEGACY), (C.gfpgan, V2))
# What releases before the outcome enum wrote (a subset of fields: the rest take defaults).
OLD_STATE = {
    "schema_version": 1,
    "categories": {
        "esrgan": {
            "v2": {"files": {}, "source": "primary", "last_outcome": "ok", "last_error": None},
            "legacy": {"source": "primary", "last_outcome": "refused", "last_error": "shrink"},
        },
        "gfpgan": {
            "v2": {"last_outcome": "failed", "last_error": "http://x/: timeout"},
            "legacy": {"last_outcome": "absent", "last_error": None},
        },
    },
    "catalogs": {"baselines": {"source": "primary", "last_outcome": "ok"}},
    "hook_due": [],
}
