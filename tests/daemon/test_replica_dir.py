"""The replica directory under a careless or hostile neighbour, with a real daemon running.

A directory deleted (or re-created empty) while the daemon runs, and a huge file renamed over
a published one by a worker who may write `legacy/`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Final

from tests.processes import DaemonProcess

Start = Callable[..., DaemonProcess]
GIB: Final = 1024 * 1024 * 1024
MIB: Final = 1024 * 1024


def wait_until(check: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """Poll `check` until true; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def runs_started_after(daemon: DaemonProcess, moment: float) -> list[dict[str, object]]:
    """The finished runs that started after the wall time `moment` (log time minus duration)."""
    return [
        run
        for run in daemon.matching("sync.run_done")
        if datetime.fromisoformat(str(run["timestamp"])).timestamp()
        - float(str(run["duration_seconds"]))
        >= moment
    ]


class TestHugeFiles:
    """A published file is read at most `max_body_bytes` deep: a larger one is foreign."""

    def test_sparse_file_over_a_published_one_costs_no_memory(
        self, start_daemon: Start, tmp_path: Path
    ) -> None:
        """A 1.5 GiB sparse file renamed over legacy/esrgan.json: the daemon's peak memory
        stays that of a good run, the file is counted foreign and replaced by ours."""
        daemon = start_daemon(HORDE_REPLICA_INTERVAL_SECONDS="1")
        daemon.wait_for("sync.run_done", ok=True)
        daemon.wait_for("sync.run_done", count=2)
        before = daemon.memory_kib()["VmHWM"]
        legacy = tmp_path / "replica" / "legacy"
        ours = (legacy / "esrgan.json").read_bytes()
        planted = legacy / ".planted"
        with planted.open("wb") as handle:
            handle.truncate(GIB + GIB // 2)
        planted.rename(legacy / "esrgan.json")
        runs = len(daemon.matching("sync.run_done"))
        daemon.wait_for("store.foreign_change", category="esrgan", layer="legacy", timeout=30)
        daemon.wait_for("sync.run_done", count=runs + 2, timeout=30)
        peak = daemon.memory_kib()["VmHWM"]
        print(f"peak RSS {before / 1024:.1f} MiB before, {peak / 1024:.1f} MiB after")
        assert peak < before + 32 * 1024, f"peak {peak} KiB, was {before} KiB"
        assert (legacy / "esrgan.json").read_bytes() == ours
        assert (
            daemon.sample("horde_replica_foreign_changes_total", category="esrgan", layer="legacy")
            == 1
        )
        assert daemon.stop() == 0


class TestDeletedReplica:
    """A replica directory deleted, or re-created empty, is re-created, re-locked and
    republished within one run; meanwhile `/readyz` says the files are missing."""

    def test_deleted_directory_is_recreated_and_republished(
        self, start_daemon: Start, tmp_path: Path
    ) -> None:
        """`rm -rf` of the replica: /readyz 503 naming the missing files at once, then the
        next run re-creates the directory, its lock and every file, and /readyz is 200."""
        replica = tmp_path / "replica"
        daemon = start_daemon(HORDE_REPLICA_INTERVAL_SECONDS="2")
        daemon.wait_for("sync.run_done", ok=True)
        assert daemon.get("/readyz")[0] == 200
        published = readers_files(replica)
        deleted_at = time.time()
        shutil.rmtree(replica)
        status, body = daemon.get("/readyz")
        assert status == 503, body
        assert "esrgan.json" in body
        wait_until(lambda: daemon.get("/readyz")[0] == 200, what="/readyz 200 again")
        assert len(runs_started_after(daemon, deleted_at)) <= 1  # repaired within one run
        assert readers_files(replica) >= published  # our state.json is saved after the data
        assert (replica / ".horde-replica-sync.lock").read_text().strip() == str(daemon.proc.pid)
        assert daemon.matching("store.replica_dir_recreated")
        assert daemon.get("/healthz")[0] == 200
        assert daemon.stop() == 0

    def test_recreated_empty_directory_is_adopted(
        self, start_daemon: Start, tmp_path: Path
    ) -> None:
        """`rm -rf replica && mkdir replica`: the empty directory is locked and filled."""
        replica = tmp_path / "replica"
        daemon = start_daemon(HORDE_REPLICA_INTERVAL_SECONDS="2")
        daemon.wait_for("sync.run_done", ok=True)
        shutil.rmtree(replica)
        replica.mkdir()
        assert daemon.get("/readyz")[0] == 503
        wait_until(lambda: daemon.get("/readyz")[0] == 200, what="/readyz 200 again")
        assert (replica / "esrgan.json").is_file()
        assert (replica / "legacy" / "esrgan.json").is_file()
        lock = replica / ".horde-replica-sync.lock"
        assert lock.read_text().strip() == str(daemon.proc.pid)
        assert daemon.stop() == 0

    def test_moved_directory_is_not_followed(self, start_daemon: Start, tmp_path: Path) -> None:
        """The replica moved away and a foreign directory (not empty) put in its place: never
        written, the runs fail naming the path, /readyz 503."""
        replica = tmp_path / "replica"
        daemon = start_daemon(HORDE_REPLICA_INTERVAL_SECONDS="1")
        daemon.wait_for("sync.run_done", ok=True)
        replica.rename(tmp_path / "replica.old")
        replica.mkdir()
        (replica / "theirs.txt").write_text("x")
        runs = len(daemon.matching("sync.run_done"))
        daemon.wait_for("sync.run_done", count=runs + 2)
        assert [p.name for p in replica.iterdir()] == ["theirs.txt"]
        assert daemon.get("/readyz")[0] == 503
        assert daemon.stop() == 0


def readers_files(replica: Path) -> set[Path]:
    """The files readers load (every JSON file but our own bookkeeping's)."""
    return {
        p.relative_to(replica)
        for p in replica.rglob("*.json")
        if p.relative_to(replica).parts[0] != ".horde-replica-sync"
    }
