"""A complete replica from GitHub alone, checked against the real PRIMARY (issue #7).

The real PRIMARY derives its v2 responses from the legacy files in
`shared/reference-data/legacy`. Served from a local server laid out like
raw.githubusercontent.com, the same files must give a GitHub-only sync the same v2 records.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, spec_for
from horde_replica_sync.convert import convertible
from tests.environment import clean_env, shared_dir
from tests.faultserver import FaultServer, running, script_github
from tests.interop.peer import (
    V2_FILES,
    Primary,
    describe_differences,
    without_timestamps,
)

pytestmark = pytest.mark.peer


@pytest.fixture(name="github", scope="module")
def _github() -> Iterator[FaultServer]:
    """The real legacy files, with ETags, at GitHub raw's paths on 127.0.0.1."""
    with running() as server:
        script_github(server, shared_dir() / "reference-data" / "legacy")
        yield server


def sync_from_github(
    github: FaultServer, replica: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`sync --once --no-primary --github-url …` as an operator runs it."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "horde_replica_sync",
            "sync",
            "--once",
            "--no-primary",
            "--github-url",
            github.url,
            "--replica-dir",
            str(replica),
            *extra,
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class TestGithubOnlyReplica:
    """`--no-primary` publishes both layers, and the v2 layer equals the PRIMARY's."""

    def test_every_v2_file_equals_the_primary(
        self, primary: Primary, github: FaultServer, tmp_path: Path
    ) -> None:
        """Each convertible category's v2 file has the PRIMARY's records, timestamps aside."""
        replica = tmp_path / "replica"
        result = sync_from_github(github, replica)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        compared = 0
        for category in MODEL_REFERENCE_CATEGORY:
            path = replica / V2_FILES[category.value]
            if not convertible(category):
                assert not path.exists(), f"{category}: nothing on GitHub, nothing published"
                continue
            ours = json.loads(path.read_bytes())
            served = json.loads(primary.v2(category.value))
            differences = describe_differences(without_timestamps(ours), without_timestamps(served))
            assert not differences, f"{category}: " + "\n".join(differences[:20])
            compared += len(served)
        assert compared > 900  # 161 image_generation + 719 text_generation + the rest
        for category in MODEL_REFERENCE_CATEGORY:
            for name in spec_for(category).github_files:
                legacy = shared_dir() / "reference-data" / "legacy" / name
                assert (replica / "legacy" / name).read_bytes() == legacy.read_bytes()

    def test_second_run_downloads_nothing(self, github: FaultServer, tmp_path: Path) -> None:
        """A forced re-check answers 304 for every file and rewrites nothing."""
        replica = tmp_path / "replica"
        assert sync_from_github(github, replica).returncode == 0
        before = {p: p.stat().st_mtime_ns for p in replica.rglob("*") if p.is_file()}
        requests = github.count()
        result = sync_from_github(github, replica, "--force")
        assert result.returncode == 0, result.stderr[-3000:]
        assert github.count() - requests == 11  # one conditional GET per legacy file (9 + 2)
        assert all("if-none-match" in seen.headers for seen in github.requests[requests:])
        after = {p: p.stat().st_mtime_ns for p in replica.rglob("*") if p.is_file()}
        changed = [
            p for p in before if after.get(p) != before[p] and "horde-replica-sync" not in str(p)
        ]
        assert changed == []
