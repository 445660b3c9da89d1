"""The reader matrix (docs/readers.md): the readers workers run, each in its own venv, over a
replica the daemon synced from the real upstream PRIMARY, deployed the way workers deploy them.

* horde-engine 7.12.0's model managers (hordelib, the reGen worker's): load every category.
* horde_model_reference 0.9.2 (the floor horde-worker-reGen's requirements allow): cannot read
  the 8.x layout, and its startup downloads and rewrites the files itself. What it can use is
  the replica's legacy files served over HTTP to its own cache home (HORDE_PROXY_URL_BASE).

Upstream 8.6.2's offline reader and horde-sdk 0.33.3 are in test_consumers.py. Venvs come from
scripts/reader_venv.sh (`make readers`); each is built once and cached under ~/.cache.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from tests.environment import free_port
from tests.interop.consumers import (
    ConsumerRun,
    reader_python,
    readme_environment,
    run_consumer,
    run_networked,
)
from tests.interop.peer import Primary, SyncedReplica, peer_python
from tests.interop.test_consumers import record_names, tree_digest

pytestmark = pytest.mark.peer

# 0.9.x's categories, each read from `<base>/<category>.json` (its v2) and downloaded as
# `<GitHub raw>/<category>.json` into `<base>/legacy/` (the legacy file names the replica has).
HMR09_CATEGORIES: Final = (
    "blip",
    "clip",
    "codeformer",
    "controlnet",
    "esrgan",
    "gfpgan",
    "safety_checker",
    "stable_diffusion",
    "miscellaneous",
)
# 0.9.x's default download URL: HORDE_PROXY_URL_BASE is put in front of it, as it is.
HMR09_GITHUB_PATH: Final = (
    "https://raw.githubusercontent.com/Haidra-Org/AI-Horde-image-model-reference/main"
)
DEAD_PROXY: Final = "http://127.0.0.1:9"  # the discard port: nothing listens there
# The managers the reGen worker loads from the replica, by the category each reads.
HORDELIB_FROM_REPLICA: Final = (
    "codeformer",
    "image_generation",
    "controlnet",
    "esrgan",
    "gfpgan",
    "safety_checker",
    "miscellaneous",
)


@pytest.fixture(name="synced", scope="module")
def _synced(cold_replica: SyncedReplica) -> Path:
    """The module's cold-synced replica (must have synced cleanly; don't modify it)."""
    assert cold_replica.run.returncode == 0, cold_replica.run.describe()
    return cold_replica.path


@pytest.fixture(name="hmr09", scope="module")
def _hmr09() -> Path:
    return reader_python("hmr-0.9.2")


@pytest.fixture(name="hordelib", scope="module")
def _hordelib() -> Path:
    return reader_python("horde-engine-7.12.0")


def legacy_names(replica: Path, category: str) -> list[str]:
    """The record names of one of the replica's legacy files."""
    data: dict[str, Any] = json.loads((replica / "legacy" / f"{category}.json").read_bytes())
    return sorted(data)


def failure(run: ConsumerRun) -> dict[str, str]:
    """The 0.9.x reader's reported exception (the probe itself must have succeeded)."""
    error: dict[str, str] | None = run.result["error"]
    assert error is not None, f"0.9.2 loaded: {run.result['loaded']}"
    return error


