"""The PRIMARY's side catalogs, mirrored: the real PRIMARY, our CLI, upstream's real reader.

A catalog is changed on the PRIMARY the only way it can be offline (its write API needs the
public AI Horde to authenticate an apikey): its data files are edited and it is restarted.
Upstream's offline `ModelReferenceManager` over our replica (catalog_reader.py, peer venv)
must then show exactly what the PRIMARY exports, not the copies packaged in its wheel.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.environment import clean_env
from tests.interop.peer import Primary, changed_files, peer_python, run_sync, snapshot

READER = Path(__file__).with_name("catalog_reader.py")
BASELINES = "/model_references/v2/image_generation/baselines/export"
GUIDANCE = "/model_references/v2/text_generation/guidance/export"
LICENSING = "/model_references/v2/licensing/export"


def read_catalogs(replica: Path, tmp_path: Path) -> dict[str, Any]:
    """What upstream's offline reader loads from `replica`'s catalogs."""
    proc = subprocess.run(
        [str(peer_python()), str(READER), str(replica), str(tmp_path / "reader-home")],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def assert_reader_sees_primary(primary: Primary, replica: Path, tmp_path: Path) -> None:
    """The reader's three catalogs equal the PRIMARY's exports."""
    seen = read_catalogs(replica, tmp_path)
    assert seen["baselines"] == primary.get_json(BASELINES)
    assert seen["text_guidance"] == primary.get_json(GUIDANCE)
    licensing = primary.get_json(LICENSING)
    assert seen["licensing"]["licenses"] == licensing["licenses"]
    assert seen["licensing"]["metadata"] == licensing["metadata"]
    non_model = {f"{a['asset_kind']}:{a['asset_identifier']}" for a in licensing["assets"]}
    non_model = {k for k in non_model if not k.startswith("model:")}
    assert {f"{a['asset_kind']}:{a['asset_identifier']}" for a in seen["licensing"]["assets"]} == (
        non_model
    )


def change_catalogs(primary: Primary) -> None:
    """Baselines at revision 2 (one kudos changed, one baseline added), one licence renamed
    (licensing revision 2), guidance at revision 2; then the PRIMARY restarts to serve them."""
    root = primary.data_dir / "horde_model_reference"
    path = root / "baselines" / "catalog.json"
    catalog = json.loads(path.read_text(encoding="utf-8"))
    catalog["metadata"]["revision"] = 2
    catalog["metadata"]["updated_at"] = 1_800_000_000
    name, record = next(iter(catalog["baselines"].items()))
    record["horde_policy"]["kudos"] = 7.5
    added = json.loads(json.dumps(record))
    added.update(name="interop_test_baseline", alternative_names=[])
    catalog["baselines"]["interop_test_baseline"] = added
    path.write_text(json.dumps(catalog, indent=2), encoding="utf-8")

    path = root / "licensing" / "licenses.json"
    licenses = json.loads(path.read_text(encoding="utf-8"))
    licenses["revision"], licenses["updated_at"] = 2, 1_800_000_000
    first = next(iter(licenses["records"].values()))
    first["name"] = "Renamed by the interop test"
    path.write_text(json.dumps(licenses, indent=2), encoding="utf-8")

    path = root / "text_guidance" / "catalog.json"
    guidance = json.loads(path.read_text(encoding="utf-8"))
    guidance["metadata"]["revision"], guidance["metadata"]["updated_at"] = 2, 1_800_000_000
    path.write_text(json.dumps(guidance, indent=2), encoding="utf-8")
    primary.restart()
    assert primary.get_json(BASELINES)["metadata"]["revision"] == 2, "the edit did not take"
    assert primary.get_json(BASELINES)["baselines"][name]["horde_policy"]["kudos"] == 7.5


class TestCatalogs:
    """Upstream's reader over our replica sees the PRIMARY's catalogs."""

    def test_cold_sync_serves_the_primarys_catalogs(
        self, mutable_primary: Primary, tmp_path: Path
    ) -> None:
        """A PRIMARY whose catalogs moved past the wheel's: a cold replica shows its revision."""
        change_catalogs(mutable_primary)
        replica = tmp_path / "replica"

        run = run_sync(mutable_primary.base_url, replica)

        assert run.returncode == 0, run.describe()
        assert_reader_sees_primary(mutable_primary, replica, tmp_path)
        assert read_catalogs(replica, tmp_path)["baselines"]["metadata"]["revision"] == 2

    def test_a_change_on_an_existing_replica_is_followed(
        self, mutable_primary: Primary, tmp_path: Path
    ) -> None:
        """Synced, unchanged (3 catalog requests, nothing written), changed upstream: only the
        catalogs' files are rewritten and the reader shows the new revisions."""
        replica = tmp_path / "replica"
        assert run_sync(mutable_primary.base_url, replica).returncode == 0
        assert_reader_sees_primary(mutable_primary, replica, tmp_path)

        before, requests_before = snapshot(replica), mutable_primary.request_count()
        quiet = run_sync(mutable_primary.base_url, replica)
        requests = mutable_primary.request_count() - requests_before
        assert quiet.returncode == 0, quiet.describe()
        assert changed_files(before, snapshot(replica)) == []
        print(f"\n[no-change] {requests} requests (2 metadata + 3 catalog checks)")
        assert requests == 5

        change_catalogs(mutable_primary)
        before = snapshot(replica)
        run = run_sync(mutable_primary.base_url, replica)

        assert run.returncode == 0, run.describe()
        assert_reader_sees_primary(mutable_primary, replica, tmp_path)
        rewritten = changed_files(before, snapshot(replica))
        # Both licensing envelopes carry the dataset's revision, so both move with it.
        assert rewritten == [
            "baselines/catalog.json",
            "licensing/assets.json",
            "licensing/licenses.json",
            "text_guidance/catalog.json",
        ]


