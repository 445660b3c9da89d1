"""The deployment files the wheel carries, and `install-files DIR`, which writes them out.

The repository keeps the one copy of each file (`systemd/`, `config/`); the wheel carries them
as `horde_replica_sync/deploy/` (pyproject's force-include), so an installed package can write
a working unit whose `ExecStart=` is its own console script. An editable install has no
`deploy/` (hatch ignores force-include there): the source tree is read instead.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final

from horde_replica_sync.errors import InstallError

# What `install-files` writes, relative to the deployment root (= the repository's layout).
FILES: Final = (
    "systemd/horde-replica-sync.service",
    "systemd/horde-replica-sync-once.service",
    "systemd/horde-replica-sync.timer",
    "systemd/horde-replica-sync.sysusers.conf",
    "systemd/worker-cache-home.conf",
    "config/config.example.toml",
    "config/env.example",
    "config/compose.example.yaml",
    "config/prometheus.example.yml",
    "config/alerts.yml",
    "config/alerts_test.yml",
    "config/grafana-dashboard.json",
    "config/nginx-site-cache.example.conf",
)
# The console script the units in the repository name; written out, it becomes the real one.
UNIT_BINARY: Final = "/usr/local/bin/horde-replica-sync"
# ProtectHome=yes (both units) hides these from the service: a script there cannot start.
HIDDEN_FROM_UNITS: Final = (Path("/home"), Path("/root"), Path("/run/user"))


@dataclass(frozen=True, slots=True)
class Installed:
    """What `install_files` wrote, and the console script the units now start."""

    files: tuple[Path, ...]
    binary: Path

    @property
    def binary_hidden(self) -> bool:
        """Whether the units' sandbox (ProtectHome=yes) hides the binary."""
        return any(self.binary.is_relative_to(hidden) for hidden in HIDDEN_FROM_UNITS)


def deploy_root() -> Traversable:
    """The packaged deployment files, else (an editable install) the source tree's."""
    packaged = resources.files("horde_replica_sync") / "deploy"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2]


def console_script() -> Path:
    """This environment's `horde-replica-sync` (beside its interpreter; not resolved, so a
    venv's script keeps the venv's interpreter)."""
    return Path(sys.executable).absolute().parent / "horde-replica-sync"


def install_files(target: Path, *, binary: Path | None = None, force: bool = False) -> Installed:
    """Write every file of `FILES` under `target`, the units starting `binary`.

    An existing file with other content is not replaced unless `force`: an operator's edits
    are never lost silently. Raises `InstallError` (exit 73) naming the path otherwise.
    """
    binary = console_script() if binary is None else binary.absolute()
    root = deploy_root()
    planned = {target / rel: _content(root, rel, binary) for rel in FILES}
    for path, data in planned.items():
        if not force and path.exists() and path.read_bytes() != data:
            msg = f"{path} exists and differs: remove it, or pass --force to overwrite it"
            raise InstallError(msg)
    for path, data in planned.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return Installed(tuple(planned), binary)


def _content(root: Traversable, rel: str, binary: Path) -> bytes:
    source = root.joinpath(*rel.split("/"))
    if not source.is_file():
        msg = f"the deployment file {rel} is missing from {root}: a broken installation"
        raise InstallError(msg)
    data = source.read_bytes()
    if rel.startswith("systemd/"):
        data = data.replace(UNIT_BINARY.encode(), str(binary).encode())
    return data
