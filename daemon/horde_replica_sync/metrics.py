"""Prometheus metrics on an injected registry, fed by sync reports and a scrape-time view.

Counters and histograms move when a report is observed. Values that age by themselves
(staleness) or live elsewhere (the backend's cache hit/miss counters, upstream timestamps)
are read at scrape time from a `ReplicaView`, so a scrape always tells the current truth.
Every label is bounded: categories (15), layers (2), outcomes, sources and error kinds.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from horde_replica_sync import __version__
from horde_replica_sync.backends.replica_base import CacheCounters
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, Layer
from horde_replica_sync.errors import ERROR_KINDS
from horde_replica_sync.sync import SyncReport

PREFIX: Final = "horde_replica"
SOURCES: Final = ("primary", "github")


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """What the daemon knows between runs; replaced whole after each run (never mutated)."""

    categories: tuple[MODEL_REFERENCE_CATEGORY, ...] = ()
    confirmed_at: dict[tuple[MODEL_REFERENCE_CATEGORY, Layer], float] = field(default_factory=dict)
    upstream_last_updated: dict[MODEL_REFERENCE_CATEGORY, int] = field(default_factory=dict)
    replica_last_updated: dict[MODEL_REFERENCE_CATEGORY, int] = field(default_factory=dict)
    layers: tuple[tuple[MODEL_REFERENCE_CATEGORY, Layer], ...] = ()


class Metrics:
    """The daemon's metrics. `observe` a report after each run."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        view: Callable[[], ReplicaView],
        counters: Callable[[], CacheCounters],
        clock: Callable[[], float] = time.time,
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
            "Outcomes per category and layer (unchanged, updated, absent, refused, failed).",
            ["category", "layer", "outcome"],
            registry=registry,
        )
        self.fetch_errors = Counter(
            f"{PREFIX}_fetch_errors",
            "Failed or refused fetches by source and reason.",
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
            "1 for the source the last fetch used (primary, or the github fallback).",
            ["source"],
            registry=registry,
        )
        build = Gauge(
            f"{PREFIX}_build_info", "Build information.", ["version", "python"], registry=registry
        )
        build.labels(__version__, platform.python_version()).set(1)
        # Every bounded label combination exists from the start, at 0, so that rate() and
        # increase() see the first failure instead of a series appearing out of nowhere.
        for source in SOURCES:
            self.active_source.labels(source).set(0)
            self.downloaded.labels(source)
            for kind in ERROR_KINDS:
                self.fetch_errors.labels(source, kind)
        for result in ("ok", "failed"):
            self.runs.labels(result)
        self._clock = clock
        registry.register(_ViewCollector(view, counters, clock))

    def observe(self, report: SyncReport) -> None:
        """Account for one finished run."""
        self.runs.labels("ok" if report.ok else "failed").inc()
        self.duration.observe(report.duration_seconds)
        if report.primary_error_kind is not None:  # once per run, even when GitHub saved it
            self.fetch_errors.labels("primary", report.primary_error_kind).inc()
        if report.state_error is not None:
            self.fetch_errors.labels("none", "store").inc()
        for result in report.results:
            labels = (result.category.value, result.layer.value, result.outcome.value)
            self.layer_syncs.labels(*labels).inc()
            if result.error_kind is not None:
                self.fetch_errors.labels(result.error_source or "none", result.error_kind).inc()
            if result.source is not None and result.bytes_downloaded:
                self.downloaded.labels(result.source).inc(result.bytes_downloaded)
            self.written.inc(result.bytes_written)
            self.files_written.inc(result.files_written)
        used = {r.source for r in report.results if r.source is not None}
        if used:
            active = "github" if "github" in used else "primary"
            for source in SOURCES:
                self.active_source.labels(source).set(1 if source == active else 0)
        if report.ok:
            self.last_success.set(self._clock())


class _ViewCollector(Collector):
    """Cache counters, staleness and upstream timestamps, computed at scrape time."""

    def __init__(
        self,
        view: Callable[[], ReplicaView],
        counters: Callable[[], CacheCounters],
        clock: Callable[[], float],
    ) -> None:
        self._view = view
        self._counters = counters
        self._clock = clock

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        view = self._view()
        yield from self._cache_counters(view, self._counters())
        yield self._staleness(view)
        yield from self._timestamps(view)

    def _cache_counters(
        self, view: ReplicaView, counters: CacheCounters
    ) -> Iterator[CounterMetricFamily]:
        hits = CounterMetricFamily(
            f"{PREFIX}_cache_hits",
            "Reads served from valid cached data (no fetch needed).",
            labels=["category", "layer"],
        )
        misses = CounterMetricFamily(
            f"{PREFIX}_cache_misses",
            "Reads that needed a fetch (never loaded, stale, expired or changed on disk).",
            labels=["category", "layer"],
        )
        for category, layer in view.layers:
            v2 = layer is Layer.V2
            labels = [category.value, layer.value]
            hits.add_metric(
                labels, (counters.hits if v2 else counters.legacy_hits).get(category, 0)
            )
            misses.add_metric(
                labels, (counters.misses if v2 else counters.legacy_misses).get(category, 0)
            )
        yield hits
        yield misses

    def _staleness(self, view: ReplicaView) -> GaugeMetricFamily:
        staleness = GaugeMetricFamily(
            f"{PREFIX}_staleness_seconds",
            "Seconds since each layer was last confirmed current (NaN: never).",
            labels=["category", "layer"],
        )
        now = self._clock()
        for category, layer in view.layers:
            confirmed = view.confirmed_at.get((category, layer))
            age = math.nan if confirmed is None else max(0.0, now - confirmed)
            staleness.add_metric([category.value, layer.value], age)
        return staleness

    def _timestamps(self, view: ReplicaView) -> Iterator[GaugeMetricFamily]:
        upstream = GaugeMetricFamily(
            f"{PREFIX}_upstream_last_updated_timestamp_seconds",
            "The PRIMARY's last_updated per category, from its metadata.",
            labels=["category"],
        )
        ours = GaugeMetricFamily(
            f"{PREFIX}_replica_last_updated_timestamp_seconds",
            "The PRIMARY last_updated our published copy corresponds to.",
            labels=["category"],
        )
        for category in view.categories:
            if (stamp := view.upstream_last_updated.get(category)) is not None:
                upstream.add_metric([category.value], stamp)
            if (stamp := view.replica_last_updated.get(category)) is not None:
                ours.add_metric([category.value], stamp)
        yield upstream
        yield ours
