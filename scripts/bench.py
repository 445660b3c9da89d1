#!/usr/bin/env python
"""`make bench`: horde-replica-sync against the real upstream PRIMARY and upstream's own client.

Everything is a separate process: the upstream PRIMARY (`../shared/peer/start_primary.sh`, its
own venv), our CLI and daemon (`python -m horde_replica_sync`), and upstream's REPLICA client
(`scripts/bench_upstream_client.py` under the peer venv). Every client reaches the PRIMARY
through a byte-counting TCP relay in this process, so "bytes" are the same wire bytes
(headers + bodies) for both clients; requests are the `"GET ` lines of the PRIMARY's access log.

Measured: (a) a no-change `sync --once` (requests, bytes, files written, CPU), (b) a cold sync
of every category and both layers (wall time), (c) change propagation (PRIMARY data changed and
restarted -> file on disk) after SIGUSR1 and on a 5 s schedule, (d) the daemon's resident
memory after 100 forced and 100 unforced runs, (e) the same figures for upstream's client.
Prints a markdown table and writes it to docs/bench.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python scripts/bench.py` puts scripts/ first, not the root
    sys.path.insert(0, str(ROOT))

from tests.environment import free_port, shared_dir  # noqa: E402
from tests.interop.peer import peer_python  # noqa: E402

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, spec_for  # noqa: E402
from horde_replica_sync.store import LOCK_FILE  # noqa: E402

DOC: Final = ROOT / "docs" / "bench.md"
UPSTREAM_CLIENT: Final = ROOT / "tests" / "harness" / "upstream_client.py"
LEGACY_CATEGORIES: Final = tuple(
    c.value for c in MODEL_REFERENCE_CATEGORY if spec_for(c).has_legacy
)
NO_CHANGE_REPEATS: Final = 3
PROPAGATION_TRIALS: Final = 3
RSS_RUNS: Final = 100
SCHEDULE_SECONDS: Final = 5
STATE_DIR: Final = ".horde-replica-sync"
ACCESS_LINE: Final = re.compile(r'"GET \S+ HTTP/[0-9.]+" [0-9]{3}')
KIB: Final = 1024
MIB: Final = 1024 * 1024


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without settings that steer either client; local traffic unproxied."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HORDE_REPLICA_", "HORDE_MODEL_REFERENCE_", "NOTIFY_"))
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def children_cpu() -> float:
    """User + system CPU seconds of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- the PRIMARY and the relay in front of it ----------------------------------------------------