UPSTREAM_REFRESH = """
import json, sys
from pathlib import Path
from horde_model_reference.image_baseline_store import ImageBaselineStore
from horde_model_reference.licensing_store import LicensingStore
from horde_model_reference.text_guidance_store import TextGuidanceStore
exports, root = Path(sys.argv[1]), Path(sys.argv[2])
for store, folder in ((ImageBaselineStore, "baselines"), (TextGuidanceStore, "text_guidance"),
                      (LicensingStore, "licensing")):
    payload = json.loads((exports / folder).read_bytes())
    store(root_path=root / folder, writable=False).refresh_replica_export(payload)
"""


class TestCatalogFiles:
    """Our files are the ones upstream's own replica writes, and why they must be closed."""

    def test_byte_identical_to_what_upstreams_replica_writes(
        self, primary: Primary, tmp_path: Path
    ) -> None:
        """Upstream's stores' `refresh_replica_export` of the same exports: the same bytes."""
        replica = tmp_path / "replica"
        assert run_sync(primary.base_url, replica).returncode == 0
        exports = tmp_path / "exports"
        exports.mkdir()
        for folder, path in (
            ("baselines", BASELINES),
            ("text_guidance", GUIDANCE),
            ("licensing", LICENSING),
        ):
            (exports / folder).write_bytes(primary.get_bytes(path))
        upstream = tmp_path / "upstream"
        proc = subprocess.run(
            [str(peer_python()), "-c", UPSTREAM_REFRESH, str(exports), str(upstream)],
            env=clean_env(HORDE_MODEL_REFERENCE_AUDIT__ENABLED="false"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        written = sorted(str(p.relative_to(upstream)) for p in upstream.rglob("*") if p.is_file())
        assert written == [
            "baselines/catalog.json",
            "licensing/assets.json",
            "licensing/licenses.json",
            "text_guidance/catalog.json",
        ]
        for rel in written:
            assert (replica / rel).read_bytes() == (upstream / rel).read_bytes(), rel

    def test_one_unknown_field_stops_upstreams_reader(
        self, primary: Primary, tmp_path: Path
    ) -> None:
        """Why the catalogs' models are closed: upstream's manager cannot even be built."""
        replica = tmp_path / "replica"
        assert run_sync(primary.base_url, replica).returncode == 0
        path = replica / "baselines" / "catalog.json"
        catalog = json.loads(path.read_bytes())
        next(iter(catalog["baselines"].values()))["a_newer_primarys_field"] = 1
        path.write_text(json.dumps(catalog), encoding="utf-8")
        proc = subprocess.run(
            [str(peer_python()), str(READER), str(replica), str(tmp_path / "home")],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode != 0
        assert "extra_forbidden" in proc.stderr
