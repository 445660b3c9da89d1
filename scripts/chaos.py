#!/usr/bin/env python
"""Crash-consistency harness (issue #6): SIGKILL syncs at random moments, N times.

    ChangingPrimary (FaultServer, new version of every body on every request)
          ^                                      |
          | GET                                  | sha256 of every body it served
    `sync --once --force` / `run` --SIGKILL--> replica dir <-- reader process (tight loop)

After every kill: each published file equals a version the server served, the state file
parses and matches the schema (and describes only served versions), and the next run (the
server frozen on one version) exits 0, removes the temp files the killed process left and
publishes exactly that version. The reader, a separate process, opens and reads every file
the whole time and must never see a partial or mixed file.

    python scripts/chaos.py --kills 200          # `make chaos`
    python scripts/chaos.py --kills 30 --categories esrgan,blip,clip,codeformer

Exit status 0 when there was no violation, 1 otherwise. `run_chaos()` is the importable
entry point (tests/chaos/test_chaos.py runs a short version of it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python scripts/chaos.py` puts scripts/ first, not the root
    sys.path.insert(0, str(ROOT))

from tests.faultserver import FaultServer, Reply, Seen  # noqa: E402

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, Layer, spec_for  # noqa: E402
from horde_replica_sync.state import SCHEMA_VERSION, ReplicaState  # noqa: E402
from horde_replica_sync.store import (  # noqa: E402
    STATE_FILE,
    TEMP_SUFFIX,
    ReplicaStore,
    sha256_hex,
)

STATE_DIR_NAME: Final = ".horde-replica-sync"
STATE_RELPATH: Final = f"{STATE_DIR_NAME}/{STATE_FILE}"
METADATA_PATHS: Final = tuple(
    f"/api/model_references/{family}/metadata/metadata" for family in ("v1", "v2")
)
DEFAULT_CATEGORIES: Final = tuple(MODEL_REFERENCE_CATEGORY)
CI_CATEGORIES: Final = (
    MODEL_REFERENCE_CATEGORY.blip,
    MODEL_REFERENCE_CATEGORY.clip,
    MODEL_REFERENCE_CATEGORY.esrgan,
    MODEL_REFERENCE_CATEGORY.lora,
)
PROCESS_TIMEOUT_SECONDS: Final = 60.0
MAX_REPORTED: Final = 20  # violations printed in full; the count is always exact


# -- the PRIMARY whose data never stops changing ---------------------------------------------


def body_for(
    category: MODEL_REFERENCE_CATEGORY,
    layer: Layer,
    version: int,
    *,
    min_records: int,
    max_records: int,
) -> bytes:
    """The body of `category`/`layer` at `version`: deterministic, so it can be rebuilt."""
    rng = random.Random(f"{category.value}/{layer.value}/{version}")
    count = rng.randint(min_records, max_records)
    data: dict[str, Any] = {}
    for i in range(count):
        name = f"{category.value}-model-{i}"
        data[name] = {
            "name": name,
            "version": version,
            "layer": layer.value,
            "description": f"{category.value} model {i} as served in version {version}",
            "baseline": "stable_diffusion_xl" if i % 2 else "stable_diffusion_1",
            "nsfw": i % 3 == 0,
            "config": {
                "download": [
                    {
                        "file_name": f"{name}-v{version}.safetensors",
                        "sha256sum": f"{rng.getrandbits(256):064x}",
                    }
                ]
            },
        }
    return json.dumps(data, separators=(",", ":")).encode()


def metadata_body(categories: tuple[MODEL_REFERENCE_CATEGORY, ...], stamp: int) -> bytes:
    """A metadata/metadata body giving every category `stamp`."""
    return json.dumps(
        {c.value: {"category": c.value, "last_updated": stamp} for c in categories}
    ).encode()


class ChangingPrimary(FaultServer):
    """A PRIMARY that serves a new version of every v2/v1 body on every request.

    Every body it ever served is remembered by its sha256 (and version), per replica path,
    so "equals one version the server served" is a set lookup. `freeze()` pins one version
    (and a metadata stamp newer than any before) so a recovery run has one right answer.
    """

    def __init__(
        self,
        categories: tuple[MODEL_REFERENCE_CATEGORY, ...],
        *,
        min_records: int = 200,
        max_records: int = 2000,
    ) -> None:
        super().__init__()
        self.categories = categories
        self.min_records = min_records
        self.max_records = max_records
        self.routes: dict[str, tuple[MODEL_REFERENCE_CATEGORY, Layer]] = {}
        for category in categories:
            self.routes[f"/api/model_references/v2/{category.value}"] = (category, Layer.V2)
            name = spec_for(category).primary_legacy_name
            if name is not None:
                self.routes[f"/api/model_references/v1/{name}"] = (category, Layer.LEGACY)
        self.relpaths = tuple(
            sorted(spec_for(c).relpath(layer) for c, layer in self.routes.values())
        )
        self.served: dict[str, dict[str, int]] = {rel: {} for rel in self.relpaths}
        self.bodies_served = 0
        self._version = 0
        self._frozen: int | None = None
        self._guard = threading.Lock()
        # A killed client resets its connections; that is the point, not an error to print.
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]

    def body(self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, version: int) -> bytes:
        """The body of `category`/`layer` at `version`, with this server's record range."""
        return body_for(
            category,
            layer,
            version,
            min_records=self.min_records,
            max_records=self.max_records,
        )

    def _next_version(self) -> int:
        with self._guard:
            if self._frozen is not None:
                return self._frozen
            self._version += 1
            return self._version

    def next_reply(self, path: str, headers: dict[str, str]) -> Reply:
        """Answer metadata with a moving stamp and data with a brand-new version."""
        with self._lock:  # FaultServer's own lock guards `requests`
            self.requests.append(Seen(path, headers))
        if path in METADATA_PATHS:
            return Reply(body=metadata_body(self.categories, self._next_version()))
        route = self.routes.get(path)
        if route is None:
            return Reply(404, b'{"detail":"Not Found"}')
        category, layer = route
        version = self._next_version()
        body = self.body(category, layer, version)
        with self._guard:  # remembered before a single byte leaves
            self.served[spec_for(category).relpath(layer)][sha256_hex(body)] = version
            self.bodies_served += 1
        return Reply(body=body)

    def freeze(self) -> dict[str, str]:
        """Serve one new version from now on; return each replica path's expected digest."""
        with self._guard:
            self._version += 1
            self._frozen = self._version
            version = self._frozen
        return {
            spec_for(category).relpath(layer): sha256_hex(self.body(category, layer, version))
            for category, layer in self.routes.values()
        }

    def thaw(self) -> None:
        """Go back to a new version per request."""
        with self._guard:
            self._frozen = None

    def version_of(self, relpath: str, digest: str) -> int | None:
        """The version whose body for `relpath` has `digest`, or None if never served."""
        with self._guard:
            return self.served.get(relpath, {}).get(digest)


