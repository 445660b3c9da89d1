"""Helpers for the interop tests: the real upstream PRIMARY, the CLI as a subprocess.

The PRIMARY is upstream `horde-model-reference` started by `shared/peer/start_primary.sh`
(fully offline, seeded from `shared/reference-data/legacy`). Its uvicorn access log
(`<data dir>/primary.log`) has one line per request, which is how requests are counted.
A PRIMARY that cannot start fails the test loudly: these tests never skip.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from tests.environment import clean_env, free_port, shared_dir

START_TIMEOUT_SECONDS: Final = 90.0
CLI_TIMEOUT_SECONDS: Final = 60.0
STATE_DIR_NAME: Final = ".horde-replica-sync"
LOCK_FILE_NAME: Final = ".horde-replica-sync.lock"

# The layout contract, written out here rather than imported from the product: the v2 file of
# every category, and the legacy file of the categories that have a legacy layer.
V2_FILES: Final[dict[str, str]] = {
    "blip": "blip.json",
    "clip": "clip.json",
    "codeformer": "codeformer.json",
    "controlnet": "controlnet.json",
    "controlnet_annotator": "controlnet_annotator.json",
    "esrgan": "esrgan.json",
    "gfpgan": "gfpgan.json",
    "safety_checker": "safety_checker.json",
    "image_generation": "stable_diffusion.json",
    "text_generation": "text_generation.json",
    "video_generation": "video_generation.json",
    "audio_generation": "audio_generation.json",
    "miscellaneous": "miscellaneous.json",
    "lora": "lora.json",
    "ti": "ti.json",
}
NO_LEGACY: Final = frozenset(
    {"controlnet_annotator", "video_generation", "audio_generation", "lora", "ti"}
)
LEGACY_FILES: Final[dict[str, str]] = {
    category: {"image_generation": "stable_diffusion.json", "text_generation": "db.json"}.get(
        category, f"{category}.json"
    )
    for category in V2_FILES
    if category not in NO_LEGACY
}

# The side catalogs (catalogs.py): 3 layers, 4 files.
CATALOG_FILES: Final = [
    "baselines/catalog.json",
    "licensing/assets.json",
    "licensing/licenses.json",
    "text_guidance/catalog.json",
]
# Every run checks the catalogs: the PRIMARY honours no conditional request and publishes
# no catalog revision in its metadata, so the two small exports are fetched and the licensing
# revision is probed (its 545 KB export only when that moved: a cold run asks 4 times).
CATALOG_CHECKS: Final = 3
CATALOG_COLD_REQUESTS: Final = 4
CATALOG_ANSWERS: Final = (  # what a cold run downloads for them
    "/model_references/v2/image_generation/baselines/export",
    "/model_references/v2/text_generation/guidance/export",
    "/model_references/v2/licensing/licenses?limit=1",
    "/model_references/v2/licensing/export",
)


def peer_python() -> Path:
    """The peer venv's interpreter (`$PEER_VENV`, default as in start_primary.sh)."""
    configured = os.environ.get("PEER_VENV")
    if configured:
        venv = Path(configured)
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        venv = Path(cache) / "horde-model-reference-peer" / "venv"
    return venv / "bin" / "python"


