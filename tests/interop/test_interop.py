"""`horde-replica-sync sync --once` against the real upstream PRIMARY, read by the real REPLICA.

Everything runs as separate processes: the upstream PRIMARY (uvicorn, its own venv), our CLI
(`python -m horde_replica_sync`) and upstream's offline reader (`upstream_reader.py`, peer venv).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.environment import clean_env, shared_dir
from tests.interop.peer import (
    CATALOG_ANSWERS,
    CATALOG_CHECKS,
    CATALOG_COLD_REQUESTS,
    CATALOG_FILES,
    LEGACY_FILES,
    NO_LEGACY,
    V2_FILES,
    CliRun,
    FileStamp,
    Primary,
    SyncedReplica,
    changed_files,
    fresh_replica,
    peer_python,
    run_sync,
    snapshot,
)

pytestmark = pytest.mark.peer

RecordProperty = Callable[[str, object], None]

READER = Path(__file__).with_name("upstream_reader.py")
CATEGORY_FILES = sorted([*V2_FILES.values(), *(f"legacy/{f}" for f in LEGACY_FILES.values())])
EXPECTED_FILES = sorted([*CATEGORY_FILES, *CATALOG_FILES])
ALL_LAYERS = len(V2_FILES) + len(LEGACY_FILES) + 3  # 15 v2 + 10 legacy + 3 catalogs
METADATA_REQUESTS = 2  # v1 and v2 metadata/metadata


def report(
    record: RecordProperty, label: str, run: CliRun, requests: int, files_written: int
) -> None:
    """Print a run's measurements and attach them to the test's report."""
    numbers = {
        "wall_seconds": round(run.seconds, 3),
        "requests": float(requests),
        "bytes_downloaded": float(run.bytes_downloaded),
        "files_written": float(files_written),
    }
    print(
        f"\n[{label}] wall {run.seconds:.3f} s, {requests} requests to the PRIMARY, "
        f"{run.bytes_downloaded} bytes downloaded, {files_written} files written"
    )
    for key, value in numbers.items():
        record(f"{label}.{key}", value)


def read_upstream(replica: Path, scratch: Path) -> dict[str, Any]:
    """What upstream's offline reader loads from `replica` (one process, all categories)."""
    python = peer_python()
    if not python.exists():
        pytest.fail(f"peer venv missing ({python}); run `make peer`")
    proc = subprocess.run(
        [str(python), str(READER), str(replica), str(scratch)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"upstream_reader.py failed:\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def record_names(body: bytes) -> list[str]:
    """The record names upstream keys a v2 category by (its `name` fields, not the keys)."""
    data = json.loads(body)
    assert isinstance(data, dict)
    return sorted(record["name"] for record in data.values())


def assert_kept(before: dict[str, FileStamp], after: dict[str, FileStamp], *skip: str) -> None:
    """Every file except `skip` still has the same inode and mtime."""
    rewritten = [rel for rel in changed_files(before, after) if rel not in skip]
    assert rewritten == [], f"files rewritten or lost: {rewritten}"


class TestColdSync:
    """A first run into an empty directory."""

    def test_publishes_every_category_the_primary_serves(
        self,
        cold_replica: SyncedReplica,
        primary: Primary,
        record_property: RecordProperty,
    ) -> None:
        """Exit 0; every v2 and legacy file exists and is JSON-equal to the PRIMARY's answer."""
        run, replica = cold_replica.run, cold_replica.path
        assert run.returncode == 0, run.describe()
        report(record_property, "cold", run, cold_replica.requests, len(cold_replica.files))

        assert sorted(cold_replica.files) == EXPECTED_FILES
        for category, file in V2_FILES.items():
            published = json.loads((replica / file).read_bytes())
            assert published == json.loads(primary.v2(category)), f"v2 {category} ({file})"
        for category, file in LEGACY_FILES.items():
            published = json.loads((replica / "legacy" / file).read_bytes())
            assert published == json.loads(primary.v1(category)), f"legacy {category} ({file})"
        for category in NO_LEGACY:
            assert not (replica / "legacy" / f"{category}.json").exists()

        outcomes = {(e["category"], e["layer"]): e["outcome"] for e in run.category_events}
        assert len(outcomes) == ALL_LAYERS
        assert set(outcomes.values()) == {"updated"}, outcomes
        assert cold_replica.requests == METADATA_REQUESTS + ALL_LAYERS - 3 + CATALOG_COLD_REQUESTS
        served = sum(len(primary.v2(c)) for c in V2_FILES)
        served += sum(len(primary.v1(c)) for c in LEGACY_FILES)
        served += sum(len(primary.get_bytes(p)) for p in CATALOG_ANSWERS)
        assert run.bytes_downloaded == served, "the log reports the bytes the PRIMARY served"


class TestUpstreamReader:
    """Upstream's own REPLICA reader loads what we published."""

    def test_upstream_loads_the_same_records(
        self, cold_replica: SyncedReplica, primary: Primary, tmp_path: Path
    ) -> None:
        """Upstream's offline reader loads every non-empty category with the PRIMARY's names."""
        replica = cold_replica.path
        assert cold_replica.run.returncode == 0, cold_replica.run.describe()
        before = {p: p.read_bytes() for p in replica.rglob("*") if p.is_file()}

        loaded = read_upstream(replica, tmp_path / "reader-cache")

        assert loaded["backend"] == "LocalReadOnlyBackend"
        non_empty = 0
        for category in V2_FILES:
            expected = record_names(primary.v2(category))
            if expected:
                non_empty += 1
                assert loaded["v2"][category] == expected, f"v2 {category}"
            else:  # an empty category may read as {} or as "nothing there"
                assert loaded["v2"][category] in (None, []), f"v2 {category}"
        assert non_empty >= 10
        for category in V2_FILES:
            legacy = loaded["legacy"][category]
            if category in NO_LEGACY:
                assert legacy is None, f"{category} has no legacy layer"
                continue
            assert legacy is not None, f"legacy {category} missing"
            assert legacy["count"] == len(json.loads(primary.v1(category))), category
            assert legacy["invalid"] == [], f"legacy {category}: upstream rejects records"
        # The reader is read-only: nothing in the replica changed, nothing was downloaded.
        assert {p: p.read_bytes() for p in replica.rglob("*") if p.is_file()} == before
        assert not any("models/" in f or f.endswith(".json") for f in loaded["cache_files"])

    def test_reader_helper_agrees_with_replica_examples(
        self, cold_replica: SyncedReplica, tmp_path: Path
    ) -> None:
        """The shared `replica_examples.py from-dir` loads the re-keyed controlnet the same way."""
        loaded = read_upstream(cold_replica.path, tmp_path / "reader-cache")
        proc = subprocess.run(
            [
                str(peer_python()),
                str(shared_dir() / "peer" / "replica_examples.py"),
                "from-dir",
                str(cold_replica.path),
                "controlnet",
            ],
            env=clean_env(TMPDIR=str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
        example = json.loads(proc.stdout.splitlines()[-1])
        assert example["ok"] is True
        assert example["backend"] == "LocalReadOnlyBackend"
        assert example["count"] == len(loaded["v2"]["controlnet"])
        assert example["names"] == loaded["v2"]["controlnet"][:20]


class TestIncremental:
    """Runs on a replica that is already up to date, or slightly damaged."""

    def test_second_run_is_cheap_and_writes_nothing(
        self, cold_replica: SyncedReplica, primary: Primary, record_property: RecordProperty
    ) -> None:
        """A second run exits 0, asks the PRIMARY at most 2 requests and rewrites no file."""
        replica = cold_replica.path
        assert cold_replica.run.returncode == 0, cold_replica.run.describe()
        before = snapshot(replica)
        requests_before = primary.request_count()

        run = run_sync(primary.base_url, replica)

        requests = primary.request_count() - requests_before
        after = snapshot(replica)
        report(record_property, "no-change", run, requests, len(changed_files(before, after)))
        assert run.returncode == 0, run.describe()
        assert requests <= METADATA_REQUESTS + CATALOG_CHECKS
        assert run.category_bytes_downloaded == 0
        assert_kept(before, after)
        assert {e["outcome"] for e in run.category_events} == {"unchanged"}

    def test_deleted_and_edited_files_are_repaired(self, primary: Primary, tmp_path: Path) -> None:
        """A deleted v2 file and a hand-edited legacy file come back byte-equal to the PRIMARY."""
        replica = tmp_path / "replica"
        before = fresh_replica(primary, replica)
        (replica / "esrgan.json").unlink()
        edited = replica / "legacy" / "clip.json"
        data = json.loads(edited.read_bytes())
        next(iter(data.values()))["description"] = "edited by hand"
        edited.write_text(json.dumps(data, indent=4), encoding="utf-8")
        requests_before = primary.request_count()

        run = run_sync(primary.base_url, replica)

        requests = primary.request_count() - requests_before
        assert run.returncode == 0, run.describe()
        assert (replica / "esrgan.json").read_bytes() == primary.v2("esrgan")
        assert edited.read_bytes() == primary.v1("clip")
        assert_kept(before, snapshot(replica), "esrgan.json", "legacy/clip.json")
        print(f"\n[repair] {requests} requests, {run.bytes_downloaded} bytes downloaded")
        assert requests <= METADATA_REQUESTS + CATALOG_CHECKS + 2, "only the two damaged files"


class TestFlags:
    """`--dry-run` and `--force`."""

    def test_dry_run_writes_nothing(self, primary: Primary, tmp_path: Path) -> None:
        """`--dry-run` into an empty directory exits 0 and writes no file."""
        replica = tmp_path / "replica"

        run = run_sync(primary.base_url, replica, "--dry-run")

        assert run.returncode == 0, run.describe()
        written = sorted(str(p) for p in replica.rglob("*") if p.is_file())
        assert written == [], f"a dry run wrote {written}"
        assert "dry run" in run.stdout

    def test_force_redownloads_but_rewrites_nothing(self, primary: Primary, tmp_path: Path) -> None:
        """`--force` on an up-to-date replica downloads everything again and rewrites no file."""
        replica = tmp_path / "replica"
        before = fresh_replica(primary, replica)
        requests_before = primary.request_count()

        run = run_sync(primary.base_url, replica, "--force")

        requests = primary.request_count() - requests_before
        assert run.returncode == 0, run.describe()
        assert requests > METADATA_REQUESTS
        assert requests >= METADATA_REQUESTS + ALL_LAYERS, "--force re-downloads every layer"
        assert run.bytes_downloaded > 0
        assert_kept(before, snapshot(replica))
        print(f"\n[force] {requests} requests, {run.bytes_downloaded} bytes downloaded")


class TestUpstreamChange:
    """A change on the PRIMARY reaches the replica."""

    def test_changed_category_propagates_and_others_stay(
        self, mutable_primary: Primary, tmp_path: Path
    ) -> None:
        """An edited esrgan record on the PRIMARY is published; unchanged files keep mtime."""
        server = mutable_primary
        replica = tmp_path / "replica"
        before = fresh_replica(server, replica)
        old_bytes = {rel: (replica / rel).read_bytes() for rel in before}

        server.stop()
        legacy_esrgan = server.legacy_dir / "esrgan.json"
        data = json.loads(legacy_esrgan.read_bytes())
        name = sorted(data)[0]
        data[name]["description"] = "changed upstream by the interop test"
        legacy_esrgan.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")
        shutil.rmtree(server.data_dir / "horde_model_reference" / "meta")
        server.restart()
        new_v2 = server.v2("esrgan")
        new_v1 = server.v1("esrgan")
        assert json.loads(new_v2)[name]["description"] == "changed upstream by the interop test"

        run = run_sync(server.base_url, replica)

        assert run.returncode == 0, run.describe()
        assert json.loads((replica / "esrgan.json").read_bytes()) == json.loads(new_v2)
        assert json.loads((replica / "legacy" / "esrgan.json").read_bytes()) == json.loads(new_v1)
        after = snapshot(replica)
        assert sorted(after) == EXPECTED_FILES
        current = {
            **{file: server.v2(category) for category, file in V2_FILES.items()},
            **{f"legacy/{file}": server.v1(category) for category, file in LEGACY_FILES.items()},
        }
        kept = []
        for rel in CATEGORY_FILES:
            published = (replica / rel).read_bytes()
            assert json.loads(published) == json.loads(current[rel]), rel
            if published == old_bytes[rel]:
                assert after[rel] == before[rel], f"{rel}: same bytes but rewritten"
                kept.append(rel)
        assert "esrgan.json" not in kept
        assert "legacy/esrgan.json" not in kept
        untouched_legacy = {f"legacy/{f}" for c, f in LEGACY_FILES.items() if c != "esrgan"}
        assert untouched_legacy <= set(kept), "unchanged legacy files must not be rewritten"
        print(
            f"\n[upstream change] kept {len(kept)} files, rewrote {sorted(set(after) - set(kept))}"
        )

        # Removing meta/ re-stamped every category, but only esrgan's records show the new
        # stamp; the metadata says no write happened since (last_operation_type: null), so
        # the others' stamps were recorded at once and the next run is settled.
        requests_before = server.request_count()
        settled = run_sync(server.base_url, replica)
        assert settled.returncode == 0, settled.describe()
        settled_requests = server.request_count() - requests_before
        assert settled_requests <= METADATA_REQUESTS + CATALOG_CHECKS, "not settled"
        assert_kept(after, snapshot(replica))
