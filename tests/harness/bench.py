"""The bench's measurements: horde-replica-sync against the real upstream PRIMARY and client.

Everything is a separate process: the upstream PRIMARY (`../shared/peer/start_primary.sh`, its
own venv), our CLI and daemon (`python -m horde_replica_sync`), and upstream's REPLICA client
(`upstream_client.py` under the peer venv). Every client reaches the PRIMARY through a
byte-counting TCP relay in this process, so "bytes" are the same wire bytes (headers + bodies)
for both clients; requests are the `"GET ` lines of the PRIMARY's access log.

Measured, each by its own function returning its own result: (a) a no-change `sync --once`
(requests, bytes, files written, CPU), (b) a cold sync of every category and both layers (wall
time), (c) change propagation (PRIMARY data changed and restarted -> file on disk) after
SIGUSR1 and on a 5 s schedule, (d) the daemon's resident memory after 100 forced and 100
unforced runs, (e) the same figures for upstream's client, (f) a fleet of FLEET_HOSTS hosts
with and without the site cache (`fleet.py`). `run_bench` runs them all; `bench_report` turns
the results into the table and docs/bench.md.
"""

from __future__ import annotations

import contextlib
import json
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, spec_for
from tests.environment import clean_env
from tests.harness.fleet import FleetFigures, measure_fleet
from tests.harness.relay import Relay
from tests.interop.peer import (
    CliRun,
    FileStamp,
    Primary,
    changed_files,
    peer_python,
    run_sync,
    snapshot,
    start_primary,
)
from tests.processes import DaemonProcess

UPSTREAM_CLIENT: Final = Path(__file__).with_name("upstream_client.py")
LEGACY_CATEGORIES: Final = tuple(
    c.value for c in MODEL_REFERENCE_CATEGORY if spec_for(c).has_legacy
)
NO_CHANGE_REPEATS: Final = 3
PROPAGATION_TRIALS: Final = 3
RSS_RUNS: Final = 100
SCHEDULE_SECONDS: Final = 5
FLEET_HOSTS: Final = 50
RUN_POLL_SECONDS: Final = 0.002  # how often a wait for `sync.run_done` looks at the log

