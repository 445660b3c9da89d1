"""Hostile things at the replica's paths: the store never follows, hangs on or clobbers them.

Real `sync --once` processes on a real directory, against the fault server. Whoever can write
the replica directory must not be able to make the daemon's user overwrite another file, hang a
run or exhaust its memory.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from horde_replica_sync import store as store_module
from horde_replica_sync.cli import EXIT_CANTCREAT, EXIT_TEMPFAIL
from horde_replica_sync.errors import StoreError
from horde_replica_sync.store import LOCK_FILE, ReplicaStore
from tests.faultserver import FaultServer, running, script_primary

RUN_TIMEOUT = 30.0
ADDRESS_SPACE = 1024 * 1024 * 1024  # ample for a sync, far below what /dev/zero would fill


@pytest.fixture(name="server")
def _server() -> Iterator[FaultServer]:
    with running() as server:
        script_primary(server)
        yield server


def _bounded() -> None:
    # Runs in the child: a read of /dev/zero dies with MemoryError instead of taking the host.
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def without_root_overrides() -> list[str]:
    """A command prefix under which root, too, obeys file permissions (no DAC override)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def sync_once(
    server: FaultServer, replica: Path, *, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`sync --once` for esrgan and blip, bounded in time and memory."""
    argv = [
        *prefix,
        sys.executable,
        "-m",
        "horde_replica_sync",
        "sync",
        "--once",
        "--primary-url",
        f"{server.url}/api",
        "--no-fallback",
        "--replica-dir",
        str(replica),
        "--categories",
        "esrgan,blip",
    ]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
        preexec_fn=_bounded,
    )


def row(result: subprocess.CompletedProcess[str], category: str, layer: str) -> str:
    """The report's row for one category and layer."""
    for line in result.stdout.splitlines():
        if line.split()[:2] == [category, layer]:
            return line
    pytest.fail(f"no row {category} {layer} in:\n{result.stdout}\n{result.stderr}")


class TestLockFile:
    """The lock is ours, a regular file, or the daemon refuses to start (permanently)."""

    def test_symlinked_lock_leaves_the_victim_untouched(
        self, server: FaultServer, tmp_path: Path
    ) -> None:
        """A lock symlinked to another file: exit 73 naming the path, the victim unchanged."""
        replica = tmp_path / "r"
        replica.mkdir()
        victim = tmp_path / "victim.conf"
        victim.write_text("precious\n")
        (replica / LOCK_FILE).symlink_to(victim)
        result = sync_once(server, replica)
        assert victim.read_text() == "precious\n"
        assert result.returncode == EXIT_CANTCREAT, result.stderr
        assert str(replica / LOCK_FILE) in result.stderr
        assert "symlink" in result.stderr
        assert not (replica / "esrgan.json").exists()

    def test_fifo_lock_is_refused_without_hanging(
        self, server: FaultServer, tmp_path: Path
    ) -> None:
        """A FIFO lock path: refused at once, exit 73, naming it."""
        replica = tmp_path / "r"
        replica.mkdir()
        os.mkfifo(replica / LOCK_FILE)
        result = sync_once(server, replica)
        assert result.returncode == EXIT_CANTCREAT, result.stderr
        assert f"{replica / LOCK_FILE} is a FIFO" in result.stderr

    def test_hard_linked_lock_is_refused(self, server: FaultServer, tmp_path: Path) -> None:
        """A lock hard-linked to another file would truncate that file: refused, untouched."""
        replica = tmp_path / "r"
        replica.mkdir()
        victim = tmp_path / "victim.conf"
        victim.write_text("precious\n")
        os.link(victim, replica / LOCK_FILE)
        result = sync_once(server, replica)
        assert victim.read_text() == "precious\n"
        assert result.returncode == EXIT_CANTCREAT, result.stderr
        assert "hard link" in result.stderr

    def test_replica_dir_that_is_a_file_is_permanent(
        self, server: FaultServer, tmp_path: Path
    ) -> None:
        """A replica "directory" that is a regular file: exit 73 naming it, the file kept."""
        replica = tmp_path / "r"
        replica.write_text("not a directory\n")
        result = sync_once(server, replica)
        assert result.returncode == EXIT_CANTCREAT, result.stderr
        assert str(replica) in result.stderr
        assert replica.read_text() == "not a directory\n"

    @pytest.mark.parametrize(
        ("lock_mode", "dir_mode", "needle"),
        [
            pytest.param(0o000, 0o755, "cannot open the lock file", id="lock-not-openable"),
            pytest.param(None, 0o555, "cannot open the lock file", id="dir-not-writable"),
            pytest.param(0o644, 0o555, "is not writable", id="dir-not-writable-lock-exists"),
        ],
    )
    def test_permissions_are_permanent(
        self,
        server: FaultServer,
        tmp_path: Path,
        lock_mode: int | None,
        dir_mode: int,
        needle: str,
    ) -> None:
        """A lock or replica directory this user may not write: exit 73 naming the path."""
        replica = tmp_path / "r"
        replica.mkdir()
        if lock_mode is not None:
            (replica / LOCK_FILE).touch()
            (replica / LOCK_FILE).chmod(lock_mode)
        replica.chmod(dir_mode)
        try:
            result = sync_once(server, replica, prefix=tuple(without_root_overrides()))
        finally:
            replica.chmod(0o755)
        assert result.returncode == EXIT_CANTCREAT, result.stderr
        assert needle in result.stderr
        assert str(replica) in result.stderr
        assert not (replica / "esrgan.json").exists()

    def test_lock_held_by_a_live_process_stays_temporary(
        self, server: FaultServer, tmp_path: Path
    ) -> None:
        """Another daemon holding the lock is a wait, not a fault: 75, as before."""
        replica = tmp_path / "r"
        with ReplicaStore(replica, replica / ".state").locked():
            result = sync_once(server, replica)
        assert result.returncode == EXIT_TEMPFAIL, result.stderr


class TestTargets:
    """Something that is not a regular file at a target path fails its category only."""

    def test_fifo_at_a_target_fails_that_category(
        self, server: FaultServer, tmp_path: Path
    ) -> None:
        """A FIFO at esrgan.json: the run finishes, esrgan v2 fails naming it, blip is fine."""
        replica = tmp_path / "r"
        replica.mkdir()
        os.mkfifo(replica / "esrgan.json")
        result = sync_once(server, replica)
        assert result.returncode == EXIT_TEMPFAIL, result.stderr
        esrgan = row(result, "esrgan", "v2")
        assert "failed" in esrgan
        assert f"{replica / 'esrgan.json'} is a FIFO" in esrgan
        assert "updated" in row(result, "blip", "v2")
        assert (replica / "esrgan.json").is_fifo()

    def test_symlink_to_dev_zero_at_a_target(self, server: FaultServer, tmp_path: Path) -> None:
        """A symlink to /dev/zero: never read, the run finishes within 1 GiB of address space."""
        replica = tmp_path / "r"
        (replica / "legacy").mkdir(parents=True)
        (replica / "legacy" / "esrgan.json").symlink_to("/dev/zero")
        result = sync_once(server, replica)
        assert result.returncode == EXIT_TEMPFAIL, result.stderr
        esrgan = row(result, "esrgan", "legacy")
        assert "a symlink to a character device" in esrgan
        assert str(replica / "legacy" / "esrgan.json") in esrgan
        assert "updated" in row(result, "esrgan", "v2")
        assert "updated" in row(result, "blip", "legacy")

    def test_directory_at_a_target_fails_that_category(
        self, server: FaultServer, tmp_path: Path
    ) -> None:
        """A directory at blip.json: blip v2 fails naming it, the directory and esrgan fine."""
        replica = tmp_path / "r"
        (replica / "blip.json").mkdir(parents=True)
        (replica / "blip.json" / "keep").write_text("x")
        result = sync_once(server, replica)
        assert result.returncode == EXIT_TEMPFAIL, result.stderr
        blip = row(result, "blip", "v2").lower()
        assert f"{replica / 'blip.json'}" in blip
        assert "is a directory" in blip
        assert "updated" in row(result, "esrgan", "v2")
        assert (replica / "blip.json" / "keep").read_text() == "x"

    def test_symlink_to_a_regular_file_is_replaced_not_written_through(
        self, server: FaultServer, tmp_path: Path
    ) -> None:
        """A symlink to a regular file: compared through, then replaced by our own file."""
        replica = tmp_path / "r"
        replica.mkdir()
        elsewhere = tmp_path / "elsewhere.json"
        elsewhere.write_text("{}\n")
        (replica / "esrgan.json").symlink_to(elsewhere)
        result = sync_once(server, replica)
        assert result.returncode == 0, result.stdout + result.stderr
        assert elsewhere.read_text() == "{}\n"
        assert not (replica / "esrgan.json").is_symlink()
        assert (replica / "esrgan.json").stat().st_size > 2


class TestStoreInProcess:
    """The same rules, fast, through the store's own API."""

    def test_read_never_opens_a_fifo(self, tmp_path: Path) -> None:
        """read() of a FIFO returns None at once (a blocking open would hang here)."""
        store = ReplicaStore(tmp_path, tmp_path / ".state")
        os.mkfifo(tmp_path / "esrgan.json")
        assert store.read("esrgan.json") is None

    def test_write_refuses_a_device_symlink(self, tmp_path: Path) -> None:
        """write() over a symlink to /dev/null: a StoreError naming the path and what it is."""
        store = ReplicaStore(tmp_path, tmp_path / ".state")
        (tmp_path / "esrgan.json").symlink_to("/dev/null")
        with pytest.raises(StoreError, match=r"esrgan\.json is a symlink to a character device"):
            store.write("esrgan.json", b"{}")

    def test_state_file_fifo_loads_empty_and_save_fails(self, tmp_path: Path) -> None:
        """A FIFO state file: loading does not hang (empty state), saving names it."""
        store = ReplicaStore(tmp_path, tmp_path / ".state")
        store.state_dir.mkdir()
        os.mkfifo(store.state_path)
        state = store.load_state()
        assert state.categories == {}
        with pytest.raises(StoreError, match=r"state\.json is a FIFO"):
            store.save_state(state)

    def test_a_directory_named_like_a_temp_is_left_alone(self, tmp_path: Path) -> None:
        """Start-up cleanup removes our stale temp files, not a directory that looks like one."""
        store = ReplicaStore(tmp_path, tmp_path / ".state")
        (tmp_path / ".esrgan.json.x.hrs-tmp").mkdir()
        (tmp_path / ".blip.json.y.hrs-tmp").write_bytes(b"partial")
        assert store.remove_stale_temps() == [tmp_path / ".blip.json.y.hrs-tmp"]
        assert (tmp_path / ".esrgan.json.x.hrs-tmp").is_dir()

    def test_a_replica_dir_swapped_while_locked_is_never_written(self, tmp_path: Path) -> None:
        """The replica directory moved away and a symlink to another directory put in its
        place while the daemon holds the lock: writing there would land outside the replica,
        past the lock (a second daemon could lock the new place). Refused, naming the path."""
        replica, elsewhere = tmp_path / "replica", tmp_path / "elsewhere"
        elsewhere.mkdir()
        store = ReplicaStore(replica, tmp_path / ".state")
        with store.locked():
            store.write("esrgan.json", b"{}")
            replica.rename(tmp_path / "replica.old")
            replica.symlink_to(elsewhere)
            with pytest.raises(StoreError, match=r"replica.* is no longer the directory"):
                store.write("esrgan.json", b'{"a": 1}')
        assert list(elsewhere.iterdir()) == []
        assert (tmp_path / "replica.old" / "esrgan.json").read_bytes() == b"{}"

    def test_a_swap_between_the_check_and_the_rename_cannot_redirect_the_write(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The replica is swapped for a symlink to another directory just after the check that
        it is still ours (inside the write, before the temp file and the rename): the write
        lands in our own directory, wherever it now is, never in the other one."""
        replica, elsewhere = tmp_path / "replica", tmp_path / "elsewhere"
        elsewhere.mkdir()
        store = ReplicaStore(replica, tmp_path / ".state")
        checked = store_module._refuse_foreign_target

        def swap_then_check(*args: Any, **kwargs: Any) -> None:
            if not replica.is_symlink():
                replica.rename(tmp_path / "replica.old")
                replica.symlink_to(elsewhere)
            checked(*args, **kwargs)

        with store.locked():
            store.write("esrgan.json", b"{}")
            monkeypatch.setattr(store_module, "_refuse_foreign_target", swap_then_check)
            with contextlib.suppress(StoreError):
                store.write("legacy/esrgan.json", b'{"a": 1}')
        assert list(elsewhere.iterdir()) == []
        assert (tmp_path / "replica.old" / "esrgan.json").read_bytes() == b"{}"

    def test_a_deleted_replica_dir_is_recreated_and_relocked(self, tmp_path: Path) -> None:
        """Deleted while locked: the next write re-creates it, with our lock, and writes."""
        replica = tmp_path / "replica"
        store = ReplicaStore(replica, replica / ".state")
        with store.locked():
            store.write("esrgan.json", b"{}")
            shutil.rmtree(replica)
            store.write("legacy/esrgan.json", b'{"a": 1}')
            store.save_state(store.load_state())
            assert (replica / "legacy" / "esrgan.json").read_bytes() == b'{"a": 1}'
            assert (replica / LOCK_FILE).read_text() == f"{os.getpid()}\n"
            assert (replica / ".state" / "state.json").is_file()

    @pytest.mark.parametrize("put_back", ["symlink", "non-empty", "file"])
    def test_what_took_a_deleted_replica_dirs_place_is_never_adopted(
        self, tmp_path: Path, put_back: str
    ) -> None:
        """Deleted, and a symlink, a directory holding something or a file put in its place:
        refused, naming the path; nothing written there."""
        replica, elsewhere = tmp_path / "replica", tmp_path / "elsewhere"
        elsewhere.mkdir()
        store = ReplicaStore(replica, tmp_path / ".state")
        with store.locked():
            shutil.rmtree(replica)
            if put_back == "symlink":
                replica.symlink_to(elsewhere)
            elif put_back == "non-empty":
                replica.mkdir()
                (replica / "theirs").write_text("x")
            else:
                replica.write_text("x")
            with pytest.raises(StoreError, match=r"was deleted while the daemon ran"):
                store.write("esrgan.json", b"{}")
        assert list(elsewhere.iterdir()) == []
        assert not (replica / "esrgan.json").exists()
