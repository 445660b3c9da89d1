"""`make demo` (scripts/demo.sh) does what the README's quick start shows, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.environment import ROOT


@pytest.mark.peer
def test_demo_syncs_from_the_real_primary_and_runs_the_daemon(tmp_path: Path) -> None:
    """The PRIMARY starts, `sync --once` is ok, `status` names the worker's cache home, the
    daemon becomes ready from disk and stops cleanly on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HORDE_REPLICA_")}
    env.update(DEMO_SECONDS="6", DEMO_DIR=str(tmp_path), BIN=str(Path(sys.executable).parent))
    result = subprocess.run(
        [str(ROOT / "scripts" / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    replica = tmp_path / "worker-cache" / "horde_model_reference"
    assert "\nsync ok in " in out
    assert f"replica: {replica} (default: $AIWORKER_CACHE_HOME/horde_model_reference)" in out
    assert '"why": "replica valid from disk"' in out and '"event": "daemon.stopped"' in out
    assert (replica / "stable_diffusion.json").stat().st_size > 100_000
