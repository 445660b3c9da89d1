"""The bench's report: the markdown table, its notes and docs/bench.md, from `BenchResults`."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from tests.harness.bench import (
    FLEET_HOSTS,
    NO_CHANGE_REPEATS,
    PROPAGATION_TRIALS,
    RSS_RUNS,
    SCHEDULE_SECONDS,
    BenchResults,
)
from tests.harness.fleet import (
    CHANGED_CATEGORY,
    DEFAULT_INTERVAL_SECONDS,
    DEFAULT_JITTER_SECONDS,
    FleetFigures,
    FleetRound,
    cached_idle_bound,
    cached_idle_hour,
    convergence_bound,
    direct_idle_hour,
)
from tests.interop.peer import peer_python

KIB: Final = 1024
MIB: Final = 1024 * KIB
BIG_FLEET: Final = 10_000  # the fleet, for the extrapolated column
RSS_TARGET_BYTES: Final = 60_000_000  # "≤ 60 MB", MB read as 10^6 bytes


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table."""

    measure: str
    ours: str
    upstream: str
    target: str
    verdict: str


@dataclass
class Report:
    """The table rows, the notes under it, and the measures whose target was missed."""

    rows: list[Row] = field(default_factory=list)
    fleet_rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    def add(self, measure: str, ours: str, upstream: str, target: str, verdict: str) -> None:
        """Add a row; a verdict starting with "no" counts as a missed target."""
        self.rows.append(Row(measure, ours, upstream, target, verdict))
        if verdict.startswith("no"):
            self.missed.append(measure)

    def add_fleet(self, measure: str, cached: str, direct: str, target: str, verdict: str) -> None:
        """Add a row to the fleet's table (with the site cache, without); "no" counts as missed."""
        self.fleet_rows.append(Row(measure, cached, direct, target, verdict))
        if verdict.startswith("no"):
            self.missed.append(measure)

    def table(self) -> str:
        """The markdown tables: ours against upstream's client, then the fleet's."""
        lines = [
            "| measure | horde-replica-sync | upstream client | target | met? / ratio |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r.measure} | {r.ours} | {r.upstream} | {r.target} | {r.verdict} |"
            for r in self.rows
        ]
        if self.fleet_rows:
            lines += [
                "",
                "| fleet measure | with the site cache | without (every host to the PRIMARY) "
                "| target | met? / ratio |",
                "| --- | --- | --- | --- | --- |",
            ]
            lines += [
                f"| {r.measure} | {r.ours} | {r.upstream} | {r.target} | {r.verdict} |"
                for r in self.fleet_rows
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


def mem(kib_: int) -> str:
    """KiB as "N.N MB (M.M MiB)"."""
    return f"{kib_ * KIB / 1e6:.1f} MB ({kib_ / KIB:.1f} MiB)"


def report(results: BenchResults) -> Report:
    """The table and notes of one bench run."""
    out = Report()
    _no_change_rows(out, results)
    _cold_rows(out, results)
    _propagation_rows(out, results)
    _memory_rows(out, results)
    _fleet_rows(out, results.fleet)
    out.notes += _notes(results)
    out.notes += _fleet_notes(results.fleet)
    return out


def _no_change_rows(out: Report, results: BenchResults) -> None:
    nc, up = results.no_change.median, results.upstream
    up_nc = up.refresh_traffic
    out.add(
        "(a) no-change run: HTTP requests",
        str(nc.traffic.requests),
        f"{up_nc.requests} (refresh = fetch everything)",
        "≤ 5: 2 metadata + 3 catalog checks (the PRIMARY has no cheaper catalog check)",
        yes_no(nc.traffic.requests <= 5, f"{ratio(up_nc.requests, nc.traffic.requests)} fewer"),
    )
    bodies = nc.sync.run.bytes_downloaded + results.no_change.metadata_body_bytes
    out.add(
        "(a) no-change run: bytes downloaded (wire)",
        f"{kib(nc.traffic.wire_bytes)} (bodies: {kib(bodies)})",
        kib(up_nc.wire_bytes),
        "≤ 24 KiB (16 + the catalogs' ~7.5 KiB of checks) and ≥ 50x fewer than upstream",
        yes_no(
            nc.traffic.wire_bytes <= 24 * KIB and up_nc.wire_bytes >= 50 * nc.traffic.wire_bytes,
            f"{ratio(up_nc.wire_bytes, nc.traffic.wire_bytes)} fewer",
        ),
    )
    out.add(
        "(a) no-change run: files written",
        str(nc.files_written),
        str(up.refresh_files),
        "0",
        yes_no(nc.files_written == 0),
    )
    out.add(
        "(a) no-change run: CPU time",
        f"{nc.sync.cpu:.2f} s (whole process: interpreter start and imports included)",
        f"{up.refresh['cpu_seconds']:.2f} s (in-process, imports excluded)",
        "—",
        ratio(up.refresh["cpu_seconds"], nc.sync.cpu) + " less",
    )
    out.add(
        "(a) no-change run: wall time",
        f"{nc.sync.wall:.2f} s (process); {nc.sync.run.run_seconds * 1000:.0f} ms in the engine "
        "for the whole run, its 2 metadata requests included",
        f"{up.refresh['seconds']:.2f} s (in-process)",
        "—",
        ratio(up.refresh["seconds"], nc.sync.wall) + " faster",
    )


def _cold_rows(out: Report, results: BenchResults) -> None:
    cold, up = results.cold, results.upstream
    up_total = up.cold["seconds"] + up.ready["seconds"]
    out.add(
        "(b) cold sync, 15 v2 + 10 legacy + 3 catalogs: wall time",
        f"{cold.sync.wall:.2f} s (process, durable: fsync file + dir)",
        f"{up.cold['seconds']:.2f} s in-process + {up.ready['seconds']:.2f} s start "
        f"(v2 alone {up.cold['v2_seconds']:.2f} s; plain write_text)",
        "≤ upstream, same run",
        yes_no(
            cold.sync.wall <= up_total,
            f"{ratio(up_total, cold.sync.wall)} vs process; "
            f"engine {cold.sync.run.run_seconds:.2f} s vs {up.cold['seconds']:.2f} s in-process",
        ),
    )
    out.add(
        "(b) cold sync: requests / bytes",
        f"{cold.traffic.requests} / {kib(cold.traffic.wire_bytes)}",
        f"{up.cold_traffic.requests + up.start_traffic.requests} / "
        f"{kib(up.cold_traffic.wire_bytes + up.start_traffic.wire_bytes)}",
        "—",
        f"{cold.files} files published",
    )


def _propagation_rows(out: Report, results: BenchResults) -> None:
    sigusr1, on_schedule = results.sigusr1, results.scheduled.latencies
    out.add(
        "(c) propagation after SIGUSR1 (PRIMARY ready → both esrgan files on disk)",
        f"max {sigusr1.worst:.3f} s of {len(sigusr1.trials)}: "
        + ", ".join(f"{latency:.3f}" for latency, _ in sigusr1.trials)
        + " s",
        "no change detection: next refresh after its cache TTL",
        "≤ 1 s",
        yes_no(sigusr1.worst <= 1.0),
    )
    out.add(
        f"(c) propagation on schedule (interval {SCHEDULE_SECONDS} s, no jitter)",
        f"median {statistics.median(on_schedule):.2f} s, max {max(on_schedule):.2f} s: "
        + ", ".join(f"{x:.2f}" for x in on_schedule)
        + " s",
        "its cache TTL",
        f"≤ {SCHEDULE_SECONDS} s + one run",
        yes_no(max(on_schedule) <= SCHEDULE_SECONDS + 1.0),
    )


def _memory_rows(out: Report, results: BenchResults) -> None:
    forced, unforced = results.forced_memory, results.unforced_memory
    out.add(
        f"(d) resident memory after {RSS_RUNS} forced runs",
        f"{mem(forced.end['VmRSS'])} (peak {mem(forced.end['VmHWM'])}; "
        f"{mem(forced.start['VmRSS'])} after the first run; after 25/50/75/100: "
        + "/".join(f"{kib_ * KIB / 1e6:.1f}" for kib_ in forced.trend)
        + " MB)",
        f"{mem(results.upstream.refresh['VmRSS'])} after cold + refresh",
        "≤ 60 MB",
        yes_no(forced.end["VmRSS"] * KIB <= RSS_TARGET_BYTES),
    )
    out.add(
        f"(d) resident memory after {unforced.runs} unforced runs (1 s schedule)",
        f"{mem(unforced.memory['VmRSS'])} (peak {mem(unforced.memory['VmHWM'])})",
        "—",
        "≤ 60 MB",
        yes_no(unforced.memory["VmRSS"] * KIB <= RSS_TARGET_BYTES),
    )


def _traffic(requests: float, wire_bytes: float, hosts: int) -> str:
    """Requests and bytes for the fleet, then per host."""
    return (
        f"{requests:.0f} req, {wire_bytes / MIB:.2f} MiB "
        f"({requests / hosts:.2f} req, {kib(wire_bytes / hosts)} per host)"
    )


def _fleet_rows(out: Report, fleet: FleetFigures) -> None:
    cached, direct, hosts = fleet.cached, fleet.direct, fleet.hosts
    out.add_fleet(
        f"(f) {hosts} hosts, one {CHANGED_CATEGORY} change: at the PRIMARY in that round",
        _traffic(cached.change.requests, cached.change.wire_bytes, hosts)
        + f"; data requests {cached.change.data_requests}",
        _traffic(direct.change.requests, direct.change.wire_bytes, hosts)
        + f"; data requests {direct.change.data_requests}",
        "≤ 1 data request per changed layer per site",
        yes_no(
            cached.change.data_requests <= 2,
            f"{ratio(direct.change.wire_bytes, cached.change.wire_bytes)} fewer bytes",
        ),
    )
    per_host_change = direct.change.wire_bytes / hosts
    out.add_fleet(
        f"(f) one {CHANGED_CATEGORY} change at {BIG_FLEET:,} hosts (linear extrapolation)",
        f"the same per site: {cached.change.wire_bytes / MIB:.2f} MiB",
        f"{per_host_change * BIG_FLEET / 1e9:.2f} GB",
        "—",
        "—",
    )
    cached_hour, direct_hour = cached_idle_hour(cached.idle), direct_idle_hour(direct.idle)
    out.add_fleet(
        f"(f) {hosts} hosts, idle hour (extrapolated: 60 polls/h at the default "
        f"{DEFAULT_INTERVAL_SECONDS:.0f} s interval)",
        _traffic(cached_hour.requests, cached_hour.wire_bytes, hosts)
        + f" (≤ {cached_idle_bound():.0f} req at any size)",
        _traffic(direct_hour.requests, direct_hour.wire_bytes, hosts),
        "bounded by the cache period, not the hosts",
        yes_no(
            cached_hour.requests <= cached_idle_bound(),
            f"{ratio(direct_hour.wire_bytes, cached_hour.wire_bytes)} fewer bytes",
        ),
    )
    out.add_fleet(
        f"(f) {hosts} hosts: idle round at the PRIMARY (measured, hosts in turn)",
        f"{cached.idle.requests} req in {cached.idle.seconds:.1f} s",
        f"{direct.idle.requests} req in {direct.idle.seconds:.1f} s",
        "—",
        "—",
    )
    out.add_fleet(
        f"(f) {hosts} hosts: change → last host converged (bound; interval "
        f"{DEFAULT_INTERVAL_SECONDS:.0f} s + jitter {DEFAULT_JITTER_SECONDS:.0f} s)",
        f"≤ {convergence_bound(cached.change, cached=True):.1f} s "
        f"(slowest run {max(cached.change.run_seconds):.2f} s, "
        f"median {statistics.median(cached.change.run_seconds):.2f} s)",
        f"≤ {convergence_bound(direct.change, cached=False):.1f} s "
        f"(slowest run {max(direct.change.run_seconds):.2f} s, "
        f"median {statistics.median(direct.change.run_seconds):.2f} s)",
        "one interval + jitter (+ cache age) + one run",
        yes_no(
            all(
                r.replicas_current == hosts
                for r in (cached.idle, cached.change, direct.idle, direct.change)
            ),
            "every replica ended with the PRIMARY's bytes",
        ),
    )


def _fleet_notes(fleet: FleetFigures) -> list[str]:
    rounds = {
        "direct idle": fleet.direct.idle,
        "direct change": fleet.direct.change,
        "cached idle": fleet.cached.idle,
        "cached change": fleet.cached.change,
    }
    return [
        f"fleet rounds (metadata + data requests at the PRIMARY, wire bytes, replicas current of "
        f"{fleet.hosts}): " + ", ".join(f"{name} {_round(r)}" for name, r in rounds.items()),
        f"the {CHANGED_CATEGORY} change moves {kib(fleet.changed_body_bytes)} of bodies (v2 + v1) "
        "to each host that downloads it",
    ]


def _round(r: FleetRound) -> str:
    return (
        f"{r.metadata_requests}+{r.data_requests} req/{r.wire_bytes / MIB:.2f} MiB/"
        f"{r.replicas_current}"
    )


def _notes(results: BenchResults) -> list[str]:
    forced, unforced, up = results.forced_memory, results.unforced_memory, results.upstream
    baseline = results.baseline_memory
    return [
        "no-change runs (wall, requests, wire bytes): "
        + ", ".join(
            f"{r.sync.wall:.2f} s/{r.traffic.requests}/{r.traffic.wire_bytes} B"
            for r in results.no_change.runs
        ),
        "what our resident memory is made of: a fresh interpreter with `run`'s imports "
        f"(httpx, pydantic, pydantic-settings, prometheus-client, structlog, APScheduler) "
        f"holds {mem(baseline.imports_kib)}; holding what the REPLICA backend caches (every "
        f"published file as published: v2 bytes, legacy text, parsed only for a reader; "
        f"upstream's ReplicaBackendBase holds them parsed) brings it to "
        f"{mem(baseline.cached_kib)}; a forced run adds transient bodies and validation "
        "objects",
        f"{RSS_RUNS} forced runs took {forced.seconds:.0f} s "
        f"({forced.seconds / RSS_RUNS * 1000:.0f} ms per run, every layer re-downloaded)",
        "SIGUSR1 sent "
        + ", ".join(f"{1000 * delay:.0f}" for _, delay in results.sigusr1.trials)
        + " ms after the PRIMARY was ready",
        f"upstream client: manager creation {up.ready['seconds']:.2f} s, "
        f"{up.start_traffic.requests} requests; whole process CPU {up.cpu_total:.2f} s",
        f"unforced-run daemon: {unforced.runs} runs in {unforced.seconds:.0f} s, "
        f"{unforced.requests} requests to its own PRIMARY in all (the first run is cold: "
        "31; each later one asks for the 2 metadata bodies and the 3 catalog checks; a run "
        "may be in flight "
        "when the log is counted)",
    ]


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


_DOCUMENT: Final = """\
# Benchmark: horde-replica-sync vs upstream's replica client

Generated by `make bench` (`scripts/bench.py`) in {seconds:.0f} s; re-run it to refresh this file.
Environment: {environment}.

{table}

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
  {no_change_repeats}); upstream has no change detection, so its refresh after the TTL is the
  same calls with `force_refresh=True` / `redownload=True`.
- **Propagation**: edit `legacy/esrgan.json` in the PRIMARY's data dir, remove `meta/`,
  restart the PRIMARY on the same data dir (start_primary.sh returns once it answers: "ready");
  then either SIGUSR1 to a running daemon (interval 3600 s) or nothing (interval
  {schedule_seconds} s, jitter 0), {propagation_trials} trials each. Latency = ready → the
  published file's inode changed (both esrgan files for SIGUSR1, the v2 file on schedule). On
  schedule it depends on where in the period the change lands (the trials start at random
  moments): expect 0 to {schedule_seconds} s plus one run. A tick that fires while the PRIMARY
  restarts retries its metadata request with backoff and may catch the change early.
- **Resident memory**: `VmRSS` (and `VmHWM`, the peak) from `/proc/PID/status` of `run`:
  after {rss_runs} forced runs (SIGUSR1, wait for `sync.run_done`, repeat — signals coalesce,
  so one at a time), and after {rss_runs} unforced runs on the 1 s minimum interval. Upstream's
  is its client process after the cold fetch and one refresh. "MB" in the target is read as
  10^6 bytes; MiB are shown too. The figure sits close to the target and moves by a few MB
  from one bench run to the next (heap layout, not growth: compare the 25/50/75/100 figures).
- **Fleet** (f): {fleet_hosts} host replicas, each a copy of one cold-synced replica (state
  included), each synced by its own `sync --once`, in turn: first straight from the PRIMARY,
  then through real nginx running `config/nginx-site-cache.example.conf` (tests/harness/
  site_cache.py). Both reach the PRIMARY through the relay, so bytes are the PRIMARY's wire
  bytes; requests are its access log's, by path. Per setup: an idle round, then one
  `image_generation` change (legacy file edited, its `last_updated` moved in `meta/`, PRIMARY
  restarted; the other categories keep their stamps), 6 s for the site cache's metadata to
  expire, and a change round. The idle hour is extrapolated with the default 60 s interval:
  without the cache the idle round times 60; with it the 5 polls (2 metadata, 3 catalog
  checks) per 5 s cache period in which any host polls, 5 x 720 x (1 - (1 - 5/60)^hosts) with
  polls spread by the jitter, ≤ 3600 at any fleet size (the round in turn packs the polls,
  so its own count is no hourly rate). Convergence: a change is seen at the next tick
  (≤ interval + jitter = 66 s), plus the metadata's age at the site cache (≤ 6 s), plus the
  slowest host's run, measured (the engine's `sync.run_done` duration).
"""


def document(out: Report, environment: str, seconds: float) -> str:
    """docs/bench.md: the table, the environment and how each figure was measured."""
    return _DOCUMENT.format(
        seconds=seconds,
        environment=environment,
        table=out.table(),
        missed=", ".join(out.missed) if out.missed else "none",
        notes="\n".join(f"- {n}" for n in out.notes),
        no_change_repeats=NO_CHANGE_REPEATS,
        schedule_seconds=SCHEDULE_SECONDS,
        propagation_trials=PROPAGATION_TRIALS,
        rss_runs=RSS_RUNS,
        fleet_hosts=FLEET_HOSTS,
    )


def write_document(out: Report, environment: str, seconds: float, path: Path) -> None:
    """Write `document(...)` to `path` (UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document(out, environment, seconds), encoding="utf-8")
