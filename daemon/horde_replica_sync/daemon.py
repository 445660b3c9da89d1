"""The long-running daemon: startup -> one sync at a time until told to stop -> shutdown.

    Ticker (jittered interval) --due--\\
    SIGUSR1 -------------------force---> Requests -> loop: reload? run? stop?
    SIGHUP --------------------reload-/                   |
    SIGTERM/SIGINT ------------stop--/                     v
                                         engine.run() -> metrics, logs, STATUS, READY,
                                                         on-change hook (a task: hook.py)

Runs never overlap: the loop owns them. A stop cancels the run in flight between files (a
publish is synchronous, so no file is ever left half-written) and exits within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import prometheus_client
import structlog
from prometheus_client import CollectorRegistry

from horde_replica_sync import __version__, logs, signals
from horde_replica_sync.catalogs import ALL_NAMES
from horde_replica_sync.clock import ELAPSED, SYSTEM, Clock
from horde_replica_sync.config import Settings, describe_setting
from horde_replica_sync.errors import ConfigError
from horde_replica_sync.freshness import UNSHOWN_CAUSE, layer_keys, staleness
from horde_replica_sync.health import HealthServer, Verdict
from horde_replica_sync.hook import ChangeHook, HookCommand, announce
from horde_replica_sync.metrics import Metrics
from horde_replica_sync.notify import Notifier
from horde_replica_sync.report import LayerKey, SyncReport
from horde_replica_sync.runtime import ClientFactory, build_engine, make_client
from horde_replica_sync.scheduler import Ticker
from horde_replica_sync.store import ReplicaStore

log = structlog.get_logger(__name__)

HEARTBEAT_SECONDS = 1.0
ALIVE_WITHIN_SECONDS = 10.0
# Settings a reload cannot change while the daemon holds their resources.
RESTART_ONLY = ("replica_dir", "state_dir", "metrics_addr")
# A reload rebuilds the HTTP client and logs the config: a SIGHUP storm is one a second.
RELOAD_SPACING_SECONDS = 1.0


class Daemon:
    """Keeps one replica fresh until stopped.

    The seams are for in-process tests: `client_factory` (a fake transport instead of the
    network), `clock` (the steady now of stamps and /readyz), `monotonic` (reload spacing,
    the heartbeat, a run's age), `wall` and `elapsed` (the ticker's wall steps and suspends).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        reload_settings: Callable[[], Settings],
        notifier: Notifier | None = None,
        registry: CollectorRegistry | None = None,
        handle_signals: bool = True,
        clock: Callable[[], float] = SYSTEM.now,
        client_factory: ClientFactory = make_client,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Clock = SYSTEM,
        elapsed: Callable[[], float] = ELAPSED,
    ) -> None:
        self.settings = settings
        self.requests = signals.Requests()
        self._reload_settings = reload_settings
        self._notifier = notifier or Notifier()
        self._registry = registry or CollectorRegistry()
        self._handle_signals = handle_signals
        self._clock = clock
        self._client_factory = client_factory
        self._monotonic = monotonic
        self._wall = wall
        self._elapsed = elapsed
        self._heartbeat = monotonic()
        self._run_started: float | None = None
        self._succeeded = self._ready_sent = False
        # Not yet named to the hook since start: each is, by the first run that holds it.
        self._unannounced = set(ALL_NAMES)
        self._run_log = logs.RunLog()
        self._reloaded_at = -RELOAD_SPACING_SECONDS
        self._reload_timer: asyncio.TimerHandle | None = None

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT (or `stop()`); return the exit code."""
        log.info(
            "daemon.starting", version=__version__, config=self.settings.model_dump(mode="json")
        )
        store = ReplicaStore(self.settings.replica_dir, self.settings.effective_state_dir)
        with store.locked():
            for stale in store.remove_stale_temps():
                log.info("store.stale_temp_removed", path=str(stale))
            async with self._client_factory(self.settings) as client:
                self._client: httpx.AsyncClient = client
                self.engine = build_engine(self.settings, client, clock=self._clock)
                self.engine.witness = self._witness
                await self._serve_with_engine()
        log.info("daemon.stopped", config=self.settings.model_dump(mode="json"))
        return 0

    def stop(self) -> None:
        """Ask the daemon to finish (what SIGTERM does)."""
        self.requests.request_stop()

    # -- lifecycle ----------------------------------------------------------------------

    async def _serve_with_engine(self) -> None:
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # noise
        self._metrics = Metrics(self._registry, clock=self._clock)
        self._notifier.on_drop = self._metrics.notify_dropped.inc
        self._hook = ChangeHook(
            HookCommand.from_settings(self.settings), record=self._metrics.observe_hook
        )
        self._track()
        health = self._health_server()
        health.start()
        log.info("daemon.listening", address=health.address)
        self._ticker = Ticker(
            lambda: self.requests.request(due=True),
            interval=self.settings.init_interval_seconds,
            jitter=self.settings.interval_jitter_seconds,
            misfire_grace=self.settings.misfire_grace_seconds,
            on_clock_step=self._metrics.clock_steps.inc,
            clock=self._wall,
            elapsed=self._elapsed,
        )
        self._announce_if_ready("replica valid from disk")
        helpers = [asyncio.create_task(self._beat()), asyncio.create_task(self._watchdog())]
        loop = asyncio.get_running_loop()
        if self._handle_signals:
            signals.install(loop, self.requests)
        self._ticker.start()
        try:
            await self._loop()
        finally:
            self._notifier.stopping()
            log.info("daemon.stopping")
            self._ticker.shutdown()
            await self._hook.close(self.settings.shutdown_timeout_seconds)
            if self._handle_signals:
                signals.uninstall(loop)
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            health.stop()

    def _health_server(self) -> HealthServer:
        host, port = self.settings.metrics_host_port
        try:
            return HealthServer(
                host,
                port,
                registry=self._registry,
                alive=self._alive,
                ready=self.ready,
                on_refusal=lambda reason: self._metrics.probe_refusals.labels(reason).inc(),
            )
        except OSError as exc:
            msg = (
                f"{describe_setting('metrics_addr')}: cannot listen on "
                f"{self.settings.metrics_addr}: {exc.strerror}"
            )
            raise ConfigError(msg) from exc

    async def _loop(self) -> None:
        while True:
            await self.requests.wake.wait()
            self.requests.wake.clear()
            if self.requests.stop:
                return
            if self._reload_due():
                await self._reload()
            wanted, forced = self.requests.take_run()
            if wanted and not await self._run(forced):
                return

    async def _run(self, forced: bool) -> bool:
        """One sync; False when a stop interrupted it."""
        self._run_started = self._monotonic()
        run = asyncio.create_task(self.engine.run(force=forced))
        stopper = asyncio.create_task(self.requests.stopped.wait())
        try:
            done, _ = await asyncio.wait({run, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            self._run_started = None
        if run not in done:
            await self._abandon(run)
            return False
        self._after_run(run.result())
        return True

    async def _abandon(self, run: asyncio.Task[SyncReport]) -> None:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(run, timeout=self.settings.shutdown_timeout_seconds)
        log.info("daemon.run_abandoned", reason="stop requested")

    def _next_interval(self, report: SyncReport) -> float:
        """When the ticker fires next: the start-up interval until a first success."""
        first_success_yet = self._succeeded or report.ok
        settings = self.settings
        return settings.interval_seconds if first_success_yet else settings.init_interval_seconds

    def _after_run(self, report: SyncReport) -> None:
        _return_freed_memory()
        self._run_log.report(report, next_attempt_seconds=self._next_interval(report))
        self._metrics.observe(report)
        self._notifier.status(_summary(report))
        announced = announce(report, unannounced=self._unannounced)
        self._unannounced -= announced
        self._hook.notify(announced)
        if report.ok and not self._succeeded:
            self._succeeded = True
            self._ticker.set_interval(self.settings.interval_seconds)
        self._announce_if_ready("replica synced")

    def _reload_due(self) -> bool:
        """Whether to reload now: asked for, and the last reload `RELOAD_SPACING_SECONDS` ago.
        One asked for sooner is put off to then (one wake-up, however many SIGHUPs came)."""
        if not self.requests.reload:
            return False
        wait = self._reloaded_at + RELOAD_SPACING_SECONDS - self._monotonic()
        if wait <= 0:
            return self.requests.take_reload()
        if self._reload_timer is None:
            self._reload_timer = asyncio.get_running_loop().call_later(wait, self._reload_wake)
        return False

    def _reload_wake(self) -> None:
        self._reload_timer = None
        self.requests.request()  # the reload flag is still up

    async def _reload(self) -> None:
        self._reloaded_at = self._monotonic()
        try:
            new = self._reload_settings()
        except ConfigError as exc:
            log.error("config.reload_failed", error=str(exc), kept="the running config")
            return
        fixed = [k for k in RESTART_ONLY if getattr(new, k) != getattr(self.settings, k)]
        if fixed:
            log.error("config.reload_refused", needs_restart=fixed, kept="the running config")
            return
        changed = _changed(self.settings, new)
        old_client, self._client = self._client, self._client_factory(new)
        self.engine = build_engine(new, self._client, previous=self.engine, clock=self._clock)
        self.engine.witness = self._witness
        await old_client.aclose()
        self.settings = new
        self._hook.command = HookCommand.from_settings(new)
        if self._succeeded:
            self._ticker.set_interval(new.interval_seconds)
        self._track()
        log.info("config.reloaded", changed=changed)

    def _witness(self, relpaths: Sequence[str]) -> str | None:
        """The on-change hook, when a file another process changed was written while it ran."""
        for relpath in relpaths:
            try:
                changed_at = (self.settings.replica_dir / relpath).lstat().st_mtime
            except OSError:  # removed: no time to compare
                continue
            program = self._hook.ran_at(changed_at)
            if program is not None:
                return (
                    f"the on-change hook ({program}), which was running when {relpath} "
                    "changed: a hook must not write the replica (each edit is repaired, and "
                    "the repair announced to the hook again)"
                )
        return None

    # -- probes and snapshots -----------------------------------------------------------

    def _track(self) -> None:
        self._metrics.track(layer_keys(self.settings.categories), self.engine.state)

    def ready(self) -> Verdict:
        """Every configured layer confirmed current within `max_staleness_seconds`, and every
        file it published still there for readers to load."""
        bound = self.settings.max_staleness_seconds
        keys = layer_keys(self.settings.categories)
        verdict = staleness(self.engine.state, keys, now=self._clock(), bound_seconds=bound)
        detail: dict[str, Any] = {"max_staleness_seconds": bound}
        if verdict.never_confirmed:
            detail["never_synced"] = list(verdict.never_confirmed)
        if verdict.stale:
            detail["stale"] = list(verdict.stale)
        if verdict.unshown:
            detail["stamp_not_shown"] = list(verdict.unshown)
            detail["likely_cause"] = UNSHOWN_CAUSE
        missing = self._missing_files(keys)
        if missing:  # deleted (the whole directory, say): until the next run publishes them
            detail["missing"] = missing
        return Verdict(verdict.fresh and not missing, detail)

    def _missing_files(self, keys: Sequence[LayerKey]) -> list[str]:
        """The published files readers would not find: a stat each (a few dozen a probe)."""
        replica = self.settings.replica_dir
        return [
            relpath
            for key in keys
            for relpath in self.engine.state.layer(*key).files
            if not (replica / relpath).is_file()
        ]

    def _alive(self) -> Verdict:
        silent = self._monotonic() - self._heartbeat
        return Verdict(silent < ALIVE_WITHIN_SECONDS, {"loop_silent_seconds": round(silent, 3)})

    def _announce_if_ready(self, why: str) -> None:
        if not self._ready_sent and self.ready().ok:
            self._ready_sent = True
            self._notifier.ready(why)
            log.info("daemon.ready", why=why)

    async def _beat(self) -> None:
        while True:
            self._heartbeat = self._monotonic()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _watchdog(self) -> None:
        """Ping systemd's watchdog while runs finish within their bound; a hung run stops it."""
        seconds = self._notifier.watchdog_seconds
        if seconds is None:
            return
        bound = self.settings.run_timeout_seconds + self.settings.shutdown_timeout_seconds
        while True:
            started = self._run_started
            if started is None or self._monotonic() - started < bound:
                self._notifier.watchdog()
            await asyncio.sleep(seconds / 2)


def _return_freed_memory() -> None:
    """Give the heap a run freed back to the OS: glibc otherwise keeps it, and RSS creeps."""
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)  # glibc only; musl has none
    if trim is not None:
        trim(0)


_LIBC = ctypes.CDLL(None)


def _summary(report: SyncReport) -> str:
    counts: dict[str, int] = {}
    for result in report.results:
        counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
    parts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"last sync {stamp}: {parts}" + (" (forced)" if report.forced else "")


def _changed(old: Settings, new: Settings) -> dict[str, Any]:
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    return {key: after[key] for key in after if after[key] != before.get(key)}