@dataclass
class Primary:
    """A running upstream PRIMARY (start_primary.sh / stop_primary.sh, by PID)."""

    data_dir: Path
    port: int
    pid: int = 0

    @property
    def log_path(self) -> Path:
        """The uvicorn access log (truncated by every start)."""
        return self.data_dir / "primary.log"

    @property
    def legacy_dir(self) -> Path:
        """The legacy files the PRIMARY serves (its source of truth)."""
        return self.data_dir / "horde_model_reference" / "legacy"

    def start(self) -> float:
        """Start on `port`; return the moment it answered (start_primary.sh waits for that)."""
        script = shared_dir() / "peer" / "start_primary.sh"
        proc = subprocess.run(
            [str(script), str(self.port)],
            env=clean_env(PEER_DATA_DIR=str(self.data_dir)),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        ready = time.monotonic()
        pid = proc.stdout.strip()
        if proc.returncode != 0 or not pid.isdigit():
            msg = f"start_primary.sh {self.port} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
            raise RuntimeError(msg)
        self.pid = int(pid)
        return ready

    def stop(self) -> None:
        """Stop it by its PID."""
        if self.pid:
            script = shared_dir() / "peer" / "stop_primary.sh"
            subprocess.run(
                [str(script), str(self.pid)], capture_output=True, timeout=30, check=False
            )
            self.pid = 0

    def requests(self) -> int:
        """GET requests logged since the last start (the log is truncated by every start)."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return len(ACCESS_LINE.findall(text))

    def change_data(self, marker: str) -> None:
        """Edit legacy esrgan.json and drop meta/ so a restart re-derives v2 and last_updated."""
        path = self.legacy_dir / "esrgan.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        first = next(iter(data.values()))
        first["description"] = f"{first.get('description', '')} [{marker}]"
        path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")
        shutil.rmtree(self.data_dir / "horde_model_reference" / "meta", ignore_errors=True)


class Relay:
    """A TCP relay that counts the bytes flowing from the PRIMARY to its clients."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.down = 0
        self.up = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        """The API base clients use."""
        return f"http://127.0.0.1:{self.port}/api"

    def bytes_down(self) -> int:
        """Bytes sent to clients so far."""
        with self._lock:
            return self.down

    def close(self) -> None:
        """Stop accepting."""
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        except OSError:
            client.close()  # the PRIMARY is down (restarting): the client sees a closed connection
            return
        upstream.settimeout(None)
        with self._lock:
            self.connections += 1
        pump = threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True)
        pump.start()
        self._pump(upstream, client, True)
        pump.join(timeout=30)

    def _pump(self, source: socket.socket, sink: socket.socket, downstream: bool) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
                with self._lock:
                    if downstream:
                        self.down += len(chunk)
                    else:
                        self.up += len(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


@dataclass
class Traffic:
    """Requests to the PRIMARY and bytes to the client over one interval."""

    requests: int
    wire_bytes: int


@contextlib.contextmanager
def measured(primary: Primary, relay: Relay) -> Iterator[list[Traffic]]:
    """Yields a list that holds one `Traffic` after the block."""
    out: list[Traffic] = []
    requests, down = primary.requests(), relay.bytes_down()
    yield out
    time.sleep(0.15)  # uvicorn logs the access line just after the response
    out.append(Traffic(primary.requests() - requests, relay.bytes_down() - down))


# -- our processes -------------------------------------------------------------------------------


FileStamp = tuple[int, int]


def snapshot(directory: Path) -> dict[str, FileStamp]:
    """Inode and mtime of every data file (our lock and state excluded)."""
    stamps: dict[str, FileStamp] = {}
    for path in directory.rglob("*"):
        rel = path.relative_to(directory)
        if rel.parts[0] in (STATE_DIR, LOCK_FILE) or not path.is_file():
            continue
        stat = path.stat()
        stamps[rel.as_posix()] = (stat.st_ino, stat.st_mtime_ns)
    return stamps


def changed(before: dict[str, FileStamp], after: dict[str, FileStamp]) -> int:
    """Files created, rewritten or removed between two snapshots."""
    return sum(1 for rel in before.keys() | after.keys() if before.get(rel) != after.get(rel))


@dataclass
class CliRun:
    """One finished `sync --once`."""

    code: int
    wall: float
    cpu: float
    events: list[dict[str, Any]]
    stderr: str

    @property
    def body_bytes(self) -> int:
        """Data body bytes, as the run's `sync.category_done` lines report them."""
        return sum(
            int(e.get("bytes_downloaded") or 0)
            for e in self.events
            if e.get("event") == "sync.category_done"
        )

    @property
    def run_seconds(self) -> float:
        """The engine's own duration of the run (after the metadata poll)."""
        done = [e for e in self.events if e.get("event") == "sync.run_done"]
        return float(done[-1]["duration_seconds"]) if done else float("nan")


def parse_events(text: str) -> list[dict[str, Any]]:
    """The JSON log lines in `text`."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


def sync_once(url: str, replica: Path) -> CliRun:
    """`python -m horde_replica_sync sync --once --no-fallback` into `replica`."""
    cpu = children_cpu()
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "horde_replica_sync",
            "sync",
            "--once",
            "--no-fallback",
            "--primary-url",
            url,
            "--replica-dir",
            str(replica),
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    wall = time.perf_counter() - started
    run = CliRun(
        proc.returncode, wall, children_cpu() - cpu, parse_events(proc.stderr), proc.stderr
    )
    if run.code != 0:
        msg = f"sync --once exited {run.code}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
        raise RuntimeError(msg)
    return run


class Daemon:
    """`horde-replica-sync run` as a child, its JSON log lines collected."""

    def __init__(self, url: str, replica: Path, *, interval: float, config: Path) -> None:
        env = clean_env(
            HORDE_REPLICA_CONFIG=str(config),
            HORDE_REPLICA_INTERVAL_JITTER_SECONDS="0",
            HORDE_REPLICA_INIT_INTERVAL_SECONDS=str(max(1, int(interval))),
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "horde_replica_sync",
                "run",
                "--no-fallback",
                "--primary-url",
                url,
                "--replica-dir",
                str(replica),
                "--interval",
                str(interval),
                "--metrics-addr",
                f"127.0.0.1:{free_port()}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith("{"):
                with contextlib.suppress(ValueError), self._lock:
                    self.events.append(json.loads(line))

    def runs(self, **fields: Any) -> list[dict[str, Any]]:
        """`sync.run_done` events whose fields match."""
        with self._lock:
            return [
                e
                for e in self.events
                if e.get("event") == "sync.run_done"
                and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait_runs(self, count: int, timeout: float = 60.0, **fields: Any) -> None:
        """Wait until `count` matching runs finished."""
        deadline = time.monotonic() + timeout
        while len(self.runs(**fields)) < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                msg = f"daemon: no {count} runs {fields} (exit {self.proc.poll()})"
                raise RuntimeError(msg)
            time.sleep(0.002)

    def forced_run(self) -> None:
        """SIGUSR1 (our own child, by PID), then wait for that forced run to finish."""
        count = len(self.runs(forced=True))
        self.proc.send_signal(signal.SIGUSR1)
        self.wait_runs(count + 1, forced=True)

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM from /proc/PID/status, in KiB."""
        found = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
        return found

    def stop(self) -> None:
        """SIGTERM and reap."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)


def wait_for_change(path: Path, before: FileStamp, timeout: float) -> float:
    """Poll `path` until its (inode, mtime) differs from `before`; the moment it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            if (stat.st_ino, stat.st_mtime_ns) != before:
                return time.monotonic()
        time.sleep(0.001)
    msg = f"{path} did not change within {timeout} s"
    raise RuntimeError(msg)


def stamp_of(path: Path) -> FileStamp:
    """(inode, mtime) of `path`."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


# -- upstream's client ---------------------------------------------------------------------------


class UpstreamClient:
    """scripts/bench_upstream_client.py under the peer venv, driven phase by phase."""

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


# -- the bench -----------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    measure: str
    ours: str
    upstream: str
    target: str
    verdict: str


@dataclass
class Results:
    """Everything measured."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    def add(self, measure: str, ours: str, upstream: str, target: str, verdict: str) -> None:
        """Add a row; a verdict starting with "no" counts as a missed target."""
        self.rows.append(Row(measure, ours, upstream, target, verdict))
        if verdict.startswith("no"):
            self.missed.append(measure)

    def table(self) -> str:
        """The markdown table."""
        lines = [
            "| measure | horde-replica-sync | upstream client | target | met? / ratio |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r.measure} | {r.ours} | {r.upstream} | {r.target} | {r.verdict} |"
            for r in self.rows
        ]
        return "\n".join(lines)


def yes_no(ok: bool, detail: str = "") -> str:
    """'yes' / 'no', with a detail."""
    word = "yes" if ok else "no"
    return f"{word} ({detail})" if detail else word


def kib(n: float) -> str:
    """Bytes as KiB with one decimal."""
    return f"{n / KIB:.1f} KiB"


def ratio(a: float, b: float) -> str:
    """a / b as "N.Nx" (b > 0)."""
    return f"{a / b:.1f}x" if b else "inf"


def bench(work: Path) -> Results:
    """Run every measurement; see the module docstring."""
    results = Results()
    config = work / "config.toml"
    config.write_text("# bench: flags and environment only\n")
    main = Primary(work / "primary", free_port())
    side = Primary(work / "primary-side", free_port())
    daemons: list[Daemon] = []
    relays: list[Relay] = []
    try:
        log("starting two upstream PRIMARYs (one measured, one for the unforced-run daemon)")
        for primary in (main, side):
            primary.data_dir.mkdir(parents=True)
        starters = [threading.Thread(target=p.start) for p in (main, side)]
        for thread in starters:
            thread.start()
        for thread in starters:
            thread.join()
        if not main.pid or not side.pid:
            msg = "a PRIMARY did not start (see start_primary.sh output above)"
            raise RuntimeError(msg)
        relay = Relay(main.port)
        relays.append(relay)

        # (d, unforced) runs on the 1 s minimum schedule: 100 of them take 100 s, so this daemon
        # ticks on its own PRIMARY in the background while everything else is measured.
        unforced = Daemon(
            f"http://127.0.0.1:{side.port}/api",
            work / "replica-unforced",
            interval=1,
            config=config,
        )
        daemons.append(unforced)
        unforced_started = time.monotonic()

        # (b) cold sync, every category and both layers.
        log("(b) cold sync --once")
        replica = work / "replica"
        with measured(main, relay) as cold_traffic:
            cold = sync_once(relay.url, replica)
        cold_files = len(snapshot(replica))

        # (a) no-change sync --once, a few times (median).
        log("(a) no-change sync --once")
        no_change: list[tuple[CliRun, Traffic, int]] = []
        for _ in range(NO_CHANGE_REPEATS):
            before = snapshot(replica)
            with measured(main, relay) as traffic:
                run = sync_once(relay.url, replica)
            no_change.append((run, traffic[0], changed(before, snapshot(replica))))
        middle = sorted(no_change, key=lambda item: item[0].wall)[NO_CHANGE_REPEATS // 2]
        nc_run, nc_traffic, nc_files = middle
        metadata_body = sum(
            len(subprocess_get(relay.url + f"/model_references/{f}/metadata/metadata"))
            for f in ("v1", "v2")
        )

        # (e) upstream's client: cold fetch, then a refresh (it has no change detection).
        log("(e) upstream client: cold fetch and refresh")
        upstream_cache = work / "upstream-cache"
        upstream_cache.mkdir()
        with measured(main, relay) as up_start:
            client = UpstreamClient(relay.url, upstream_cache)
            up_ready = client.ready()
        with measured(main, relay) as up_cold_traffic:
            up_cold = client.phase()
        before = snapshot(upstream_cache)
        with measured(main, relay) as up_refresh_traffic:
            up_refresh = client.phase()
        up_refresh_files = changed(before, snapshot(upstream_cache))
        up_cpu_total = client.finish()

        # (c) propagation after SIGUSR1: a daemon with no schedule to speak of.
        log(f"(c) propagation after SIGUSR1 x{PROPAGATION_TRIALS}")
        forced = Daemon(relay.url, replica, interval=3600, config=config)
        daemons.append(forced)
        forced.wait_runs(1)
        target = replica / "esrgan.json"
        legacy_target = replica / "legacy" / "esrgan.json"
        sigusr1: list[tuple[float, float]] = []  # (latency, signal delay after ready)
        for trial in range(PROPAGATION_TRIALS):
            v2_before, legacy_before = stamp_of(target), stamp_of(legacy_target)
            main.stop()
            main.change_data(f"bench-sigusr1-{trial}")
            ready = main.start()
            forced.proc.send_signal(signal.SIGUSR1)
            signalled = time.monotonic()
            v2_at = wait_for_change(target, v2_before, timeout=30)
            legacy_at = wait_for_change(legacy_target, legacy_before, timeout=30)
            sigusr1.append((max(v2_at, legacy_at) - ready, signalled - ready))
            if f"bench-sigusr1-{trial}" not in legacy_target.read_text(encoding="utf-8"):
                msg = "the changed legacy file did not reach the replica"
                raise RuntimeError(msg)

        # (d) resident memory after 100 forced runs, back to back (one SIGUSR1 per run_done).
        log(f"(d) {RSS_RUNS} forced runs")
        memory_start = forced.memory_kib()
        rss_started = time.monotonic()
        trend: list[int] = []
        for run_number in range(1, RSS_RUNS + 1):
            forced.forced_run()
            if run_number % (RSS_RUNS // 4) == 0:
                trend.append(forced.memory_kib()["VmRSS"])
        forced_seconds = time.monotonic() - rss_started
        memory_forced = forced.memory_kib()
        forced.stop()

        # (c) propagation on schedule: a 5 s interval, nobody signals it; the change lands at
        # a random point of the period, so a few trials, while the unforced daemon ticks on.
        log(f"(c) propagation on a {SCHEDULE_SECONDS} s schedule x{PROPAGATION_TRIALS}")
        scheduled = Daemon(relay.url, replica, interval=SCHEDULE_SECONDS, config=config)
        daemons.append(scheduled)
        scheduled.wait_runs(1)
        on_schedule: list[float] = []
        rng = random.Random(6)
        for trial in range(PROPAGATION_TRIALS):
            time.sleep(rng.uniform(0, SCHEDULE_SECONDS))
            v2_before = stamp_of(target)
            main.stop()
            main.change_data(f"bench-scheduled-{trial}")
            ready = main.start()
            at = wait_for_change(target, v2_before, timeout=4 * SCHEDULE_SECONDS)
            on_schedule.append(at - ready)
        scheduled.stop()
        imports_kib, cached_kib = baseline_rss_kib(replica)

        log(f"(d) waiting for {RSS_RUNS} unforced runs on the 1 s schedule")
        unforced.wait_runs(RSS_RUNS + 1, timeout=RSS_RUNS * 1.5 + 30)
        memory_unforced = unforced.memory_kib()
        unforced_seconds = time.monotonic() - unforced_started
        unforced_requests = side.requests()
        unforced_runs = len(unforced.runs())
        unforced.stop()

        # -- the table ----------------------------------------------------------------------
        up_nc = up_refresh_traffic[0]
        results.add(
            "(a) no-change run: HTTP requests",
            str(nc_traffic.requests),
            f"{up_nc.requests} (refresh = fetch everything)",
            "≤ 2",
            yes_no(nc_traffic.requests <= 2, f"{ratio(up_nc.requests, nc_traffic.requests)} fewer"),
        )
        results.add(
            "(a) no-change run: bytes downloaded (wire)",
            f"{kib(nc_traffic.wire_bytes)} (bodies: {kib(nc_run.body_bytes + metadata_body)})",
            kib(up_nc.wire_bytes),
            "≤ 16 KiB and ≥ 50x fewer than upstream",
            yes_no(
                nc_traffic.wire_bytes <= 16 * KIB
                and up_nc.wire_bytes >= 50 * nc_traffic.wire_bytes,
                f"{ratio(up_nc.wire_bytes, nc_traffic.wire_bytes)} fewer",
            ),
        )
        results.add(
            "(a) no-change run: files written",
            str(nc_files),
            str(up_refresh_files),
            "0",
            yes_no(nc_files == 0),
        )
        results.add(
            "(a) no-change run: CPU time",
            f"{nc_run.cpu:.2f} s (whole process: interpreter start and imports included)",
            f"{up_refresh['cpu_seconds']:.2f} s (in-process, imports excluded)",
            "—",
            ratio(up_refresh["cpu_seconds"], nc_run.cpu) + " less",
        )
        results.add(
            "(a) no-change run: wall time",
            f"{nc_run.wall:.2f} s (process); {nc_run.run_seconds * 1000:.0f} ms in the engine "
            "after the metadata poll",
            f"{up_refresh['seconds']:.2f} s (in-process)",
            "—",
            ratio(up_refresh["seconds"], nc_run.wall) + " faster",
        )
        up_cold_t = up_cold_traffic[0]
        results.add(
            "(b) cold sync, 15 v2 + 10 legacy: wall time",
            f"{cold.wall:.2f} s (process, durable: fsync file + dir)",
            f"{up_cold['seconds']:.2f} s in-process + {up_ready['seconds']:.2f} s start "
            f"(v2 alone {up_cold['v2_seconds']:.2f} s; plain write_text)",
            "≤ upstream, same run",
            yes_no(
                cold.wall <= up_cold["seconds"] + up_ready["seconds"],
                f"{ratio(up_cold['seconds'] + up_ready['seconds'], cold.wall)} vs process; "
                f"engine {cold.run_seconds:.2f} s vs {up_cold['seconds']:.2f} s in-process",
            ),
        )
        results.add(
            "(b) cold sync: requests / bytes",
            f"{cold_traffic[0].requests} / {kib(cold_traffic[0].wire_bytes)}",
            f"{up_cold_t.requests + up_start[0].requests} / "
            f"{kib(up_cold_t.wire_bytes + up_start[0].wire_bytes)}",
            "—",
            f"{cold_files} files published",
        )
        worst = max(latency for latency, _ in sigusr1)
        results.add(
            "(c) propagation after SIGUSR1 (PRIMARY ready → both esrgan files on disk)",
            f"max {worst:.3f} s of {len(sigusr1)}: "
            + ", ".join(f"{latency:.3f}" for latency, _ in sigusr1)
            + " s",
            "no change detection: next refresh after its cache TTL",
            "≤ 1 s",
            yes_no(worst <= 1.0),
        )
        results.add(
            f"(c) propagation on schedule (interval {SCHEDULE_SECONDS} s, no jitter)",
            f"median {statistics.median(on_schedule):.2f} s, max {max(on_schedule):.2f} s: "
            + ", ".join(f"{x:.2f}" for x in on_schedule)
            + " s",
            "its cache TTL",
            f"≤ {SCHEDULE_SECONDS} s + one run",
            yes_no(max(on_schedule) <= SCHEDULE_SECONDS + 1.0),
        )
        results.add(
            f"(d) resident memory after {RSS_RUNS} forced runs",
            f"{mem(memory_forced['VmRSS'])} (peak {mem(memory_forced['VmHWM'])}; "
            f"{mem(memory_start['VmRSS'])} after the first run; after 25/50/75/100: "
            + "/".join(f"{kib_ * KIB / 1e6:.1f}" for kib_ in trend)
            + " MB)",
            f"{mem(up_refresh['VmRSS'])} after cold + refresh",
            "≤ 60 MB",
            yes_no(memory_forced["VmRSS"] * KIB <= 60_000_000),
        )
        results.add(
            f"(d) resident memory after {unforced_runs} unforced runs (1 s schedule)",
            f"{mem(memory_unforced['VmRSS'])} (peak {mem(memory_unforced['VmHWM'])})",
            "—",
            "≤ 60 MB",
            yes_no(memory_unforced["VmRSS"] * KIB <= 60_000_000),
        )
        results.notes += [
            "no-change runs (wall, requests, wire bytes): "
            + ", ".join(f"{r.wall:.2f} s/{t.requests}/{t.wire_bytes} B" for r, t, _ in no_change),
            "what our resident memory is made of: a fresh interpreter with `run`'s imports "
            f"(httpx, pydantic, pydantic-settings, prometheus-client, structlog, APScheduler) "
            f"holds {mem(imports_kib)}; holding what the REPLICA backend caches (every published "
            f"file parsed, plus its text, as upstream's ReplicaBackendBase does) brings it to "
            f"{mem(cached_kib)}; a forced run adds transient bodies and validation objects",
            f"{RSS_RUNS} forced runs took {forced_seconds:.0f} s "
            f"({forced_seconds / RSS_RUNS * 1000:.0f} ms per run, every layer re-downloaded)",
            "SIGUSR1 sent "
            + ", ".join(f"{1000 * delay:.0f}" for _, delay in sigusr1)
            + " ms after the PRIMARY was ready",
            f"upstream client: manager creation {up_ready['seconds']:.2f} s, "
            f"{up_start[0].requests} requests; whole process CPU {up_cpu_total:.2f} s",
            f"unforced-run daemon: {unforced_runs} runs in {unforced_seconds:.0f} s, "
            f"{unforced_requests} requests to its own PRIMARY in all (the first run is cold: "
            "27; each later one asks for the 2 metadata bodies only; a run may be in flight "
            "when the log is counted)",
        ]
    finally:
        for daemon in daemons:
            daemon.stop()
        for relay_ in relays:
            relay_.close()
        for primary in (main, side):
            primary.stop()
    return results


def mem(kib_: int) -> str:
    """KiB as "N.N MB (M.M MiB)"."""
    return f"{kib_ * KIB / 1e6:.1f} MB ({kib_ / KIB:.1f} MiB)"


def baseline_rss_kib(replica: Path) -> tuple[int, int]:
    """Resident KiB of a fresh interpreter after `run`'s imports, then after also holding what
    the REPLICA backend caches: every published file parsed, and its text."""
    code = (
        "import json, pathlib, re, sys\n"
        "import horde_replica_sync.cli, horde_replica_sync.daemon, horde_replica_sync.runtime\n"
        "def rss():\n"
        "    status = pathlib.Path('/proc/self/status').read_text()\n"
        "    return re.search(r'VmRSS:\\s+(\\d+)', status)[1]\n"
        "print(rss())\n"
        "root = pathlib.Path(sys.argv[1])\n"
        "files = [*root.glob('*.json'), *root.glob('legacy/*.json')]\n"
        "held = [(json.loads(p.read_bytes()), p.read_text()) for p in files]\n"
        "print(rss())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(replica)],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    )
    imports, cached = (int(x) for x in out.stdout.split())
    return imports, cached


def subprocess_get(url: str) -> bytes:
    """GET `url` without any proxy (used once, for the metadata body sizes)."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as response:
        body: bytes = response.read()
        return body


def environment() -> str:
    """Where the numbers come from."""
    peer = subprocess.run(
        [
            str(peer_python()),
            "-c",
            "import importlib.metadata as m; print(m.version('horde-model-reference'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()} (ours), horde-model-reference {peer or '?'} "
        "(PRIMARY and upstream client, peer venv)"
    )


def write_doc(results: Results, env: str, seconds: float) -> None:
    """docs/bench.md: the table, the environment and how each figure was measured."""
    missed = ", ".join(results.missed) if results.missed else "none"
    notes = "\n".join(f"- {n}" for n in results.notes)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(
        f"""# Benchmark: horde-replica-sync vs upstream's replica client

Generated by `make bench` (`scripts/bench.py`) in {seconds:.0f} s; re-run it to refresh this file.
Environment: {env}.

{results.table()}

Missed targets: {missed}.

{notes}

## How each figure is measured

- **PRIMARY**: the real upstream `horde-model-reference` in PRIMARY mode, started by
  `../shared/peer/start_primary.sh` on a free port with a temp `PEER_DATA_DIR`, stopped by PID
  with `stop_primary.sh`. A second PRIMARY serves only the unforced-run daemon, so its
  requests never mix with the measured ones.
- **Requests**: `"GET ` lines added to `<data dir>/primary.log` (uvicorn's access log).
- **Bytes**: both clients reach the PRIMARY through a byte-counting TCP relay inside the bench,
  so the figure is the same thing for both: every byte the PRIMARY sent (status line, headers,
  bodies). Ours also shows body bytes: `sync.category_done` `bytes_downloaded` plus the two
  metadata bodies.
- **Files written**: (inode, mtime) of every file of the replica (resp. upstream's cache dir)
  before and after.
- **CPU**: ours is `getrusage(RUSAGE_CHILDREN)` around the `sync --once` process (imports
  included); upstream's is `getrusage(RUSAGE_SELF)` around the phase inside its process
  (imports excluded), which favours upstream.
- **Cold sync**: ours is one `sync --once` process into an empty directory (process wall
  time, every write fsynced, directory fsynced); upstream's is `HTTPBackend.fetch_all_categories()`
  plus `get_legacy_json_string()` of the same 10 legacy categories, timed inside its process
  after `ModelReferenceManager()` was created (that creation is shown as "start").
- **No-change run**: ours is `sync --once` on the synced replica (median of
  {NO_CHANGE_REPEATS}); upstream has no change detection, so its refresh after the TTL is the
  same calls with `force_refresh=True` / `redownload=True`.
- **Propagation**: edit `legacy/esrgan.json` in the PRIMARY's data dir, remove `meta/`,
  restart the PRIMARY on the same data dir (start_primary.sh returns once it answers: "ready");
  then either SIGUSR1 to a running daemon (interval 3600 s) or nothing (interval
  {SCHEDULE_SECONDS} s, jitter 0), {PROPAGATION_TRIALS} trials each. Latency = ready → the
  published file's inode changed (both esrgan files for SIGUSR1, the v2 file on schedule). On
  schedule it depends on where in the period the change lands (the trials start at random
  moments): expect 0 to {SCHEDULE_SECONDS} s plus one run. A tick that fires while the PRIMARY
  restarts retries its metadata request with backoff and may catch the change early.
- **Resident memory**: `VmRSS` (and `VmHWM`, the peak) from `/proc/PID/status` of `run`:
  after {RSS_RUNS} forced runs (SIGUSR1, wait for `sync.run_done`, repeat — signals coalesce,
  so one at a time), and after {RSS_RUNS} unforced runs on the 1 s minimum interval. Upstream's
  is its client process after the cold fetch and one refresh. "MB" in the target is read as
  10^6 bytes; MiB are shown too. The figure sits close to the target and moves by a few MB
  from one bench run to the next (heap layout, not growth: compare the 25/50/75/100 figures).
""",
        encoding="utf-8",
    )


def main() -> int:
    """Run the bench, print the table, write docs/bench.md; a missed target is not an error."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hrs-bench-") as tmp:
        results = bench(Path(tmp))
    seconds = time.monotonic() - started
    env = environment()
    sys.stdout.write(f"{results.table()}\n\n")
    for note in results.notes:
        sys.stdout.write(f"- {note}\n")
    sys.stdout.write(f"missed targets: {', '.join(results.missed) or 'none'}; {seconds:.0f} s\n")
    write_doc(results, env, seconds)
    log(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