Memory = dict[str, int]  # VmRSS / VmHWM in KiB


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def children_cpu() -> float:
    """User + system CPU seconds of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- traffic, our processes, files ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Traffic:
    """Requests to the PRIMARY and bytes to the client over one interval."""

    requests: int
    wire_bytes: int


@contextlib.contextmanager
def measured(primary: Primary, relay: Relay) -> Iterator[list[Traffic]]:
    """Yields a list that holds one `Traffic` after the block."""
    out: list[Traffic] = []
    requests, down = primary.request_count(), relay.bytes_down()
    yield out
    time.sleep(0.15)  # uvicorn logs the access line just after the response
    out.append(Traffic(primary.request_count() - requests, relay.bytes_down() - down))


@dataclass(frozen=True, slots=True)
class TimedSync:
    """One finished `sync --once` and the CPU its process used."""

    run: CliRun
    cpu: float

    @property
    def wall(self) -> float:
        """Process wall time."""
        return self.run.seconds


def sync_once(url: str, replica: Path) -> TimedSync:
    """`sync --once --no-fallback` into `replica`; it must succeed."""
    cpu = children_cpu()
    run = run_sync(url, replica)
    timed = TimedSync(run, children_cpu() - cpu)
    if run.returncode != 0:
        msg = f"sync --once exited {run.returncode}:\n{run.describe()}"
        raise RuntimeError(msg)
    return timed


def start_daemon(url: str, replica: Path, *, interval: float, config: Path) -> DaemonProcess:
    """`horde-replica-sync run` on `interval`, no jitter, GitHub fallback off."""
    env = clean_env(
        HORDE_REPLICA_CONFIG=str(config),
        HORDE_REPLICA_INTERVAL_JITTER_SECONDS="0",
        HORDE_REPLICA_INIT_INTERVAL_SECONDS=str(max(1, int(interval))),
    )
    args = ["--no-fallback", "--primary-url", url, "--replica-dir", str(replica)]
    return DaemonProcess([*args, "--interval", str(interval)], env)


def wait_runs(daemon: DaemonProcess, count: int, timeout: float = 60.0, **fields: Any) -> None:
    """Wait until `count` `sync.run_done` events matching `fields` were logged."""
    daemon.wait_for("sync.run_done", count=count, timeout=timeout, poll=RUN_POLL_SECONDS, **fields)


def forced_run(daemon: DaemonProcess) -> None:
    """SIGUSR1 (our own child, by PID), then wait for that forced run to finish."""
    count = len(daemon.matching("sync.run_done", forced=True))
    daemon.signal(signal.SIGUSR1)
    wait_runs(daemon, count + 1, forced=True)


def stamp_of(path: Path) -> FileStamp:
    """(inode, mtime) of `path`."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def wait_for_change(path: Path, before: FileStamp, timeout: float) -> float:
    """Poll `path` until its (inode, mtime) differs from `before`; the moment it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if stamp_of(path) != before:
                return time.monotonic()
        time.sleep(0.001)
    msg = f"{path} did not change within {timeout} s"
    raise RuntimeError(msg)


def change_data(primary: Primary, marker: str) -> None:
    """Edit legacy esrgan.json and drop meta/ so a restart re-derives v2 and last_updated."""
    path = primary.legacy_dir / "esrgan.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    first = next(iter(data.values()))
    first["description"] = f"{first.get('description', '')} [{marker}]"
    path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")
    shutil.rmtree(primary.data_dir / "horde_model_reference" / "meta", ignore_errors=True)


def restart_changed(primary: Primary, marker: str) -> float:
    """Stop, change the data, start; the moment it answered again ("ready")."""
    primary.stop()
    change_data(primary, marker)
    primary.start()
    return time.monotonic()


# -- upstream's client ---------------------------------------------------------------------------


class UpstreamClient:
    """upstream_client.py under the peer venv, driven phase by phase."""

    def __init__(self, url: str, cache: Path) -> None:
        python = peer_python()
        if not python.exists():
            msg = f"peer venv missing ({python}); run `make peer`"
            raise RuntimeError(msg)
        self.cpu_before = children_cpu()
        self.proc = subprocess.Popen(
            [str(python), str(UPSTREAM_CLIENT), url, str(cache), ",".join(LEGACY_CATEGORIES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=clean_env(),
        )

    def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            msg = f"upstream client exited {self.proc.wait()} early"
            raise RuntimeError(msg)
        data: dict[str, Any] = json.loads(line)
        return data

    def ready(self) -> dict[str, Any]:
        """Wait for the manager to exist."""
        return self._line()

    def phase(self) -> dict[str, Any]:
        """Run the next phase; its report."""
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write("go\n")
        stdin.flush()
        return self._line()

    def finish(self) -> float:
        """Let it exit; its whole-process CPU seconds."""
        stdin = self.proc.stdin
        assert stdin is not None
        with contextlib.suppress(BrokenPipeError):
            stdin.write("go\n")
            stdin.close()
        self.proc.wait(timeout=30)
        return children_cpu() - self.cpu_before


# -- the rig every measurement runs on -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rig:
    """Two PRIMARYs (`main` measured, `side` for the unforced-run daemon), the relay to `main`."""

    work: Path
    config: Path
    main: Primary
    side: Primary
    relay: Relay

    @property
    def replica(self) -> Path:
        """Our replica, synced from `main` through the relay."""
        return self.work / "replica"


@contextlib.contextmanager
def rig(work: Path) -> Iterator[Rig]:
    """Start both PRIMARYs (in parallel) and the relay; stop them after the block."""
    config = work / "config.toml"
    config.write_text("# bench: flags and environment only\n")
    log("starting two upstream PRIMARYs (one measured, one for the unforced-run daemon)")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(start_primary, work / name) for name in ("primary", "primary-side")]
    started = [f.result() for f in futures if f.exception() is None]
    try:
        if len(started) < len(futures):
            for future in futures:
                future.result()  # raises the first start failure
        main, side = started
        relay = Relay(lambda: main.port)
        try:
            yield Rig(work, config, main, side, relay)
        finally:
            relay.close()
    finally:
        for primary in started:
            primary.stop()


# -- the measurements ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColdSync:
    """(b) one `sync --once` into an empty directory."""

    sync: TimedSync
    traffic: Traffic
    files: int


def measure_cold_sync(rig: Rig) -> ColdSync:
    """(b) cold sync, every category and both layers."""
    log("(b) cold sync --once")
    with measured(rig.main, rig.relay) as traffic:
        sync = sync_once(rig.relay.url, rig.replica)
    return ColdSync(sync, traffic[0], len(snapshot(rig.replica)))


@dataclass(frozen=True, slots=True)
class NoChangeRun:
    """One no-change `sync --once`: the run, its traffic, the files it wrote."""

    sync: TimedSync
    traffic: Traffic
    files_written: int


@dataclass(frozen=True, slots=True)
class NoChange:
    """(a) a few no-change runs; `median` is the one of median wall time."""

    runs: tuple[NoChangeRun, ...]
    metadata_body_bytes: int

    @property
    def median(self) -> NoChangeRun:
        """The run of median wall time."""
        return sorted(self.runs, key=lambda run: run.sync.wall)[len(self.runs) // 2]


def measure_no_change(rig: Rig) -> NoChange:
    """(a) no-change `sync --once` on the synced replica, NO_CHANGE_REPEATS times."""
    log("(a) no-change sync --once")
    runs = []
    for _ in range(NO_CHANGE_REPEATS):
        before = snapshot(rig.replica)
        with measured(rig.main, rig.relay) as traffic:
            sync = sync_once(rig.relay.url, rig.replica)
        written = len(changed_files(before, snapshot(rig.replica)))
        runs.append(NoChangeRun(sync, traffic[0], written))
    metadata = sum(
        len(rig.main.get_bytes(f"/model_references/{family}/metadata/metadata"))
        for family in ("v1", "v2")
    )
    return NoChange(tuple(runs), metadata)


@dataclass(frozen=True, slots=True)
class Upstream:
    """(e) upstream's client: manager creation, a cold fetch, a refresh (phase reports)."""

    ready: dict[str, Any]
    cold: dict[str, Any]
    refresh: dict[str, Any]
    start_traffic: Traffic
    cold_traffic: Traffic
    refresh_traffic: Traffic
    refresh_files: int
    cpu_total: float