@pytest.fixture(name="legacy_server")
def _legacy_server(synced: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The replica's legacy/ over HTTP as docs/readers.md tells operators: `python3 -m
    http.server` over a directory whose `https:/raw.githubusercontent.com/...` path links to it.

    Yields HORDE_PROXY_URL_BASE for it and the server's access log.
    """
    served = tmp_path / "served"
    link = served / HMR09_GITHUB_PATH.replace("https://", "https:/")
    link.parent.mkdir(parents=True)
    link.symlink_to(synced / "legacy", target_is_directory=True)
    port = free_port()
    log = tmp_path / "http.log"
    with log.open("wb") as sink:
        command = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]
        server = subprocess.Popen(
            [*command, "--directory", str(served), str(port)], stdout=sink, stderr=sink
        )
    try:
        base = f"http://127.0.0.1:{port}/"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for _ in range(100):  # until it answers (about 0.1 s)
            try:
                opener.open(base, timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail(f"http.server on {base} never answered: {log.read_text()}")
        yield base, log
    finally:
        server.terminate()
        server.wait(timeout=10)


def worker_09_env(proxy_base: str) -> dict[str, str]:
    """A 0.9.x worker fetching through HORDE_PROXY_URL_BASE, and nowhere else."""
    return {
        "HORDE_PROXY_URL_BASE": proxy_base,
        # anything not on 127.0.0.1 (GitHub itself, were it asked) hits a dead port
        "HTTPS_PROXY": DEAD_PROXY,
        "HTTP_PROXY": DEAD_PROXY,
        "NO_PROXY": "127.0.0.1",
    }


class TestHmr092:
    """horde_model_reference 0.9.2, as the reGen worker of its era runs it."""

    def test_cannot_read_the_8x_layout(
        self, hmr09: Path, synced: Path, primary: Primary, tmp_path: Path
    ) -> None:
        """Read as reGen's process manager does (no download): 8.x's v2 is not 0.9.x's."""
        before = tree_digest(synced)
        run = run_consumer(hmr09, "hmr09", synced, tmp_path / "cache", {}, primary.port)
        error = failure(run)
        assert error["type"] == "ValidationError", error
        # same paths, older format: 0.9.x requires fields (purpose, …) 8.x's records do not have
        assert "BLIP.purpose\n  Field required" in error["message"], error
        assert run.result["written"] == []
        assert tree_digest(synced) == before

    def test_startup_downloads_so_cannot_start_offline(
        self, hmr09: Path, synced: Path, primary: Primary, tmp_path: Path
    ) -> None:
        """reGen's startup always downloads from GitHub first: without network it cannot."""
        before = tree_digest(synced)
        run = run_consumer(hmr09, "hmr09-startup", synced, tmp_path / "cache", {}, primary.port)
        error = failure(run)
        assert error["type"] == "ConnectionError", error
        assert "raw.githubusercontent.com" in error["message"], error
        assert run.result["interfaces"] == ["lo"]
        assert tree_digest(synced) == before

    def test_its_calls_do_not_exist_in_8x(
        self, synced: Path, primary: Primary, tmp_path: Path
    ) -> None:
        """A 0.9-era worker cannot just install 8.x: the API it calls is gone."""
        run = run_consumer(peer_python(), "hmr09", synced, tmp_path / "cache", {}, primary.port)
        error = failure(run)
        assert error == {
            "type": "TypeError",
            "message": "ModelReferenceManager.__new__() got an unexpected keyword argument"
            " 'download_and_convert_legacy_dbs'",
        }

    def test_startup_over_the_replica_rewrites_it(
        self,
        hmr09: Path,
        synced: Path,
        primary: Primary,
        legacy_server: tuple[str, Path],
        tmp_path: Path,
    ) -> None:
        """Pointed at the replica, 0.9.x's startup replaces the daemon's files with its own."""
        cache_home = tmp_path / "cache"
        replica = cache_home / "horde_model_reference"
        shutil.copytree(synced, replica, symlinks=True)
        before = tree_digest(replica)
        run = run_networked(
            hmr09, "hmr09-startup", cache_home, worker_09_env(legacy_server[0]), primary.port
        )
        assert run.result["error"] is None, run.result["error"]
        after = tree_digest(replica)
        rewritten = sorted(name for name in before if after.get(name) != before[name])
        # its own v2 over ours (legacy/ it rewrote too, here with the same bytes)
        assert rewritten == sorted(f"{c}.json" for c in HMR09_CATEGORIES), rewritten

    def test_legacy_files_over_http_load_in_its_own_cache(
        self,
        hmr09: Path,
        synced: Path,
        primary: Primary,
        legacy_server: tuple[str, Path],
        tmp_path: Path,
    ) -> None:
        """The working option: its own cache home, the replica's legacy files over HTTP."""
        proxy_base, log = legacy_server
        before = tree_digest(synced)
        cache_home = tmp_path / "worker-cache"
        cache_home.mkdir()
        run = run_networked(
            hmr09, "hmr09-startup", cache_home, worker_09_env(proxy_base), primary.port
        )
        assert run.result["error"] is None, run.result["error"]
        loaded = run.result["loaded"]
        assert sorted(loaded) == sorted(HMR09_CATEGORIES)
        for category in HMR09_CATEGORIES:
            assert loaded[category] == legacy_names(synced, category), category
        # the PRIMARY's records, through our legacy layer and 0.9.2's own converter
        assert loaded["stable_diffusion"] == record_names(primary.v2("image_generation"))
        assert len(loaded["stable_diffusion"]) > 100
        fetched = [
            line.split(f"GET /{HMR09_GITHUB_PATH}/")[1].split()[0:3:2]
            for line in log.read_text().splitlines()
            if f"GET /{HMR09_GITHUB_PATH}/" in line
        ]
        assert sorted(fetched) == [[f"{c}.json", "200"] for c in sorted(HMR09_CATEGORIES)]
        assert tree_digest(synced) == before, "the 0.9.2 worker changed the replica"


class TestHordelib:
    """horde-engine 7.12.0's model managers, as the reGen worker's main process loads them."""

    @pytest.mark.timeout(1200)  # the first run provisions the venv (about a minute)
    def test_model_managers_load_every_category(
        self, hordelib: Path, synced: Path, primary: Primary, tmp_path: Path
    ) -> None:
        """Offline, the README's environment: every manager holds the PRIMARY's records."""
        replica = tmp_path / "replica"  # legacy/ must be writable: a copy, not the shared one
        shutil.copytree(synced, replica, symlinks=True)
        before = tree_digest(replica)
        cache_home = tmp_path / "worker-cache"
        run = run_consumer(
            hordelib,
            "hordelib",
            replica,
            cache_home,
            readme_environment("hordelib"),
            primary.port,
            read_only=False,
        )
        assert run.returncode == 0, run.describe()
        print(f"\n[hordelib] {run.seconds:.2f} s in the sandbox")
        result = run.result
        assert result["interfaces"] == ["lo"], "the worker saw a network interface besides lo"
        assert result["primary_reachable"] is False
        assert result["backend"] == "LocalReadOnlyBackend"
        assert result["base_path"] == str((cache_home / "horde_model_reference").resolve())
        loaded = result["loaded"]
        for category in HORDELIB_FROM_REPLICA:
            expected = record_names(primary.v2(category))
            assert expected, category
            assert loaded[category] == expected, f"{category}: not the PRIMARY's records"
        # LoRA/TI come from CivitAI (nothing offline), annotators from ComfyUI's package
        assert loaded["lora"] == [] and loaded["ti"] == []
        assert "controlnet_annotator" in loaded
        after = tree_digest(replica)
        changed = sorted(name for name in after if before.get(name) != after[name])
        assert changed == ["legacy/lora.json", "legacy/ti.json"], "hordelib wrote our files"
        assert set(before) <= set(after)

    def test_main_process_needs_legacy_writable(
        self, hordelib: Path, synced: Path, primary: Primary, tmp_path: Path
    ) -> None:
        """On a read-only replica the main process cannot save its LoRA cache: no managers."""
        run = run_consumer(
            hordelib,
            "hordelib",
            synced,
            tmp_path / "cache",
            readme_environment("hordelib"),
            primary.port,
        )
        assert run.returncode != 0
        assert "Read-only file system" in run.stderr, run.describe()
        assert "legacy/lora.json.tmp-" in run.stderr, run.describe()

    def test_inference_children_read_a_read_only_replica(
        self, hordelib: Path, synced: Path, primary: Primary, tmp_path: Path
    ) -> None:
        """With adhoc_read_only=True (its inference children) a read-only replica serves."""
        before = tree_digest(synced)
        run = run_consumer(
            hordelib,
            "hordelib-child",
            synced,
            tmp_path / "cache",
            readme_environment("hordelib"),
            primary.port,
        )
        assert run.returncode == 0, run.describe()
        assert run.result["replica_writable"] is False
        for category in HORDELIB_FROM_REPLICA:
            assert run.loaded[category] == record_names(primary.v2(category)), category
        assert run.result["written"] == []
        assert tree_digest(synced) == before


class TestProvisioning:
    """A reader venv that cannot be built fails the run in CI and skips elsewhere, saying why."""

    def test_ci_fails_loudly(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CI", "true")
        with pytest.raises(pytest.fail.Exception, match=r"unknown reader 'hmr-0\.0\.0'"):
            reader_python("hmr-0.0.0")

    def test_elsewhere_skips_with_the_reason(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("CI", raising=False)
        with pytest.raises(pytest.skip.Exception, match=r"unknown reader 'hmr-0\.0\.0'"):
            reader_python("hmr-0.0.0")