# -- the reader: a separate process that reads every file in a tight loop ------------------


def reader_main(replica: Path, relpaths: list[str], out: Path) -> int:
    """Read every file until SIGTERM; write what was seen (and any violation) to `out`.

    A read whose bytes equal bytes already parsed is not parsed again (same bytes, same
    result), which keeps the loop tight; every distinct content is parsed and reported by
    digest, so the parent checks each one against what the server served.
    """
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parsed: dict[str, set[str]] = {rel: set() for rel in relpaths}
    present: set[str] = set()
    violations: list[str] = []
    reads = passes = 0
    started = time.monotonic()
    while not stop.is_set():
        passes += 1
        for rel in relpaths:
            try:
                content = (replica / rel).read_bytes()
            except FileNotFoundError:
                if rel in present:
                    violations.append(f"{rel} disappeared after it had been published")
                continue
            reads += 1
            present.add(rel)
            digest = sha256_hex(content)
            if digest in parsed[rel]:
                continue
            problem = _parse_problem(rel, content)
            if problem is not None:
                violations.append(problem)
                continue
            parsed[rel].add(digest)
    result = {
        "reads": reads,
        "passes": passes,
        "seconds": round(time.monotonic() - started, 3),
        "seen": {rel: sorted(digests) for rel, digests in parsed.items()},
        "violations": violations,
    }
    out.write_text(json.dumps(result))
    return 0