def measure_upstream(rig: Rig) -> Upstream:
    """(e) upstream's client: cold fetch, then a refresh (it has no change detection)."""
    log("(e) upstream client: cold fetch and refresh")
    cache = rig.work / "upstream-cache"
    cache.mkdir()
    with measured(rig.main, rig.relay) as start:
        client = UpstreamClient(rig.relay.url, cache)
        ready = client.ready()
    with measured(rig.main, rig.relay) as cold_traffic:
        cold = client.phase()
    before = snapshot(cache)
    with measured(rig.main, rig.relay) as refresh_traffic:
        refresh = client.phase()
    refresh_files = len(changed_files(before, snapshot(cache)))
    return Upstream(
        ready,
        cold,
        refresh,
        start[0],
        cold_traffic[0],
        refresh_traffic[0],
        refresh_files,
        client.finish(),
    )


@dataclass(frozen=True, slots=True)
class Sigusr1Propagation:
    """(c) per trial: (latency ready -> both files on disk, signal delay after ready)."""

    trials: tuple[tuple[float, float], ...]

    @property
    def worst(self) -> float:
        """The largest latency."""
        return max(latency for latency, _ in self.trials)


def measure_sigusr1_propagation(rig: Rig, daemon: DaemonProcess) -> Sigusr1Propagation:
    """(c) change + restart the PRIMARY, SIGUSR1 `daemon` (interval 3600 s): both esrgan files."""
    log(f"(c) propagation after SIGUSR1 x{PROPAGATION_TRIALS}")
    wait_runs(daemon, 1)
    target = rig.replica / "esrgan.json"
    legacy_target = rig.replica / "legacy" / "esrgan.json"
    trials = []
    for trial in range(PROPAGATION_TRIALS):
        v2_before, legacy_before = stamp_of(target), stamp_of(legacy_target)
        ready = restart_changed(rig.main, f"bench-sigusr1-{trial}")
        daemon.signal(signal.SIGUSR1)
        signalled = time.monotonic()
        v2_at = wait_for_change(target, v2_before, timeout=30)
        legacy_at = wait_for_change(legacy_target, legacy_before, timeout=30)
        trials.append((max(v2_at, legacy_at) - ready, signalled - ready))
        if f"bench-sigusr1-{trial}" not in legacy_target.read_text(encoding="utf-8"):
            msg = "the changed legacy file did not reach the replica"
            raise RuntimeError(msg)
    return Sigusr1Propagation(tuple(trials))


