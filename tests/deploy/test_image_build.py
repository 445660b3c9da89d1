"""image/build.sh without a registry, against a stand-in engine that records what it is asked.

The real build runs in `make image-test` (tests/image); these check the script's own choices:
the offline fallback to the local base and the OCI labels' build arguments.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Final

from horde_replica_sync import __version__
from tests.deploy.conftest import ROOT

BUILD: Final = ROOT / "image" / "build.sh"
# A registry-less engine: nothing pulled, no network; the local base is "cached" (so base.sh
# does not debootstrap); `build` records its arguments.
FAKE_ENGINE: Final = """#!/bin/sh
case "$1 $2" in
  "image inspect") case "$3" in localhost/hrs-base:*) exit 0;; *) exit 1;; esac;;
  "pull --quiet") echo "Error: initializing source docker://python:3.11-slim-bookworm:" \
      "pinging container registry registry-1.docker.io: dial tcp: lookup" \
      "registry-1.docker.io: no such host" >&2; exit 125;;
  build*) printf '%s\\n' "$@" > "$RECORD"; exit 0;;
esac
exit 3
"""


def build(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run image/build.sh with the stand-in engine; (result, the build's arguments)."""
    engine = tmp_path / "engine"
    engine.write_text(FAKE_ENGINE, encoding="utf-8")
    engine.chmod(0o755)
    record = tmp_path / "build-args"
    full_env = {**os.environ, "ENGINE": str(engine), "RECORD": str(record), **env}
    if "PYTHON_IMAGE" not in env:
        full_env.pop("PYTHON_IMAGE", None)
    result = subprocess.run(
        [str(BUILD)], env=full_env, capture_output=True, text=True, timeout=60, check=False
    )
    args = record.read_text(encoding="utf-8").splitlines() if record.exists() else []
    return result, args


class TestBuildScript:
    """`make image` offline says what it does, and labels the image."""

    def test_offline_falls_back_to_the_local_base_and_says_so(self, tmp_path: Path) -> None:
        """No registry: the local base is used, with the reason and what to pass instead."""
        result, args = build(tmp_path)
        assert result.returncode == 0, result.stderr
        assert "no such host" in result.stderr
        assert "(PYTHON_IMAGE=local)" in result.stderr and "PYTHON_IMAGE=<your mirror>/" in (
            result.stderr
        )
        base = [a for a in args if a.startswith("PYTHON_IMAGE=")]
        assert len(base) == 1 and base[0].startswith("PYTHON_IMAGE=localhost/hrs-base:"), args

    def test_a_given_base_is_used_as_is(self, tmp_path: Path) -> None:
        """PYTHON_IMAGE set: no pull attempted, no fallback."""
        result, args = build(tmp_path, PYTHON_IMAGE="mirror.example/python:3.11-slim-bookworm")
        assert result.returncode == 0, result.stderr
        assert "cannot pull" not in result.stderr
        assert "PYTHON_IMAGE=mirror.example/python:3.11-slim-bookworm" in args

    def test_oci_labels_get_version_revision_and_time(self, tmp_path: Path) -> None:
        """The version is the package's, the revision the commit (build args of the labels)."""
        _, args = build(tmp_path, PYTHON_IMAGE="x")
        assert f"VERSION={__version__}" in args
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        (revision,) = [a for a in args if a.startswith("REVISION=")]
        assert revision.removeprefix("REVISION=").removesuffix("-dirty") == commit
        assert any(a.startswith("CREATED=20") for a in args)
        dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
        for label, arg in (
            ("version", "VERSION"),
            ("revision", "REVISION"),
            ("created", "CREATED"),
        ):
            assert f'org.opencontainers.image.{label}="${{{arg}}}"' in dockerfile