# uvicorn's access log: `INFO:     127.0.0.1:47312 - "GET /api/... HTTP/1.1" 200 OK`
_ACCESS_LINE: Final = re.compile(r'"GET \S+ HTTP/[0-9.]+" [0-9]{3}')
_NO_PROXY_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(slots=True)
class Primary:
    """A running upstream PRIMARY: its API base (with /api), data dir, PID and port."""

    data_dir: Path
    port: int
    pid: int
    # Upstream settings for this server (e.g. its write path, `writable_env`), kept on restart.
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """The API base, including `/api`."""
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def log_path(self) -> Path:
        """The uvicorn access log (truncated by every start)."""
        return self.data_dir / "primary.log"

    @property
    def legacy_dir(self) -> Path:
        """The legacy files the PRIMARY serves (its source of truth)."""
        return self.data_dir / "horde_model_reference" / "legacy"

    def request_count(self) -> int:
        """How many GET requests the PRIMARY has logged since it started."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return len(_ACCESS_LINE.findall(text))

    def get_bytes(self, path: str) -> bytes:
        """The body of `GET <base_url><path>` (must answer 200)."""
        with _NO_PROXY_OPENER.open(self.base_url + path, timeout=30) as response:
            assert response.status == 200, f"GET {path}: HTTP {response.status}"
            body: bytes = response.read()
            return body

    def get_json(self, path: str) -> Any:
        """The parsed JSON body of `GET <base_url><path>`."""
        return json.loads(self.get_bytes(path))

    def v2(self, category: str) -> bytes:
        """The v2 body of `category`."""
        return self.get_bytes(f"/model_references/v2/{category}")

    def v1(self, category: str) -> bytes:
        """The v1 (legacy) body of `category`, by its category name."""
        return self.get_bytes(f"/model_references/v1/{category}")

    def stop(self) -> None:
        """Stop the server (by its PID, through stop_primary.sh)."""
        _stop(self.pid)

    def restart(self) -> None:
        """Stop, then start again on the same data dir (see `start`)."""
        self.stop()
        self.start()

    def start(self) -> None:
        """Start (again) on the same data dir, on the same port if it is still free.

        Returns once the PRIMARY answers (start_primary.sh waits for that).
        """
        try:
            self.pid = _start(self.data_dir, self.port, self.env)
        except _PortBusy:
            self.port = free_port()
            self.pid = _start(self.data_dir, self.port, self.env)


WRITER_ID: Final = "1"
WRITER_KEY: Final = "0123456789"  # any key: the stand-in Horde below accepts it


def writable_env(horde_url: str) -> dict[str, str]:
    """Upstream's real write path, offline: writes apply at once (no pending queue) for the
    approver WRITER_ID, whom `horde_url` (a stand-in AI Horde, `/v2/find_user` answering
    `{"username": "writer#1"}`) authenticates."""
    return {
        "AI_HORDE_URL": horde_url,
        "HORDE_MODEL_REFERENCE_PENDING_QUEUE__ENABLED": "false",
        "HORDE_MODEL_REFERENCE_PENDING_QUEUE__APPROVER_IDS": json.dumps([WRITER_ID]),
    }


def start_v2_primary(data_dir: Path, env: dict[str, str] | None = None) -> Primary:
    """A PRIMARY in upstream's default v2-canonical mode (v2 has the write API; the v1 layer
    is read-only and not re-derived). start_primary.sh pins legacy-canonical, so the data dir
    is seeded by it (v2 files and meta/ derived from the legacy seed), and then served by
    uvicorn as that script does, with `CANONICAL_FORMAT=v2`; stopped like any other."""
    seeded = start_primary(data_dir)
    seeded.stop()
    settings = {
        "AIWORKER_CACHE_HOME": str(data_dir),
        "LOGS_FOLDER": str(data_dir / "logs"),
        "HORDE_MODEL_REFERENCE_REPLICATE_MODE": "PRIMARY",
        "HORDE_MODEL_REFERENCE_CANONICAL_FORMAT": "v2",
        "HORDE_MODEL_REFERENCE_GITHUB_SEED_ENABLED": "false",
        "HORDE_MODEL_REFERENCE_MAKE_FOLDERS": "true",
        "HAIDRA_USE_DEFAULT_ENV_FILES": "0",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    app = "horde_model_reference.service.app:app"
    # Detached (its own session, not our child), as start_primary.sh leaves it: the PID it
    # prints is what stop_primary.sh stops.
    launch = (
        f'exec nohup "{peer_python()}" -m uvicorn {app} --host 127.0.0.1 --port "$1" '
        '>"$2" 2>&1 </dev/null & echo $!'
    )
    primary = Primary(data_dir=data_dir, port=free_port(), pid=0, env=settings)
    started = subprocess.run(
        ["bash", "-c", launch, "launch", str(primary.port), str(primary.log_path)],
        env=clean_env(**settings),
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    primary.pid = int(started.stdout.strip())
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            mode = primary.get_json("/replicate_mode")
            if mode["canonical_format"] == "v2" and Path(f"/proc/{primary.pid}").exists():
                return primary  # ours (a port taken meanwhile would answer, but not as v2)
        except OSError:
            time.sleep(0.2)
    primary.stop()
    pytest.fail(f"the v2-canonical PRIMARY did not start:\n{primary.log_path.read_text()[-4000:]}")


class _PortBusy(Exception):
    pass


def _start(data_dir: Path, port: int, env: dict[str, str] | None = None) -> int:
    script = shared_dir() / "peer" / "start_primary.sh"
    if not script.is_file():
        pytest.fail(f"cannot start the PRIMARY: {script} not found (set HRS_SHARED_DIR)")
    try:
        proc = subprocess.run(
            [str(script), str(port)],
            env=clean_env(PEER_DATA_DIR=str(data_dir), **(env or {})),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"start_primary.sh {port} did not finish in {exc.timeout}s: {exc.stderr!r}")
    if proc.returncode != 0 and "already in use" in proc.stderr:
        raise _PortBusy(proc.stderr)
    pid = proc.stdout.strip()
    if proc.returncode != 0 or not pid.isdigit():
        pytest.fail(
            f"the upstream PRIMARY did not start (start_primary.sh {port} exited "
            f"{proc.returncode}, stdout {proc.stdout!r}); run `make peer` first.\n"
            f"stderr:\n{proc.stderr}"
        )
    return int(pid)


def _stop(pid: int) -> None:
    script = shared_dir() / "peer" / "stop_primary.sh"
    subprocess.run([str(script), str(pid)], capture_output=True, timeout=30, check=False)


def start_primary(data_dir: Path, env: dict[str, str] | None = None) -> Primary:
    """Start a PRIMARY on a free port, retrying if another process wins the port race."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        port = free_port()
        try:
            pid = _start(data_dir, port, env)
        except _PortBusy:
            continue
        return Primary(data_dir=data_dir, port=port, pid=pid, env=dict(env or {}))
    pytest.fail("no free port for the PRIMARY after 3 attempts")