def _parse_problem(rel: str, content: bytes) -> str | None:
    """Why `content` is not a complete file of `rel`, or None when it is."""
    where = f"{rel} ({len(content)} bytes, ends {content[-24:]!r})"
    try:
        if rel == STATE_RELPATH:
            json.loads(content)
            state = ReplicaState.model_validate_json(content)
            if state.schema_version != SCHEMA_VERSION:
                return f"{where}: state schema {state.schema_version}"
            return None
        data = json.loads(content)
    except ValueError as exc:
        return f"{where}: does not parse ({str(exc)[:120]})"
    if not isinstance(data, dict) or not all(
        isinstance(r, dict) and isinstance(r.get("name"), str) for r in data.values()
    ):
        return f"{where}: not an object of named records"
    return None


# -- the harness ---------------------------------------------------------------------------


@dataclass
class ChaosConfig:
    """One chaos session."""

    kills: int = 200
    categories: tuple[MODEL_REFERENCE_CATEGORY, ...] = DEFAULT_CATEGORIES
    min_records: int = 200
    max_records: int = 2000
    run_mode_share: float = 0.25  # fraction of kills aimed at `run` instead of `sync --once`
    seed: int | None = None
    workdir: Path | None = None  # default: a temp dir, removed afterwards
    python: str = sys.executable
    verbose: bool = False


