"""Empty path settings: an unset compose `${VAR}` is an empty value, never "the working directory".

Real `sync --once` processes in a scratch working directory, against the fault server: each
empty path exits 78 naming the variable (or flag, or key), and nothing is written anywhere.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from horde_replica_sync.cli import EXIT_CONFIG
from tests.environment import clean_env
from tests.faultserver import FaultServer, running, script_primary
from tests.processes import run_cli


@pytest.fixture(name="server")
def _server() -> Iterator[FaultServer]:
    with running() as server:
        script_primary(server)
        yield server


def sync_in(
    cwd: Path, server: FaultServer, *args: str, **env: str | None
) -> subprocess.CompletedProcess[str]:
    """`sync --once` for esrgan, run in `cwd`, the replica elsewhere unless told otherwise
    (a variable given as None is left unset)."""
    base = clean_env(
        HORDE_REPLICA_PRIMARY_URL=f"{server.url}/api",
        HORDE_REPLICA_GITHUB_FALLBACK="false",
        HORDE_REPLICA_CATEGORIES="esrgan",
        HORDE_REPLICA_REPLICA_DIR=str(cwd.parent / "replica"),
        XDG_CONFIG_HOME=str(cwd.parent / "xdg"),
    )
    variables = {k: v for k, v in {**base, **env}.items() if v is not None}
    return run_cli("sync", "--once", *args, env=variables, cwd=cwd)


@pytest.fixture(name="cwd")
def _cwd(tmp_path: Path) -> Path:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return cwd


class TestEmptyPaths:
    """Each empty path setting exits 78 naming where it came from; nothing is written."""

    @pytest.mark.parametrize(
        "variable",
        [
            "HORDE_REPLICA_REPLICA_DIR",
            "HORDE_REPLICA_STATE_DIR",
            "HORDE_REPLICA_CA_BUNDLE",
            "HORDE_REPLICA_CONFIG",
        ],
    )
    def test_empty_variable(self, server: FaultServer, cwd: Path, variable: str) -> None:
        """`VAR=` (what compose makes of an unset `${VAR}`): exit 78 naming VAR."""
        result = sync_in(cwd, server, **{variable: ""})
        assert result.returncode == EXIT_CONFIG, result.stdout + result.stderr
        assert variable in result.stderr
        assert "empty" in result.stderr
        assert list(cwd.iterdir()) == []
        assert not (cwd.parent / "replica").exists()

    @pytest.mark.parametrize(
        ("flag", "named"),
        [
            ("--replica-dir", "--replica-dir"),
            ("--state-dir", "--state-dir"),
            ("--config", "--config"),
        ],
    )
    def test_empty_flag(self, server: FaultServer, cwd: Path, flag: str, named: str) -> None:
        """`--replica-dir ''` is not `.`: exit 78 naming the flag."""
        result = sync_in(cwd, server, flag, "")
        assert result.returncode == EXIT_CONFIG, result.stdout + result.stderr
        assert named in result.stderr
        assert "empty" in result.stderr
        assert list(cwd.iterdir()) == []

    def test_empty_key_in_the_config_file(self, server: FaultServer, cwd: Path) -> None:
        """`replica_dir = ""` in the TOML file: exit 78 naming the key."""
        config = cwd.parent / "config.toml"
        config.write_text('replica_dir = ""\n')
        result = sync_in(cwd, server, "--config", str(config), HORDE_REPLICA_REPLICA_DIR=None)
        assert result.returncode == EXIT_CONFIG, result.stdout + result.stderr
        assert "replica_dir" in result.stderr
        assert "empty" in result.stderr
        assert list(cwd.iterdir()) == []

    def test_dot_is_still_the_working_directory(self, server: FaultServer, cwd: Path) -> None:
        """An explicit `.` is a choice, not an accident: it still means the working directory."""
        result = sync_in(cwd, server, HORDE_REPLICA_REPLICA_DIR=".")
        assert result.returncode == 0, result.stdout + result.stderr
        assert (cwd / "esrgan.json").is_file()
