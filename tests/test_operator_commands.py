"""`status` and `check-config`: what operators read without a running daemon."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from horde_replica_sync.catalogs import ALL_NAMES
from horde_replica_sync.freshness import layer_keys
from tests.environment import free_port
from tests.faultserver import FaultServer, running, script_primary
from tests.processes import run_cli


@pytest.fixture(name="server")
def _server() -> Iterator[FaultServer]:
    with running() as server:
        script_primary(server)
        yield server


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter with a clean settings environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HORDE_REPLICA_")}
    base["XDG_CONFIG_HOME"] = "/nonexistent"  # never pick up a developer's own config
    return run_cli(*args, env={**base, **(env or {})})


class TestStatus:
    """`status` reports every layer and fails when one is missing or stale."""

    def test_missing_replica_exits_1(self, tmp_path: Path) -> None:
        """Before any sync every layer is missing, and the exit code says so."""
        result = cli("status", "--replica-dir", str(tmp_path / "r"), "--categories", "esrgan")
        assert result.returncode == 1
        assert "missing" in result.stdout

    def test_after_sync_everything_is_fresh(self, server: FaultServer, tmp_path: Path) -> None:
        """After a sync, --json lists each layer with source, size and digest, and exits 0."""
        replica = str(tmp_path / "r")
        common = ["--replica-dir", replica, "--categories", "esrgan,lora"]
        synced = cli("sync", "--once", "--primary-url", f"{server.url}/api", *common)
        assert synced.returncode == 0, synced.stderr
        result = cli("status", "--json", *common)
        assert result.returncode == 0, result.stdout
        document = json.loads(result.stdout)
        assert document["ok"] is True
        rows = {(r["category"], r["layer"]): r for r in document["layers"]}
        assert set(rows) == {("esrgan", "v2"), ("esrgan", "legacy"), ("lora", "v2")}
        esrgan = rows[("esrgan", "v2")]
        assert esrgan["source"] == "primary"
        assert esrgan["size"] == (tmp_path / "r" / "esrgan.json").stat().st_size
        assert len(esrgan["sha256"]) == 64
        assert esrgan["upstream_last_updated"] == 1000
        table = cli("status", *common)
        assert table.returncode == 0
        assert "esrgan" in table.stdout

    def test_stale_layer_exits_1(self, server: FaultServer, tmp_path: Path) -> None:
        """A layer last verified longer ago than max_staleness_seconds is reported stale."""
        replica = str(tmp_path / "r")
        common = ["--replica-dir", replica, "--categories", "esrgan"]
        assert cli("sync", "--once", "--primary-url", f"{server.url}/api", *common).returncode == 0
        state_path = tmp_path / "r" / ".horde-replica-sync" / "state.json"
        state = json.loads(state_path.read_text())
        state["categories"]["esrgan"]["v2"]["verified_at"] -= 120  # verified two minutes ago
        state_path.write_text(json.dumps(state))
        result = cli("status", *common, env={"HORDE_REPLICA_MAX_STALENESS_SECONDS": "60"})
        assert result.returncode == 1
        assert "stale (older than 60 s)" in result.stdout


class TestCheckConfig:
    """`check-config` shows the effective value of every setting and where it came from."""

    def test_provenance(self, tmp_path: Path) -> None:
        """Defaults, file, environment and flags are each named as the origin."""
        config = tmp_path / "config.toml"
        config.write_text('interval_seconds = 30\nprimary_url = "http://file.example/api"\n')
        result = cli(
            "check-config",
            "--json",
            "--config",
            str(config),
            "--replica-dir",
            str(tmp_path / "r"),
            env={"HORDE_REPLICA_PRIMARY_URL": "http://env.example/api"},
        )
        assert result.returncode == 0, result.stderr
        values = json.loads(result.stdout)
        assert values["interval_seconds"] == {"value": 30.0, "from": f"file {config}"}
        assert values["primary_url"] == {
            "value": "http://env.example/api",
            "from": "env HORDE_REPLICA_PRIMARY_URL",
        }
        assert values["replica_dir"]["from"] == "flag --replica-dir"
        assert values["max_concurrency"] == {"value": 4, "from": "default"}

    def test_invalid_config_file_exits_78(self, tmp_path: Path) -> None:
        """A bad value in the file is named with its env var, before anything else happens."""
        config = tmp_path / "config.toml"
        config.write_text("max_concurrency = 0\n")
        result = cli("check-config", "--config", str(config))
        assert result.returncode == 78
        assert "max_concurrency (env HORDE_REPLICA_MAX_CONCURRENCY)" in result.stderr

    def test_config_env_var_must_exist(self, tmp_path: Path) -> None:
        """HORDE_REPLICA_CONFIG pointing nowhere is an error, not silently ignored."""
        result = cli("check-config", env={"HORDE_REPLICA_CONFIG": str(tmp_path / "nope.toml")})
        assert result.returncode == 78
        assert "nope.toml" in result.stderr


class TestWhere:
    """`status`, `check-config` and `sync` say which replica, state and config they use."""

    def test_default_replica_is_in_the_users_cache_from_any_directory(
        self, server: FaultServer, tmp_path: Path
    ) -> None:
        """No AIWORKER_CACHE_HOME: sync and status use ~/.cache/horde_model_reference, not the
        working directory, and print it with the rule and the config files searched."""
        home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
        elsewhere.mkdir()
        env = {"HOME": str(home), "XDG_CONFIG_HOME": "", "XDG_CACHE_HOME": ""}
        env_without_cache_home = {k: v for k, v in os.environ.items() if k != "AIWORKER_CACHE_HOME"}
        replica = home / ".cache" / "horde_model_reference"
        common = ["--primary-url", f"{server.url}/api", "--categories", "esrgan"]

        def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
            return run_cli(*args, env={**env_without_cache_home, **env}, cwd=cwd)

        synced = run("sync", "--once", *common, cwd=tmp_path)
        assert synced.returncode == 0, synced.stderr
        assert (replica / "esrgan.json").is_file()
        assert f"replica: {replica} (default: ~/.cache/horde_model_reference" in synced.stderr
        shown = run("status", "--categories", "esrgan", cwd=elsewhere)
        assert shown.returncode == 0, shown.stdout
        lines = shown.stdout.splitlines()
        assert lines[0].startswith(f"replica: {replica} ")
        assert lines[1].startswith(f"state:   {replica / '.horde-replica-sync' / 'state.json'} ")
        searched = home / ".config" / "horde-replica-sync" / "config.toml"
        assert lines[2] == (
            f"config:  none (searched {searched}, /etc/horde-replica-sync/config.toml)"
        )
        document = json.loads(
            run("status", "--json", "--categories", "esrgan", cwd=elsewhere).stdout
        )
        assert document["paths"]["replica"].startswith(str(replica))
        checked = run("check-config", cwd=elsewhere).stdout.splitlines()
        assert checked[0].startswith(f"# replica: {replica} ")
        assert checked[2].startswith("# config:  none (searched ")
        assert not (tmp_path / "models").exists() and not (elsewhere / "models").exists()


class TestNothingServed:
    """No replica and no source: the log and `status` say so in plain words, with the root."""

    def test_one_log_line_and_one_status_line(self, tmp_path: Path) -> None:
        """One `sync.outage` says workers have no reference and why (root causes, no exception
        chain); `status` ends with one such line, its rows cut to the root, --json in full."""
        closed = f"http://127.0.0.1:{free_port()}"
        common = ["--replica-dir", str(tmp_path / "r")]
        synced = cli(
            "sync", "--once", "--primary-url", f"{closed}/api", "--github-url", closed, *common
        )
        assert synced.returncode == 75
        events = [json.loads(line) for line in synced.stderr.splitlines() if line.startswith("{")]
        (outage,) = [e for e in events if e["event"] == "sync.outage"]
        assert outage["workers"].startswith("have no model reference yet")
        assert outage["layers_failing"] == f"all {len(layer_keys(ALL_NAMES))}"  # 25 + 3 catalogs
        assert "ConnectError" not in outage["reason"] and "GitHub fallback" not in outage["reason"]
        assert outage["reason"].startswith(
            f"{closed}/api/model_references/v2/metadata/metadata: connection failed"
        )
        assert len(outage["reason"]) < 300, outage["reason"]

        shown = cli("status", *common)
        assert shown.returncode == 1
        last = shown.stdout.splitlines()[-1]
        assert last == (
            "workers have no model reference yet: nothing is published here; every source"
            f" failed: {closed}: connection failed"
        )
        assert "ConnectError" not in shown.stdout and "GitHub fallback" not in shown.stdout
        document = json.loads(cli("status", "--json", *common).stdout)
        assert document["nothing_served"] == last
        errors = [layer["last_error"] for layer in document["layers"]]
        assert any("ConnectError" in e and "GitHub fallback" in e for e in errors)

    def test_before_any_sync(self, tmp_path: Path) -> None:
        """Never synced: the line says so, and what to run."""
        shown = cli("status", "--replica-dir", str(tmp_path / "r"))
        assert shown.stdout.splitlines()[-1].endswith(
            "no sync has run yet (start the daemon, or run `horde-replica-sync sync --once`)"
        )