@dataclass
class ChaosResult:
    """What a chaos session saw; `ok` when there was no violation."""

    kills: int = 0
    kills_by_mode: Counter[str] = field(default_factory=Counter)
    aimed: int = 0
    finished_before_kill: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    temp_files_after_kill: int = 0
    temp_files_cleaned: int = 0
    recoveries: int = 0
    post_kill_files_checked: int = 0
    reader_reads: int = 0
    reader_passes: int = 0
    reader_distinct_versions: int = 0
    bodies_served: int = 0
    requests: int = 0
    full_run_seconds: float = 0.0
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)
    seconds: float = 0.0
    seed: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No violation at all."""
        return not self.violations

    def summary(self) -> str:
        """A human summary, ending with the violation count."""
        modes = ", ".join(f"{n} {mode}" for mode, n in sorted(self.kills_by_mode.items()))
        phases = ", ".join(f"{n} {phase}" for phase, n in sorted(self.phases.items()))
        windows = "; ".join(
            f"{mode} writes {a:.2f}-{b:.2f} s after start" for mode, (a, b) in self.windows.items()
        )
        lines = [
            f"chaos: {self.kills} SIGKILLs ({modes}) in {self.seconds:.1f} s, seed {self.seed}; "
            f"a forced `sync --once` takes {self.full_run_seconds:.2f} s; {windows}",
            f"  {self.aimed} kills aimed at the publish window, the rest anywhere; landed: "
            f"{phases}; {self.finished_before_kill} runs finished before "
            "their kill (not counted)",
            f"  temp files left by kills: {self.temp_files_after_kill}, all removed at the "
            f"next start: {self.temp_files_cleaned == self.temp_files_after_kill}",
            f"  after-kill checks: {self.post_kill_files_checked} published files, "
            f"{self.kills} state files; recoveries: {self.recoveries}/{self.kills} exit 0 "
            "with the current version",
            f"  reader: {self.reader_reads} reads in {self.reader_passes} passes, "
            f"{self.reader_distinct_versions} distinct file versions seen",
            f"  server: {self.requests} requests, {self.bodies_served} bodies served",
            f"violations: {len(self.violations)}",
        ]
        lines += [f"  VIOLATION {v}" for v in self.violations[:MAX_REPORTED]]
        if len(self.violations) > MAX_REPORTED:
            lines.append(f"  ... and {len(self.violations) - MAX_REPORTED} more")
        return "\n".join(lines)


class _Session:
    """The moving parts of one chaos session."""

    def __init__(self, config: ChaosConfig, workdir: Path, result: ChaosResult) -> None:
        self.config = config
        self.result = result
        self.rng = random.Random(result.seed)
        self.replica = workdir / "replica"
        self.state_dir = self.replica / STATE_DIR_NAME
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        config_file = workdir / "config.toml"
        config_file.write_text("# chaos: settings come from the environment\n")
        self.server = ChangingPrimary(
            config.categories, min_records=config.min_records, max_records=config.max_records
        )
        self.store = ReplicaStore(self.replica, self.state_dir)
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("HORDE_REPLICA_", "NOTIFY"))
        }
        env.update(
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            HORDE_REPLICA_CONFIG=str(config_file),
            HORDE_REPLICA_CATEGORIES=",".join(c.value for c in config.categories),
            HORDE_REPLICA_REPLICA_DIR=str(self.replica),
            HORDE_REPLICA_GITHUB_FALLBACK="false",
            HORDE_REPLICA_MAX_SHRINK_FRACTION="1",  # sizes swing 10x between versions on purpose
            HORDE_REPLICA_RETRY_INITIAL_SECONDS="0.01",
            HORDE_REPLICA_RETRY_MAX_SECONDS="0.05",
            HORDE_REPLICA_INTERVAL_SECONDS="1",
            HORDE_REPLICA_INIT_INTERVAL_SECONDS="1",
            HORDE_REPLICA_INTERVAL_JITTER_SECONDS="0",
            HORDE_REPLICA_METRICS_ADDR="127.0.0.1:0",
        )
        self.env = env
        self.run_number = 0
        self.full = 0.0
        self.windows: dict[str, tuple[float, float]] = {}

    # -- processes ------------------------------------------------------------------------

    def command(self, mode: str, *, force: bool) -> list[str]:
        base = [self.config.python, "-m", "horde_replica_sync"]
        if mode == "run":
            return [*base, "run", "--primary-url", f"{self.server.url}/api"]
        extra = ["--force"] if force else []
        return [*base, "sync", "--once", "--primary-url", f"{self.server.url}/api", *extra]

    def start(self, mode: str, *, force: bool) -> tuple[subprocess.Popen[bytes], Path]:
        self.run_number += 1
        log = self.logs / f"{self.run_number:05d}-{mode}.log"
        with log.open("wb") as handle:
            proc = subprocess.Popen(
                self.command(mode, force=force),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.replica.parent,
            )
        return proc, log

    def complete_run(self, *, force: bool) -> tuple[int, float, Path]:
        started = time.perf_counter()
        proc, log = self.start("once", force=force)
        try:
            code = proc.wait(timeout=PROCESS_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = -9
        return code, time.perf_counter() - started, log

    # -- observations ---------------------------------------------------------------------

    def digests(self) -> dict[str, str]:
        found = {}
        for rel in self.server.relpaths:
            with contextlib.suppress(FileNotFoundError):
                found[rel] = sha256_hex((self.replica / rel).read_bytes())
        return found

    def temp_files(self) -> list[Path]:
        dirs = (self.replica, self.replica / "legacy", self.state_dir)
        return sorted(p for d in dirs if d.is_dir() for p in d.glob(f".*{TEMP_SUFFIX}"))

    def violation(self, message: str) -> None:
        self.result.violations.append(message)
        if self.config.verbose:
            sys.stderr.write(f"VIOLATION {message}\n")

    def check_published(self, when: str) -> dict[str, str]:
        """Every published file equals a served version; the state is valid and truthful."""
        on_disk = self.digests()
        for rel, digest in on_disk.items():
            self.result.post_kill_files_checked += 1
            if self.server.version_of(rel, digest) is None:
                content = (self.replica / rel).read_bytes()
                problem = _parse_problem(rel, content) or "parses, but was never served"
                self.violation(f"{when}: {rel} is not a served version: {problem}")
        self.check_state(when)
        return on_disk

    def check_state(self, when: str) -> ReplicaState | None:
        path = self.state_dir / STATE_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            self.violation(f"{when}: {path} is missing")
            return None
        try:
            json.loads(raw)
            state = ReplicaState.model_validate_json(raw)
        except ValueError as exc:
            self.violation(f"{when}: state file invalid: {str(exc)[:200]}")
            return None
        if state.schema_version != SCHEMA_VERSION:
            self.violation(f"{when}: state schema {state.schema_version} != {SCHEMA_VERSION}")
        loaded = self.store.load_state()
        if loaded != state:
            self.violation(f"{when}: ReplicaStore.load_state() did not load the state file")
        for category, category_state in state.categories.items():
            for layer in spec_for(category).layers:
                for rel, record in category_state.layer(layer).files.items():
                    if self.server.version_of(rel, record.sha256) is None:
                        self.violation(
                            f"{when}: state describes {rel} {record.sha256[:12]}, never served"
                        )
        return state

    # -- the steps ------------------------------------------------------------------------

    def calibrate(self) -> None:
        """Complete runs: the replica exists, and we know when each kind of run writes."""
        code, _, log = self.complete_run(force=False)
        if code != 0:
            msg = f"calibration run exited {code}:\n{log.read_text()[-3000:]}"
            raise RuntimeError(msg)
        started = time.time()
        code, took, log = self.complete_run(force=True)
        if code != 0:
            msg = f"calibration run exited {code}:\n{log.read_text()[-3000:]}"
            raise RuntimeError(msg)
        self.full = took
        self.windows["once"] = self.write_window(started)
        started = time.time()
        proc, log = self.start("run", force=False)
        deadline = time.monotonic() + PROCESS_TIMEOUT_SECONDS
        while b"sync.run_done" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)  # our own child, by its PID
        if proc.wait(timeout=PROCESS_TIMEOUT_SECONDS) != 0:
            msg = f"calibration daemon failed:\n{log.read_text()[-3000:]}"
            raise RuntimeError(msg)
        self.windows["run"] = self.write_window(started)
        self.check_published("after calibration")

    def write_window(self, started: float) -> tuple[float, float]:
        """Seconds from a process start to its first and last published file."""
        offsets = [(self.replica / rel).stat().st_mtime - started for rel in self.server.relpaths]
        return max(0.0, min(offsets)), max(offsets)

    def listing(self) -> frozenset[tuple[str, int]]:
        """(name, inode) of every entry in the data directories: changes on every publish."""
        entries: set[tuple[str, int]] = set()
        for directory in (self.replica, self.replica / "legacy"):
            with contextlib.suppress(FileNotFoundError), os.scandir(directory) as it:
                entries.update((entry.name, entry.inode()) for entry in it)
        return frozenset(entries)

    def wait_for_publishing(self, proc: subprocess.Popen[bytes], baseline: frozenset[Any]) -> bool:
        """Poll until the run starts publishing (a temp file or a new inode); False if it ended."""
        while proc.poll() is None:
            if self.listing() != baseline:
                return True
            time.sleep(0.0005)
        return False

    def kill_one(self) -> bool:
        """Start a run, SIGKILL it at a random moment; False when it finished first.

        Most kills are aimed: wait until the run starts publishing, then kill within the
        publish window. The rest land anywhere from process start to the end of the run
        (`run` syncs at once, then every second: the span of two runs).
        """
        mode = "run" if self.rng.random() < self.config.run_mode_share else "once"
        first, last = self.windows[mode]
        aimed = self.rng.random() < 0.7
        before = self.digests()
        baseline = self.listing()
        proc, log = self.start(mode, force=True)
        if aimed:
            delay = self.rng.uniform(0.0, (last - first) * 1.1 + 0.01)
            publishing = self.wait_for_publishing(proc, baseline)
        else:
            delay = self.rng.uniform(0.0, last + (1.2 if mode == "run" else 0.05))
            publishing = True
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=delay if publishing else None)
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)  # our own child, by its PID
            proc.wait()
        code = None if proc.returncode == -signal.SIGKILL else proc.returncode
        if code is not None:
            self.result.finished_before_kill += 1
            if code != 0:
                self.violation(f"{mode} run exited {code} unkilled:\n{log.read_text()[-2000:]}")
            self.recover("after an unkilled run")
            return False
        self.result.aimed += int(aimed)
        when = f"kill #{self.result.kills + 1} ({mode}, {'aimed ' if aimed else ''}{delay:.3f} s)"
        self.result.kills += 1
        self.result.kills_by_mode[mode] += 1
        temps = self.temp_files()
        after = self.check_published(when)
        changed = sum(1 for rel, d in after.items() if before.get(rel) != d)
        if temps:
            phase = "mid-write (temp file left)"
        elif changed == 0:
            phase = "before any publish"
        elif changed < len(self.server.relpaths):
            phase = "mid-publish (some files new)"
        else:
            phase = "after all files published"
        self.result.phases[phase] += 1
        self.result.temp_files_after_kill += len(temps)
        self.recover(when, temps)
        return True

    def recover(self, when: str, temps: list[Path] | None = None) -> None:
        """The next run (non-forced, server frozen) exits 0 and publishes the current version."""
        expected = self.server.freeze()
        try:
            code, _, log = self.complete_run(force=False)
        finally:
            self.server.thaw()
        if code != 0:
            self.violation(f"recovery {when} exited {code}:\n{log.read_text()[-2000:]}")
            return
        if temps is not None:
            self.result.recoveries += 1
        for temp in temps or []:
            if temp.exists():
                self.violation(f"recovery {when}: temp file {temp} still there")
            else:
                self.result.temp_files_cleaned += 1
        if leftover := self.temp_files():
            self.violation(f"recovery {when}: temp files after a clean run: {leftover}")
        on_disk = self.digests()
        for rel, digest in expected.items():
            if on_disk.get(rel) != digest:
                self.violation(f"recovery {when}: {rel} is not the current version")
        state = self.check_state(f"recovery {when}")
        if state is None:
            return
        for rel, digest in expected.items():
            records = [
                state.layer(c, layer).files.get(rel)
                for c in self.config.categories
                for layer in spec_for(c).layers
            ]
            record = next((r for r in records if r is not None), None)
            if record is None or record.sha256 != digest:
                self.violation(f"recovery {when}: state does not record {rel}'s current digest")
        errors = [
            f"{c.value}/{layer.value}: {state.layer(c, layer).last_error}"
            for c in self.config.categories
            for layer in spec_for(c).layers
            if state.layer(c, layer).last_error is not None
        ]
        if errors:
            self.violation(f"recovery {when}: state still records errors {errors}")


def run_chaos(config: ChaosConfig) -> ChaosResult:
    """Run one chaos session; see the module docstring."""
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**32)
    result = ChaosResult(seed=seed)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if config.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hrs-chaos-")))
        else:
            workdir = config.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        session = _Session(config, workdir, result)
        session.server.start()
        stack.callback(session.server.stop)
        session.calibrate()
        result.full_run_seconds = session.full
        result.windows = dict(session.windows)
        reader_out = workdir / "reader.json"
        reader = subprocess.Popen(
            [
                config.python,
                str(Path(__file__).resolve()),
                "--reader",
                str(session.replica),
                str(reader_out),
                ",".join([*session.server.relpaths, STATE_RELPATH]),
            ],
            stdin=subprocess.DEVNULL,
            env=session.env,
        )
        try:
            while result.kills < config.kills:
                session.kill_one()
                if config.verbose and result.kills % 10 == 0:
                    sys.stderr.write(f"  {result.kills} kills ...\n")
        finally:
            reader.send_signal(signal.SIGTERM)  # our own child, by its PID
            try:
                reader_code = reader.wait(timeout=30)
            except subprocess.TimeoutExpired:
                reader.kill()
                reader_code = reader.wait()
        _account_reader(session, reader_code, reader_out)
        result.bodies_served = session.server.bodies_served
        result.requests = session.server.count()
    result.seconds = time.monotonic() - started
    return result


def _account_reader(session: _Session, code: int, out: Path) -> None:
    result = session.result
    if code != 0 or not out.exists():
        session.violation(f"the reader process exited {code} without a report")
        return
    report = json.loads(out.read_text())
    result.reader_reads = report["reads"]
    result.reader_passes = report["passes"]
    for problem in report["violations"]:
        session.violation(f"reader: {problem}")
    for rel, digests in report["seen"].items():
        for digest in digests:
            result.reader_distinct_versions += 1
            if rel == STATE_RELPATH:
                continue
            if session.server.version_of(rel, digest) is None:
                session.violation(f"reader: saw a version of {rel} the server never served")
    if result.reader_reads == 0:
        session.violation("reader: no file was ever read")


def _categories(text: str) -> tuple[MODEL_REFERENCE_CATEGORY, ...]:
    from horde_replica_sync.categories import parse_categories

    return parse_categories(text)


def main(argv: list[str] | None = None) -> int:
    """The command line; see the module docstring."""
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["--reader"]:
        replica, out, relpaths = args_list[1:4]
        return reader_main(Path(replica), relpaths.split(","), Path(out))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs to deliver (200)")
    parser.add_argument("--categories", type=_categories, default=DEFAULT_CATEGORIES)
    parser.add_argument("--min-records", type=int, default=200)
    parser.add_argument("--max-records", type=int, default=2000)
    parser.add_argument("--run-share", type=float, default=0.25, help="share of `run` kills")
    parser.add_argument("--seed", type=int, help="replay a session")
    parser.add_argument("--workdir", type=Path, help="keep the replica and logs here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(args_list)
    config = ChaosConfig(
        kills=args.kills,
        categories=args.categories,
        min_records=args.min_records,
        max_records=args.max_records,
        run_mode_share=args.run_share,
        seed=args.seed,
        workdir=args.workdir,
        verbose=args.verbose,
    )
    result = run_chaos(config)
    sys.stdout.write(result.summary() + "\n")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
