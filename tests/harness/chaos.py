"""Crash-consistency harness (issue #6): SIGKILL syncs at random moments, N times.

    ChangingPrimary (FaultServer, new version of every body on every request)
          ^                                      |
          | GET                                  | sha256 of every body it served
    `sync --once --force` / `run` --SIGKILL--> replica dir <-- reader process (tight loop)

After every kill: each published file equals a version the server served, the state file
parses and matches the schema (and describes only served versions), and the next run (the
server frozen on one version) exits 0, removes the temp files the killed process left and
publishes exactly that version. The reader (`replica_reader`, a separate process) opens and
reads every file the whole time and must never see a partial or mixed file.

`run_chaos()` is the entry point: `make chaos` (`python -m scripts.chaos`) runs it with 200
kills, tests/chaos/test_chaos.py a short version.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, spec_for
from horde_replica_sync.state import SCHEMA_VERSION, ReplicaState
from horde_replica_sync.store import STATE_FILE, TEMP_SUFFIX, ReplicaStore, sha256_hex
from tests.environment import ROOT, clean_env
from tests.harness.changing_primary import ChangingPrimary
from tests.harness.replica_reader import STATE_DIR_NAME, STATE_RELPATH, parse_problem

DEFAULT_CATEGORIES: Final = tuple(MODEL_REFERENCE_CATEGORY)
CI_CATEGORIES: Final = (
    MODEL_REFERENCE_CATEGORY.blip,
    MODEL_REFERENCE_CATEGORY.clip,
    MODEL_REFERENCE_CATEGORY.esrgan,
    MODEL_REFERENCE_CATEGORY.lora,
)
PROCESS_TIMEOUT_SECONDS: Final = 60.0
MAX_REPORTED: Final = 20  # violations printed in full; the count is always exact


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
        self.env = clean_env(
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
                problem = parse_problem(rel, content) or "parses, but was never served"
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
        with _reading(session, reader_out) as reader_code:
            while result.kills < config.kills:
                session.kill_one()
                if config.verbose and result.kills % 10 == 0:
                    sys.stderr.write(f"  {result.kills} kills ...\n")
        _account_reader(session, reader_code[0], reader_out)
        result.bodies_served = session.server.bodies_served
        result.requests = session.server.count()
    result.seconds = time.monotonic() - started
    return result


@contextlib.contextmanager
def _reading(session: _Session, out: Path) -> Iterator[list[int]]:
    """The reader process for the block; yields a list that holds its exit code afterwards."""
    relpaths = ",".join([*session.server.relpaths, STATE_RELPATH])
    args = [str(session.replica.resolve()), str(out.resolve()), relpaths]
    reader = subprocess.Popen(
        [session.config.python, "-m", "tests.harness.replica_reader", *args],
        stdin=subprocess.DEVNULL,
        env=session.env,
        cwd=ROOT,  # `-m tests...` resolves from the project root
    )
    code: list[int] = []
    try:
        yield code
    finally:
        reader.send_signal(signal.SIGTERM)  # our own child, by its PID
        try:
            code.append(reader.wait(timeout=30))
        except subprocess.TimeoutExpired:
            reader.kill()
            code.append(reader.wait())


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