@dataclass(frozen=True, slots=True)
class ForcedMemory:
    """(d) resident memory before and after RSS_RUNS forced runs, VmRSS at each quarter."""

    start: Memory
    end: Memory
    trend: tuple[int, ...]
    seconds: float


def measure_forced_memory(daemon: DaemonProcess) -> ForcedMemory:
    """(d) RSS_RUNS forced runs back to back (one SIGUSR1 per run_done: signals coalesce)."""
    log(f"(d) {RSS_RUNS} forced runs")
    start = daemon.memory_kib()
    started = time.monotonic()
    trend = []
    for run_number in range(1, RSS_RUNS + 1):
        forced_run(daemon)
        if run_number % (RSS_RUNS // 4) == 0:
            trend.append(daemon.memory_kib()["VmRSS"])
    seconds = time.monotonic() - started
    return ForcedMemory(start, daemon.memory_kib(), tuple(trend), seconds)


@dataclass(frozen=True, slots=True)
class ScheduledPropagation:
    """(c) latency ready -> v2 file on disk, per trial, with nobody signalling the daemon."""

    latencies: tuple[float, ...]


def measure_scheduled_propagation(rig: Rig) -> ScheduledPropagation:
    """(c) a daemon on a SCHEDULE_SECONDS interval; the change lands at a random moment."""
    log(f"(c) propagation on a {SCHEDULE_SECONDS} s schedule x{PROPAGATION_TRIALS}")
    target = rig.replica / "esrgan.json"
    daemon = start_daemon(rig.relay.url, rig.replica, interval=SCHEDULE_SECONDS, config=rig.config)
    try:
        wait_runs(daemon, 1)
        latencies = []
        rng = random.Random(6)
        for trial in range(PROPAGATION_TRIALS):
            time.sleep(rng.uniform(0, SCHEDULE_SECONDS))
            before = stamp_of(target)
            ready = restart_changed(rig.main, f"bench-scheduled-{trial}")
            at = wait_for_change(target, before, timeout=4 * SCHEDULE_SECONDS)
            latencies.append(at - ready)
    finally:
        daemon.stop()
    return ScheduledPropagation(tuple(latencies))


@dataclass(frozen=True, slots=True)
class BaselineMemory:
    """What our resident memory is made of: `run`'s imports, then the REPLICA cache on top."""

    imports_kib: int
    cached_kib: int


_BASELINE_RSS_CODE: Final = """\
import pathlib, re, sys
import horde_replica_sync.cli, horde_replica_sync.daemon, horde_replica_sync.runtime
def rss():
    status = pathlib.Path('/proc/self/status').read_text()
    return re.search(r'VmRSS:\\s+(\\d+)', status)[1]
print(rss())
root = pathlib.Path(sys.argv[1])
held = [p.read_bytes() for p in root.glob('*.json')]
held += [p.read_text() for p in root.glob('legacy/*.json')]
print(rss())
"""


def measure_baseline_memory(replica: Path) -> BaselineMemory:
    """Resident KiB of a fresh interpreter after `run`'s imports, then after also holding what
    the REPLICA backend caches: every published file as published (v2 bytes, legacy text)."""
    out = subprocess.run(
        [sys.executable, "-c", _BASELINE_RSS_CODE, str(replica)],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    )
    imports, cached = (int(x) for x in out.stdout.split())
    return BaselineMemory(imports, cached)


@dataclass(frozen=True, slots=True)
class UnforcedMemory:
    """(d) the unforced-run daemon on the 1 s schedule, on its own PRIMARY."""

    memory: Memory
    runs: int
    seconds: float
    requests: int


def measure_unforced_memory(rig: Rig, daemon: DaemonProcess, started: float) -> UnforcedMemory:
    """(d) wait for RSS_RUNS + 1 runs of the daemon started at `started`, then read it."""
    log(f"(d) waiting for {RSS_RUNS} unforced runs on the 1 s schedule")
    wait_runs(daemon, RSS_RUNS + 1, timeout=RSS_RUNS * 1.5 + 30)
    memory = daemon.memory_kib()
    seconds = time.monotonic() - started
    requests = rig.side.request_count()
    runs = len(daemon.matching("sync.run_done"))
    daemon.stop()
    return UnforcedMemory(memory, runs, seconds, requests)


def measure_fleet_figures(rig: Rig) -> FleetFigures:
    """(f) FLEET_HOSTS hosts' `sync --once` in turn against the measured PRIMARY (via the
    relay), directly and through the site cache: an idle round and a change round each."""
    log(f"(f) a fleet of {FLEET_HOSTS} hosts, without and with the site cache")
    return measure_fleet(rig.main, rig.relay, rig.work, FLEET_HOSTS)


# -- all of it -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchResults:
    """Every measurement's result."""

    cold: ColdSync
    no_change: NoChange
    upstream: Upstream
    sigusr1: Sigusr1Propagation
    forced_memory: ForcedMemory
    scheduled: ScheduledPropagation
    baseline_memory: BaselineMemory
    unforced_memory: UnforcedMemory
    fleet: FleetFigures


def run_bench(work: Path) -> BenchResults:
    """Run every measurement in `work` (a scratch directory); see the module docstring.

    The unforced-run daemon ticks on its own PRIMARY in the background the whole time (100
    runs on the 1 s minimum schedule take 100 s); the forced one serves (c) and then (d).
    """
    with rig(work) as r, contextlib.ExitStack() as daemons:
        side_url = f"http://127.0.0.1:{r.side.port}/api"
        unforced = start_daemon(side_url, work / "replica-unforced", interval=1, config=r.config)
        daemons.callback(unforced.stop)
        unforced_started = time.monotonic()
        cold = measure_cold_sync(r)
        no_change = measure_no_change(r)
        upstream = measure_upstream(r)
        forced = start_daemon(r.relay.url, r.replica, interval=3600, config=r.config)
        daemons.callback(forced.stop)
        sigusr1 = measure_sigusr1_propagation(r, forced)
        forced_memory = measure_forced_memory(forced)
        forced.stop()
        scheduled = measure_scheduled_propagation(r)
        baseline = measure_baseline_memory(r.replica)
        unforced_memory = measure_unforced_memory(r, unforced, unforced_started)
        fleet = measure_fleet_figures(r)
    return BenchResults(
        cold,
        no_change,
        upstream,
        sigusr1,
        forced_memory,
        scheduled,
        baseline,
        unforced_memory,
        fleet,
    )
