"""Our legacy -> v2 conversion against the real upstream PRIMARY and its offline reader.

The PRIMARY derives its v2 responses from the legacy files in `shared/reference-data/legacy`;
converting the same files must give the same records. Only `metadata.created_at/updated_at`
(the PRIMARY's data-dir init time) may differ, and not even those when we pass its time as `now`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY
from horde_replica_sync.convert import convert_legacy, convertible
from tests.environment import clean_env, shared_dir
from tests.interop.peer import (
    V2_FILES,
    Primary,
    describe_differences,
    peer_python,
    without_timestamps,
)

pytestmark = pytest.mark.peer

CONVERTIBLE = [category for category in MODEL_REFERENCE_CATEGORY if convertible(category)]
READER = Path(__file__).with_name("upstream_reader.py")


@pytest.fixture(scope="module")
def legacy_files() -> dict[str, bytes]:
    """The legacy files the PRIMARY was seeded from, by file name."""
    folder = shared_dir() / "reference-data" / "legacy"
    if not folder.is_dir():
        pytest.fail(f"no legacy reference data at {folder} (set HRS_SHARED_DIR)")
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


def primary_init_time(records: dict[str, Any]) -> int:
    """The timestamp the PRIMARY stamped on a category's records."""
    stamps = {record["metadata"]["created_at"] for record in records.values()}
    assert len(stamps) == 1, f"expected one init time, got {stamps}"
    return int(stamps.pop())


class TestConvertMatchesPrimary:
    """`convert_legacy` reproduces what the PRIMARY serves from the same legacy files."""

    @pytest.mark.parametrize("category", CONVERTIBLE, ids=str)
    def test_records_equal(
        self, primary: Primary, legacy_files: dict[str, bytes], category: MODEL_REFERENCE_CATEGORY
    ) -> None:
        """Every record is equal to the PRIMARY's, ignoring only metadata timestamps."""
        served = json.loads(primary.v2(category.value))
        ours = json.loads(convert_legacy(category, legacy_files))
        assert served, f"the PRIMARY serves no {category} records"
        differences = describe_differences(without_timestamps(ours), without_timestamps(served))
        assert not differences, f"{category}: {len(differences)} records differ:\n" + "\n".join(
            differences[:20]
        )
        print(f"\n[convert] {category}: {len(ours)} of {len(served)} records equal")

    @pytest.mark.parametrize("category", CONVERTIBLE, ids=str)
    def test_bytes_equal_with_primary_time(
        self, primary: Primary, legacy_files: dict[str, bytes], category: MODEL_REFERENCE_CATEGORY
    ) -> None:
        """Given the PRIMARY's init time as `now`, the bytes are identical too (order included)."""
        body = primary.v2(category.value)
        now = primary_init_time(json.loads(body))
        assert convert_legacy(category, legacy_files, now=now) == body


class TestUpstreamReaderLoadsConversion:
    """Upstream's offline reader loads every record of the converted v2 files."""

    def test_all_records_load(self, legacy_files: dict[str, bytes], tmp_path: Path) -> None:
        """Written under their v2 names, the converted files load without skipped records."""
        replica = tmp_path / "replica"
        replica.mkdir()
        expected: dict[str, list[str]] = {}
        for category in CONVERTIBLE:
            body = convert_legacy(category, legacy_files, now=1_700_000_000)
            (replica / V2_FILES[category.value]).write_bytes(body)
            expected[category.value] = sorted(r["name"] for r in json.loads(body).values())
        python = peer_python()
        if not python.exists():
            pytest.fail(f"peer venv missing ({python}); run `make peer`")
        proc = subprocess.run(
            [str(python), str(READER), str(replica), str(tmp_path / "scratch")],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"upstream_reader.py failed:\n{proc.stderr[-4000:]}"
        loaded = json.loads(proc.stdout)["v2"]
        assert {category: loaded[category] for category in expected} == expected
