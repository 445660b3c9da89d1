"""Prometheus metrics on an injected registry: counters fed by reports, ages read at scrape.

Counters and histograms move when a report is observed (`observe`). Values that age by
themselves (staleness) are computed at scrape time from the state the engine keeps
(`track`), with the one staleness rule in freshness.py, so a scrape always tells the current
truth. Every label is bounded: categories (15), layers (2), outcomes, miss reasons, sources
and error kinds.
"""

from __future__ import annotations

import enum
import platform
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from horde_replica_sync import __version__
from horde_replica_sync.categories import Layer
from horde_replica_sync.clock import SYSTEM
from horde_replica_sync.errors import ErrorKind, NoSource, SourceName
from horde_replica_sync.freshness import age_or_nan
from horde_replica_sync.health import Refusal
from horde_replica_sync.hook import HookResult
from horde_replica_sync.report import LayerKey, MissReason, Outcome, SyncReport
from horde_replica_sync.state import ReplicaState

PREFIX: Final = "horde_replica"


def _listed(members: Iterable[enum.StrEnum]) -> str:
    """Label values as a help text names them: built from the enum, so they cannot drift."""
    return ", ".join(members)


class Metrics:
    """The daemon's metrics. `observe` a report after each run."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = SYSTEM.now,
        wall: Callable[[], float] = SYSTEM.wall,
    ) -> None:
        self.runs = Counter(
            f"{PREFIX}_sync_runs",
            "Sync runs by result (ok or failed).",
            ["result"],
            registry=registry,
        )
        self.duration = Histogram(
            f"{PREFIX}_sync_duration_seconds",
            "Wall time of one sync run.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        self.layer_syncs = Counter(
            f"{PREFIX}_layer_syncs",
            f"Outcomes per category and layer ({_listed(Outcome)}).",
            ["category", "layer", "outcome"],
            registry=registry,
        )
        self.fetch_errors = Counter(
            f"{PREFIX}_fetch_errors",
            f"Failed or refused fetches by source ({_listed(SourceName)}; {NoSource.LOCAL}: an "
            "error no source caused, e.g. the state file) and reason.",
            ["source", "reason"],
            registry=registry,
        )
        self.downloaded = Counter(
            f"{PREFIX}_downloaded_bytes", "Body bytes downloaded.", ["source"], registry=registry
        )
        self.written = Counter(
            f"{PREFIX}_written_bytes", "Bytes published into the replica.", registry=registry
        )
        self.files_written = Counter(
            f"{PREFIX}_files_written", "Files published into the replica.", registry=registry
        )
        self.last_success = Gauge(
            f"{PREFIX}_last_success_timestamp_seconds",
            "Unix time of the last run in which every layer ended fresh.",
            registry=registry,
        )
        self.active_source = Gauge(
            f"{PREFIX}_active_source",
            f"1 for the source the last fetch used ({_listed(SourceName)}).",
            ["source"],
            registry=registry,
        )
        self._define_cache_and_health(registry)
        self._define_hook(registry)
        self._precreate(registry)
        self._wall = wall
        self._ages = _AgeCollector(clock)
        registry.register(self._ages)

    def _define_cache_and_health(self, registry: CollectorRegistry) -> None:
        """What the seed API decided, and the signs of trouble a plain outcome does not show."""
        self.cache_hits = Counter(
            f"{PREFIX}_cache_hits",
            "Layers the REPLICA backend's valid cache answered for (nothing fetched).",
            ["category", "layer"],
            registry=registry,
        )
        self.cache_misses = Counter(
            f"{PREFIX}_cache_misses",
            f"Layers that needed a fetch, by reason ({_listed(MissReason)}).",
            ["category", "layer", "reason"],
            registry=registry,
        )
        self.metadata_unusable = Counter(
            f"{PREFIX}_metadata_unusable",
            "Runs in which a category's entry in the PRIMARY's metadata could not be used.",
            ["category"],
            registry=registry,
        )
        self.rollbacks = Counter(
            f"{PREFIX}_rollbacks",
            "Runs in which a category's upstream last_updated went back in time.",
            ["category"],
            registry=registry,
        )
        self.clock_steps = Counter(
            f"{PREFIX}_scheduler_clock_steps",
            "Ticks overdue on the monotonic clock (the wall clock stepped back): run at once.",
            registry=registry,
        )
        self.foreign_changes = Counter(
            f"{PREFIX}_foreign_changes",
            "Layers whose published files another process rewrote or removed (then repaired).",
            ["category", "layer"],
            registry=registry,
        )
        self.older_answers = Counter(
            f"{PREFIX}_older_answers",
            "v2 answers older than the metadata stamp they were fetched for (a cache in "
            "between, or a PRIMARY ahead of its data), asked for again past every cache.",
            ["category"],
            registry=registry,
        )
        self.probe_refusals = Counter(
            f"{PREFIX}_probe_requests_refused",
            f"Clients of /metrics, /healthz and /readyz cut short: {_listed(Refusal)} "
            "(docs/runbook.md says when each happens).",
            ["reason"],
            registry=registry,
        )
        self.notify_dropped = Counter(
            f"{PREFIX}_notify_dropped",
            "systemd notify messages dropped because the manager's socket was full or gone.",
            registry=registry,
        )
        self.upstream_last_updated = Gauge(
            f"{PREFIX}_upstream_last_updated_timestamp_seconds",
            "The PRIMARY's last_updated per category, from its metadata.",
            ["category"],
            registry=registry,
        )

    def _define_hook(self, registry: CollectorRegistry) -> None:
        """The on-change hook's runs, every result at 0 from the start."""
        coalesced = HookResult.COALESCED  # not a run: its help says what it counts
        self.hook_runs = Counter(
            f"{PREFIX}_hook_runs",
            f"On-change hook runs by result ({_listed(r for r in HookResult if r != coalesced)}; "
            f"{coalesced}: a change that joined a follow-up run already waiting).",
            ["result"],
            registry=registry,
        )
        self.hook_duration = Histogram(
            f"{PREFIX}_hook_duration_seconds",
            "Wall time of one on-change hook run.",
            buckets=(0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
            registry=registry,
        )
        for result in HookResult:
            self.hook_runs.labels(result)

    def observe_hook(self, result: HookResult, seconds: float | None) -> None:
        """Account for one hook run (`seconds` None: a coalesced change, not a run)."""
        self.hook_runs.labels(result).inc()
        if seconds is not None:
            self.hook_duration.observe(seconds)

    def _precreate(self, registry: CollectorRegistry) -> None:
        """The build info, and the bounded label sets known before any run, at 0."""
        build = Gauge(
            f"{PREFIX}_build_info", "Build information.", ["version", "python"], registry=registry
        )
        build.labels(__version__, platform.python_version()).set(1)
        # Every bounded label combination exists from the start, at 0, so that rate() and
        # increase() see the first failure instead of a series appearing out of nowhere.
        for source in SourceName:
            self.active_source.labels(source).set(0)
            self.downloaded.labels(source)
            for kind in ErrorKind:
                self.fetch_errors.labels(source, kind)
        for result in ("ok", "failed"):
            self.runs.labels(result)
        for refusal in Refusal:
            self.probe_refusals.labels(refusal)

    def track(self, keys: tuple[LayerKey, ...], state: ReplicaState) -> None:
        """Report ages of `keys` from `state` (the engine's record) from now on."""
        self._ages.keys, self._ages.state = keys, state
        for category in dict.fromkeys(c for c, _ in keys):
            self.metadata_unusable.labels(category)
            self.rollbacks.labels(category)
            self.older_answers.labels(category)
        for category, layer in keys:
            self.foreign_changes.labels(category, layer)
            self.cache_hits.labels(category, layer)
            for reason in MissReason:
                self.cache_misses.labels(category, layer, reason)

    def observe(self, report: SyncReport) -> None:
        """Account for one finished run."""
        self.runs.labels("ok" if report.ok else "failed").inc()
        self.duration.observe(report.duration_seconds)
        if report.primary_error_kind is not None:  # once per run, even when GitHub saved it
            self.fetch_errors.labels(SourceName.PRIMARY, report.primary_error_kind).inc()
        if report.state_error is not None:
            self.fetch_errors.labels(NoSource.LOCAL, ErrorKind.STORE).inc()
        for category in report.metadata_unusable:
            self.metadata_unusable.labels(category).inc()
        for category in report.rollbacks:
            self.rollbacks.labels(category).inc()
        for category, stamp in report.upstream_last_updated.items():
            self.upstream_last_updated.labels(category).set(stamp)
        for result in report.results:
            key = (result.category, result.layer)
            self.layer_syncs.labels(*key, result.outcome).inc()
            if result.foreign_files:
                self.foreign_changes.labels(*key).inc()
            if result.older_answer:
                self.older_answers.labels(result.category).inc()
            if result.miss is None:
                self.cache_hits.labels(*key).inc()
            else:
                self.cache_misses.labels(*key, result.miss).inc()
            if result.error_kind is not None:
                source = result.error_source or NoSource.LOCAL
                self.fetch_errors.labels(source, result.error_kind).inc()
            if result.source is not None and result.bytes_downloaded:
                self.downloaded.labels(result.source).inc(result.bytes_downloaded)
            self.written.inc(result.bytes_written)
            self.files_written.inc(result.files_written)
        used = {r.source for r in report.results if r.source is not None}
        if used:
            active = SourceName.GITHUB if SourceName.GITHUB in used else SourceName.PRIMARY
            for source in SourceName:
                self.active_source.labels(source).set(1 if source == active else 0)
        if report.ok:
            self.last_success.set(self._wall())  # a date, so the wall clock


class _AgeCollector(Collector):
    """Staleness and the replica's upstream stamps, computed from the state at scrape time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.keys: tuple[LayerKey, ...] = ()
        self.state = ReplicaState()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        keys, state, now = self.keys, self.state, self._clock()
        staleness = GaugeMetricFamily(
            f"{PREFIX}_staleness_seconds",
            "Seconds since each layer was last confirmed current (NaN: never).",
            labels=["category", "layer"],
        )
        for key in keys:
            staleness.add_metric([key[0].value, key[1].value], age_or_nan(state, key, now))
        yield staleness
        ours = GaugeMetricFamily(
            f"{PREFIX}_replica_last_updated_timestamp_seconds",
            "The PRIMARY last_updated our published copy corresponds to.",
            labels=["category"],
        )
        for category, layer in keys:
            if (
                layer is Layer.V2
                and (stamp := state.layer(category, layer).upstream_last_updated) is not None
            ):
                ours.add_metric([category.value], stamp)
        yield ours
        unshown = GaugeMetricFamily(
            f"{PREFIX}_stamp_unshown_runs",
            "Runs in a row whose body, even asked past every cache, was the one already held "
            "though the metadata announced a write (a cache that ignores query strings).",
            labels=["category"],
        )
        flapping = GaugeMetricFamily(
            f"{PREFIX}_stamps_flapping",
            "1 while the PRIMARY's metadata flaps between two stamps (two instances behind "
            "one balancer); the newer one's data is held.",
            labels=["category"],
        )
        for category, layer in keys:
            if layer is Layer.V2:
                v2 = state.layer(category, layer)
                unshown.add_metric([category.value], v2.unshown_runs)
                flapping.add_metric([category.value], 0 if v2.flapping is None else 1)
        yield unshown
        yield flapping
