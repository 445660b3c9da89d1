"""The install path of a worker host: the wheel, `install-files`, the version and changelog.

The closing test is the operator's first hour for real: the wheel built from this tree is
installed into a clean venv outside the repository, writes its unit (which systemd-analyze
verifies) and syncs from the real upstream PRIMARY into `~/.cache/horde_model_reference`, with
HOME a temporary directory and nothing else saying where the replica goes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from horde_replica_sync import __version__, cli, deploy
from tests.deploy.conftest import CONSOLE_SCRIPT, ROOT, require_tool
from tests.deploy.test_systemd import Unit, for_this_host
from tests.environment import clean_env
from tests.interop.peer import V2_FILES, Primary, start_primary

INSTALL_TIMEOUT_SECONDS: Final = 600.0
CHANGELOG: Final = ROOT / "CHANGELOG.md"
UNITS: Final = (
    "systemd/horde-replica-sync.service",
    "systemd/horde-replica-sync-once.service",
    "systemd/horde-replica-sync.timer",
)


def run(
    argv: list[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `argv`; fail the test with its output when it does not exit 0."""
    result = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
        check=False,
        cwd=cwd,
        env=env,
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, argv))} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )
    return result


def verify_units(directory: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` on the written units reports nothing."""
    analyze = require_tool("systemd-analyze")
    copies = []
    for rel in UNITS:
        copy = tmp_path / Path(rel).name
        copy.write_text(for_this_host(directory / rel, tmp_path), encoding="utf-8")
        copies.append(copy)
    result = subprocess.run(
        [analyze, "verify", *map(str, copies)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", f"systemd-analyze verify:\n{output}"


class TestInstallFiles:
    """`install-files DIR` writes every deployment file, the units starting this install."""

    def test_writes_every_file_with_the_real_console_script(self, tmp_path: Path) -> None:
        """Each file equals the repository's, except that the units start the console script."""
        target = tmp_path / "deploy"
        assert cli.main(["install-files", str(target), "--bin", str(CONSOLE_SCRIPT)]) == 0
        for rel in deploy.FILES:
            written = (target / rel).read_text(encoding="utf-8")
            original = (ROOT / rel).read_text(encoding="utf-8")
            assert written == original.replace(deploy.UNIT_BINARY, str(CONSOLE_SCRIPT)), rel
        daemon = Unit.read(target / "systemd/horde-replica-sync.service")
        assert daemon.one("ExecStart") == f"{CONSOLE_SCRIPT} run"
        once = Unit.read(target / "systemd/horde-replica-sync-once.service")
        assert once.one("ExecStartPost") == f"{CONSOLE_SCRIPT} status"
        verify_units(target, tmp_path)

    def test_every_repository_deployment_file_ships(self) -> None:
        """Nothing in systemd/ or config/ is left out of FILES but the dependency locks."""
        shipped = {
            str(p.relative_to(ROOT)) for d in ("systemd", "config") for p in (ROOT / d).iterdir()
        }
        locks = {"config/requirements.lock", "config/build-requirements.lock"}
        assert shipped - locks == set(deploy.FILES)

    def test_an_edited_file_is_not_overwritten(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A file the operator changed exits 73 naming it; --force overwrites; same bytes pass."""
        target = tmp_path / "deploy"
        assert cli.main(["install-files", str(target)]) == 0
        assert cli.main(["install-files", str(target)]) == 0  # identical: fine
        edited = target / "config/config.example.toml"
        edited.write_text("interval_seconds = 30\n", encoding="utf-8")
        assert cli.main(["install-files", str(target)]) == cli.EXIT_CANTCREAT
        assert f"{edited} exists and differs" in capsys.readouterr().err
        assert edited.read_text(encoding="utf-8") == "interval_seconds = 30\n"
        assert cli.main(["install-files", str(target), "--force"]) == 0
        assert edited.read_bytes() == (ROOT / "config/config.example.toml").read_bytes()

    def test_a_script_under_home_is_called_out(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """ProtectHome=yes hides /home and /root: the output says so instead of a unit that
        cannot start."""
        bin_path = "/home/someone/.local/bin/horde-replica-sync"
        assert cli.main(["install-files", str(tmp_path), "--bin", bin_path]) == 0
        assert f"warning: {bin_path} is under a home directory" in capsys.readouterr().out


class TestVersion:
    """One version, in `__init__.py`, that the wheel, the CLI and the changelog agree on."""

    def test_changelog_names_the_version(self) -> None:
        """CHANGELOG.md (Keep a Changelog) has the current version as its newest release."""
        text = CHANGELOG.read_text(encoding="utf-8")
        assert "https://keepachangelog.com/en/1.1.0/" in text
        releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", text, re.M)
        assert releases and releases[0] == __version__, releases

    def test_cli_reports_it(self) -> None:
        """`--version` prints it."""
        result = run([sys.executable, "-m", "horde_replica_sync", "--version"])
        assert result.stdout.strip() == f"horde-replica-sync {__version__}"


@pytest.fixture(name="primary", scope="module")
def _primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Primary]:
    """The real upstream PRIMARY 8.6.2 on 127.0.0.1."""
    server = start_primary(tmp_path_factory.mktemp("primary"))
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.peer
@pytest.mark.timeout(INSTALL_TIMEOUT_SECONDS * 2)
def test_wheel_in_a_clean_venv_installs_a_unit_and_syncs_into_the_users_cache(
    primary: Primary, tmp_path: Path
) -> None:
    """Wheel -> clean venv outside the repo -> install-files (verified unit) -> sync from the
    real PRIMARY into $HOME/.cache/horde_model_reference (HOME a temp dir) -> status ok."""
    outside, home, wheels = tmp_path / "host", tmp_path / "home", tmp_path / "wheels"
    outside.mkdir()
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, ROOT])
    (wheel,) = wheels.glob("horde_replica_sync-*.whl")
    assert wheel.name == f"horde_replica_sync-{__version__}-py3-none-any.whl"
    venv = outside / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=outside)
    pip_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    run(
        [venv / "bin/pip", "install", "-q", "-c", ROOT / "config/requirements.lock", wheel],
        cwd=outside,
        env=pip_env,
    )
    script = venv / "bin/horde-replica-sync"
    host_env = clean_env(HOME=str(home))
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "AIWORKER_CACHE_HOME", "PYTHONPATH"):
        host_env.pop(name, None)
    where = run([venv / "bin/python", "-c", "import horde_replica_sync as h; print(h.__file__)"])
    assert where.stdout.startswith(str(venv)), where.stdout  # the wheel, not this tree

    installed = run([script, "install-files", outside / "deploy"], cwd=outside, env=host_env)
    print(installed.stdout)
    unit = Unit.read(outside / "deploy/systemd/horde-replica-sync.service")
    assert unit.one("ExecStart") == f"{script} run"
    verify_units(outside / "deploy", tmp_path)

    sync = [script, "sync", "--once", "--no-fallback", "--primary-url", primary.base_url]
    synced = subprocess.run(
        list(map(str, sync)), capture_output=True, text=True, cwd=outside, env=host_env, timeout=120
    )
    assert synced.returncode == 0, synced.stdout + synced.stderr[-3000:]
    replica = home / ".cache" / "horde_model_reference"
    print(synced.stdout.splitlines()[-1])
    assert f"replica: {replica} (default: ~/.cache/horde_model_reference" in synced.stderr
    for name in V2_FILES.values():
        assert (replica / name).is_file(), name
    assert (replica / "stable_diffusion.json").stat().st_size > 100_000
    assert not (outside / "models").exists()
    status = run([script, "status"], cwd=tmp_path, env=host_env)
    assert status.stdout.startswith(f"replica: {replica} "), status.stdout[:300]