@dataclass(frozen=True, slots=True)
class CliRun:
    """One finished `horde-replica-sync` process."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines on stderr."""
        events = []
        for line in self.stderr.splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    @property
    def category_events(self) -> list[dict[str, Any]]:
        """One `sync.category_done` event per category and layer."""
        return [e for e in self.events if e.get("event") == "sync.category_done"]

    @property
    def bytes_downloaded(self) -> int:
        """Body bytes the run downloaded, as its log reports them."""
        return sum(int(e.get("bytes_downloaded") or 0) for e in self.category_events)

    @property
    def category_bytes_downloaded(self) -> int:
        """Body bytes the run downloaded for categories (the catalogs' checks left out)."""
        events = (e for e in self.category_events if e.get("layer") != "catalog")
        return sum(int(e.get("bytes_downloaded") or 0) for e in events)

    @property
    def run_seconds(self) -> float:
        """The engine's duration of the whole run, change detection included (`sync.run_done`)."""
        done = [e for e in self.events if e.get("event") == "sync.run_done"]
        return float(done[-1]["duration_seconds"]) if done else float("nan")

    def describe(self) -> str:
        """Everything needed to debug a failed assertion."""
        return (
            f"$ {' '.join(self.args)}\nexit {self.returncode} after {self.seconds:.2f}s\n"
            f"--- stdout\n{self.stdout}\n--- stderr (tail)\n{self.stderr[-4000:]}"
        )


def run_sync(primary_url: str, replica_dir: Path, *extra: str) -> CliRun:
    """Run `horde-replica-sync sync --once` against `primary_url`, GitHub fallback off."""
    args = (
        sys.executable,
        "-m",
        "horde_replica_sync",
        "sync",
        "--once",
        "--no-fallback",
        "--primary-url",
        primary_url,
        "--replica-dir",
        str(replica_dir),
        *extra,
    )
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            args,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(args)} did not finish in {exc.timeout}s; stderr: {exc.stderr!r}")
    return CliRun(args, proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started)


FileStamp = tuple[int, int]  # (st_ino, st_mtime_ns)


def snapshot(replica_dir: Path) -> dict[str, FileStamp]:
    """Inode and mtime of every file under the replica, except the lock and our state."""
    stamps: dict[str, FileStamp] = {}
    for path in replica_dir.rglob("*"):
        rel = path.relative_to(replica_dir)
        if rel.parts[0] in (STATE_DIR_NAME, LOCK_FILE_NAME) or not path.is_file():
            continue
        stat = path.stat()
        stamps[rel.as_posix()] = (stat.st_ino, stat.st_mtime_ns)
    return stamps


def changed_files(before: dict[str, FileStamp], after: dict[str, FileStamp]) -> list[str]:
    """Files created, rewritten (new inode or mtime) or removed between two snapshots."""
    return sorted(rel for rel in before.keys() | after.keys() if before.get(rel) != after.get(rel))


@dataclass(frozen=True, slots=True)
class SyncedReplica:
    """A replica made by one cold sync from the session PRIMARY, with that run's numbers."""

    path: Path
    run: CliRun
    requests: int
    files: dict[str, FileStamp]


def fresh_replica(primary: Primary, replica: Path) -> dict[str, FileStamp]:
    """Cold-sync `replica` from `primary` (must succeed); return its snapshot."""
    run = run_sync(primary.base_url, replica)
    assert run.returncode == 0, run.describe()
    return snapshot(replica)


TIMESTAMPS = ("created_at", "updated_at")


def without_timestamps(records: dict[str, Any]) -> dict[str, Any]:
    """The records with metadata timestamps removed (and a metadata block left empty, too)."""
    result: dict[str, Any] = {}
    for key, record in records.items():
        copy = dict(record)
        metadata = {k: v for k, v in copy.pop("metadata", {}).items() if k not in TIMESTAMPS}
        if metadata:
            copy["metadata"] = metadata
        result[key] = copy
    return result


def describe_differences(ours: dict[str, Any], primary: dict[str, Any]) -> list[str]:
    """One line per record that is missing, extra or different (naming the differing fields)."""
    lines = [f"missing {key!r}" for key in primary if key not in ours]
    lines += [f"extra {key!r}" for key in ours if key not in primary]
    for key in primary.keys() & ours.keys():
        if ours[key] != primary[key]:
            fields = sorted(
                name
                for name in ours[key].keys() | primary[key].keys()
                if ours[key].get(name) != primary[key].get(name)
            )
            lines.append(f"{key!r} differs in {fields}")
    return lines
