"""`horde-replica-sync sync --once` as operators run it: a real process, real sockets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.store import ReplicaStore
from tests.faultserver import FaultServer, Reply, records, running, script_primary, v2_path
from tests.processes import run_cli


@pytest.fixture(name="server")
def _server() -> Iterator[FaultServer]:
    with running() as server:
        script_primary(server)
        yield server


def sync_args(server: FaultServer, replica: Path, *extra: str) -> list[str]:
    """`sync --once` against `server` into `replica`."""
    return [
        "sync",
        "--once",
        "--primary-url",
        f"{server.url}/api",
        "--no-fallback",
        "--replica-dir",
        str(replica),
        *extra,
    ]


class TestExitCodes:
    """The exit code is the result, so scripts and timers can act on it."""

    def test_success_exits_0_with_a_table(self, server: FaultServer, tmp_path: Path) -> None:
        """A clean sync exits 0 and prints one row per category and layer."""
        result = run_cli(*sync_args(server, tmp_path / "r", "--categories", "esrgan,lora"))
        assert result.returncode == 0, result.stderr
        rows = result.stdout.splitlines()
        assert rows[1].split()[:4] == ["esrgan", "v2", "updated", "primary"]
        assert rows[-1].startswith("sync ok")
        assert (tmp_path / "r" / "lora.json").read_bytes() == records(C.lora, 4)

    def test_failed_category_exits_75_naming_it(self, server: FaultServer, tmp_path: Path) -> None:
        """One broken category exits 75; the outage line names category, URL and reason."""
        server.script(v2_path(C.esrgan), Reply(500))
        result = run_cli(*sync_args(server, tmp_path / "r", "--categories", "esrgan,blip"))
        assert result.returncode == 75
        events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
        (outage,) = [e for e in events if e.get("event") == "sync.outage"]
        assert outage["layers_failing"] == ["esrgan/v2"]
        assert f"{server.url}/api/model_references/v2/esrgan" in outage["reason"]
        assert "HTTP 500" in outage["reason"]
        assert "esrgan" in result.stdout and "HTTP 500" in result.stdout
        assert (tmp_path / "r" / "blip.json").exists()

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (["--primary-url", "ftp://example"], "primary_url (env HORDE_REPLICA_PRIMARY_URL"),
            (["--categories", "esrgan,nope"], "unknown category 'nope'"),
            (["--no-primary", "--no-fallback"], "nothing to sync from"),
        ],
    )
    def test_bad_config_exits_78_before_io(
        self, tmp_path: Path, args: list[str], needle: str
    ) -> None:
        """A broken setting exits 78 with a message naming it, and touches no file."""
        replica = tmp_path / "r"
        result = run_cli("sync", "--once", "--replica-dir", str(replica), *args)
        assert result.returncode == 78
        assert needle in result.stderr
        assert not replica.exists()

    def test_second_writer_exits_75(self, server: FaultServer, tmp_path: Path) -> None:
        """While another process holds the replica, a sync refuses to race it."""
        replica = tmp_path / "r"
        with ReplicaStore(replica, replica / ".state").locked():
            result = run_cli(*sync_args(server, replica))
        assert result.returncode == 75
        assert "already being synced by another horde-replica-sync" in result.stderr
        assert not (replica / "esrgan.json").exists()


class TestModes:
    """Dry runs and cleanups."""

    def test_dry_run_writes_nothing(self, server: FaultServer, tmp_path: Path) -> None:
        """--dry-run fetches and validates, reports what would change, and writes nothing."""
        replica = tmp_path / "r"
        result = run_cli(*sync_args(server, replica, "--dry-run", "--categories", "esrgan"))
        assert result.returncode == 0, result.stderr
        assert "updated" in result.stdout
        assert "dry run: nothing written" in result.stdout
        assert not replica.exists()

    def test_stale_temps_removed_at_start(self, server: FaultServer, tmp_path: Path) -> None:
        """Temp files left by a killed run are deleted by the next one."""
        replica = tmp_path / "r"
        (replica / "legacy").mkdir(parents=True)
        stale = replica / "legacy" / ".esrgan.json.x1y2.hrs-tmp"
        stale.write_bytes(b"{partial")
        result = run_cli(*sync_args(server, replica, "--categories", "esrgan"))
        assert result.returncode == 0, result.stderr
        assert not stale.exists()
        assert "store.stale_temp_removed" in result.stderr
