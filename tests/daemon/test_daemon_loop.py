"""The daemon's loop in-process, in seconds: a real `Daemon` over a fake transport, with clocks
the test moves (the process tests beside it keep real signals, sd_notify and probe sockets).

The settings come from the same environment a child process gets (`daemon_env`), the PRIMARY
is a `FaultServer` script answered without a socket, and runs are counted on the registry.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from horde_replica_sync import early
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.clock import Clock
from horde_replica_sync.config import Settings, load_settings
from horde_replica_sync.daemon import Daemon
from horde_replica_sync.freshness import UNSHOWN_CAUSE, UNSHOWN_RUNS_ALARM
from horde_replica_sync.notify import Notifier
from horde_replica_sync.runtime import make_client
from tests.environment import STEERING_PREFIXES, daemon_env
from tests.fakes import FakeClock, Wall
from tests.faultserver import (
    FaultServer,
    Reply,
    change_upstream,
    metadata,
    records,
    script_primary,
    v2_path,
)
from tests.hookscript import calls, overlapped, wait_for_calls, write_hook

METADATA = [f"/api/model_references/{family}/metadata/metadata" for family in ("v1", "v2")]


class Notes(Notifier):
    """What the daemon tells the service manager, kept instead of sent."""

    def __init__(self) -> None:
        super().__init__({})
        self.sent: list[str] = []

    def _send(self, message: str) -> None:
        self.sent.append(message)


class Shifted:
    """The monotonic clock, moved ahead by `shift` seconds when a test skips a wait."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.shift


class Running:
    """A `Daemon` serving in this event loop, with the knobs a test turns."""

    def __init__(self, server: FaultServer, config: Path, **seams: object) -> None:
        self.server = server
        self.config = config
        self.registry = CollectorRegistry()
        self.notes = Notes()
        self.steady = FakeClock(time.time())  # stamps and /readyz
        self.monotonic = Shifted()  # reload spacing, the heartbeat
        self.boot_slept = 0.0  # how long the host was suspended
        self.reloads = 0
        transport = server.transport()
        self.daemon = Daemon(
            load_settings(config),
            reload_settings=self._reload,
            notifier=self.notes,
            registry=self.registry,
            handle_signals=bool(seams.pop("handle_signals", False)),
            clock=self.steady,
            client_factory=lambda settings: make_client(settings, transport=transport),
            monotonic=self.monotonic,
            elapsed=lambda: asyncio.get_running_loop().time() + self.boot_slept,
            **seams,  # type: ignore[arg-type]
        )
        self.task: asyncio.Task[int] | None = None

    def _reload(self) -> Settings:
        self.reloads += 1
        return load_settings(self.config)

    def runs(self, result: str = "ok") -> int:
        value = self.registry.get_sample_value("horde_replica_sync_runs_total", {"result": result})
        return int(value or 0)

    def hook_runs(self, result: str) -> int:
        value = self.registry.get_sample_value("horde_replica_hook_runs_total", {"result": result})
        return int(value or 0)

    async def until(self, done: Callable[[], bool], within: float = 5.0) -> None:
        """Yield to the daemon until `done()` (checked every 10 ms); fail after `within` s."""
        deadline = time.monotonic() + within
        while not done():
            assert self.task is not None
            if self.task.done():
                self.task.result()  # raise what stopped it
                pytest.fail("the daemon stopped")
            if time.monotonic() > deadline:
                pytest.fail(f"not within {within} s: {done}")
            await asyncio.sleep(0.01)

    async def stop(self) -> int:
        self.daemon.stop()
        assert self.task is not None
        return await asyncio.wait_for(self.task, 10)


@pytest.fixture(name="server")
def _server() -> FaultServer:
    server = FaultServer()  # never started: its script is answered in-process
    script_primary(server)
    return server


@pytest.fixture(name="start")
async def _start(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Running]]:
    """Start daemons (settings from the environment plus `env`); stopped at the end."""
    for name in list(os.environ):
        if name.startswith(STEERING_PREFIXES):
            monkeypatch.delenv(name)
    started: list[Running] = []

    def start(env: dict[str, str] | None = None, **seams: object) -> Running:
        extra = {"HORDE_REPLICA_METRICS_ADDR": "127.0.0.1:0", **(env or {})}
        for name, value in daemon_env("http://primary.test", tmp_path, **extra).items():
            monkeypatch.setenv(name, value)
        running = Running(server, tmp_path / "config.toml", **seams)
        running.task = asyncio.create_task(running.daemon.serve())
        started.append(running)
        return running

    yield start
    for running in started:
        if running.task is not None and not running.task.done():
            assert await running.stop() == 0
    server.stop()


def _fail_primary(server: FaultServer) -> None:
    for path in METADATA:
        server.script(path, Reply(500))
    server.script(v2_path(C.esrgan), Reply(500))


def _heal_primary(server: FaultServer) -> None:
    for path in METADATA:
        server.script(path, Reply(body=metadata(1000)))
    server.script(v2_path(C.esrgan), Reply(body=records(C.esrgan, 4)))


class TestInterval:
    async def test_init_interval_until_the_first_success_then_interval(
        self, start: Callable[..., Running], server: FaultServer
    ) -> None:
        """Failed runs retry every `init_interval_seconds`; the first success switches the ticker
        to `interval_seconds`, and a later failure does not switch it back."""
        _fail_primary(server)
        daemon = start()
        await daemon.until(lambda: daemon.runs("failed") >= 2)  # retried after 1 s
        assert daemon.daemon._ticker.interval == 1
        _heal_primary(server)
        await daemon.until(lambda: daemon.runs("ok") == 1)
        assert daemon.daemon._ticker.interval == 3600
        _fail_primary(server)
        daemon.daemon.requests.request(force=True)
        await daemon.until(lambda: daemon.runs("failed") >= 3)
        assert daemon.daemon._ticker.interval == 3600


class TestReload:
    async def test_a_storm_is_one_reload_a_second_and_the_last_is_honoured(
        self, start: Callable[..., Running], tmp_path: Path
    ) -> None:
        """Each reload rebuilds the client: a storm reloads at once, then once when a second has
        passed since, with the config as it is then."""
        daemon = start()
        await daemon.until(lambda: daemon.runs() == 1)
        for _ in range(50):
            daemon.daemon.requests.request(reload=True)
        await daemon.until(lambda: daemon.reloads == 1)
        for sent in range(50):
            if sent == 40:
                (tmp_path / "config.toml").write_text("max_concurrency = 2\n")
            daemon.daemon.requests.request(reload=True)
            await asyncio.sleep(0)
        await asyncio.sleep(0.3)
        assert daemon.reloads == 1  # the spacing's second has not passed
        daemon.monotonic.shift += 1.0
        await daemon.until(lambda: daemon.reloads == 2)
        assert daemon.daemon.settings.max_concurrency == 2
        await asyncio.sleep(1.2)
        assert daemon.reloads == 2  # one wake-up for the whole storm
        asked_at = time.monotonic()
        daemon.daemon.requests.request(force=True)  # the loop still answers at once
        await daemon.until(lambda: daemon.runs() == 2)
        assert time.monotonic() - asked_at < 1.0

    async def test_a_broken_config_keeps_the_running_one(
        self, start: Callable[..., Running], tmp_path: Path
    ) -> None:
        daemon = start()
        await daemon.until(lambda: daemon.runs() == 1)
        (tmp_path / "config.toml").write_text("max_concurrency = 0\n")
        with capture_logs() as logged:
            daemon.daemon.requests.request(reload=True)
            await daemon.until(lambda: daemon.reloads == 1)
            daemon.daemon.requests.request(force=True)  # runs on with the running config
            await daemon.until(lambda: daemon.runs() == 2)
            (tmp_path / "config.toml").write_text("max_concurrency = 2\n")
            daemon.monotonic.shift += 1.0
            daemon.daemon.requests.request(reload=True)
            await daemon.until(lambda: daemon.reloads == 2)
        (failed,) = [e for e in logged if e["event"] == "config.reload_failed"]
        assert "max_concurrency" in failed["error"]
        (reloaded,) = [e for e in logged if e["event"] == "config.reloaded"]
        assert reloaded["changed"] == {"max_concurrency": 2}

    async def test_a_restart_only_setting_is_refused(
        self, start: Callable[..., Running], tmp_path: Path
    ) -> None:
        daemon = start()
        await daemon.until(lambda: daemon.runs() == 1)
        before = daemon.daemon.settings.replica_dir
        (tmp_path / "config.toml").write_text(f'replica_dir = "{tmp_path / "elsewhere"}"\n')
        daemon.daemon.requests.request(reload=True)
        await daemon.until(lambda: daemon.reloads == 1)
        await asyncio.sleep(0.05)
        assert daemon.daemon.settings.replica_dir == before


class TestReadiness:
    async def test_never_synced_then_ready_then_stale_then_missing(
        self, start: Callable[..., Running], server: FaultServer, tmp_path: Path
    ) -> None:
        """Ready only while every layer was confirmed within the bound and its files are there;
        READY=1 is sent once, by the first run that makes it so."""
        _fail_primary(server)
        daemon = start({"HORDE_REPLICA_MAX_STALENESS_SECONDS": "60"})
        await daemon.until(lambda: daemon.runs("failed") == 1)
        verdict = daemon.daemon.ready()
        assert not verdict.ok
        assert "esrgan/v2" in verdict.detail["never_synced"]
        assert not any(n.startswith("READY=1") for n in daemon.notes.sent)
        _heal_primary(server)
        await daemon.until(lambda: daemon.runs() == 1)
        assert daemon.daemon.ready().ok
        assert [n for n in daemon.notes.sent if n.startswith("READY=1")] == [
            "READY=1\nSTATUS=replica synced"
        ]
        daemon.steady.now += 61  # nothing confirmed for longer than the bound
        stale = daemon.daemon.ready()
        assert not stale.ok
        assert stale.detail["stale"]
        daemon.steady.now -= 61
        published = next((tmp_path / "replica").rglob("*.json"))
        published.unlink()
        missing = daemon.daemon.ready()
        assert not missing.ok
        assert any(published.name in m for m in missing.detail["missing"])
        daemon.daemon.requests.request(force=True)  # the next run publishes it again
        await daemon.until(lambda: daemon.runs() == 2)
        assert daemon.daemon.ready().ok
        assert daemon.daemon._alive().ok  # /healthz stays up throughout
        assert sum(n.startswith("READY=1") for n in daemon.notes.sent) == 1
        # PRIMARY answers that never show their stamp, run after run (a cache before it):
        daemon.daemon.engine.state.layer(C.esrgan, Layer.V2).unshown_runs = UNSHOWN_RUNS_ALARM
        unshown = daemon.daemon.ready()
        assert not unshown.ok
        assert unshown.detail["stamp_not_shown"] == ["esrgan"]
        assert unshown.detail["likely_cause"] == UNSHOWN_CAUSE


class TestHook:
    """Once at start, once per run that published changes; never two at once."""

    async def test_once_at_start_then_per_change(
        self, start: Callable[..., Running], server: FaultServer, tmp_path: Path
    ) -> None:
        """Start: every category held; a change upstream: that category only."""
        script, log = write_hook(tmp_path)
        daemon = start({"HORDE_REPLICA_ON_CHANGE_COMMAND": str(script), "HOOK_LOG": str(log)})
        await daemon.until(lambda: daemon.hook_runs("ok") == 1)
        (first,) = calls(log)
        assert first.changed == ("blip", "esrgan")
        assert first.replica_dir == str(tmp_path / "replica")
        daemon.daemon.requests.request(force=True)  # a run that changes nothing announces nothing
        await daemon.until(lambda: daemon.runs() == 2)
        change_upstream(server, C.esrgan, 2000, "changed")
        daemon.daemon.requests.request(force=True)
        await daemon.until(lambda: daemon.hook_runs("ok") == 2)
        assert [c.changed for c in calls(log)] == [("blip", "esrgan"), ("esrgan",)]
        for result in ("failed", "timeout", "error", "coalesced"):
            assert daemon.hook_runs(result) == 0, result

    async def test_slow_hook_and_two_changes_coalesce(
        self, start: Callable[..., Running], server: FaultServer, tmp_path: Path
    ) -> None:
        """Two changes while the hook runs: one follow-up with both, never two at once; the
        runs do not wait for the hook."""
        script, log = write_hook(tmp_path)
        env = {"HORDE_REPLICA_ON_CHANGE_COMMAND": str(script), "HOOK_LOG": str(log)}
        daemon = start({**env, "HOOK_SLEEP": "1"})
        await asyncio.to_thread(wait_for_calls, log, 1)  # the start-up announcement runs 1 s
        change_upstream(server, C.esrgan, 2000, "one")
        daemon.daemon.requests.request(force=True)
        await daemon.until(lambda: daemon.runs() == 2)
        change_upstream(server, C.blip, 3000, "two", held={C.esrgan: 2000})
        daemon.daemon.requests.request(force=True)
        await daemon.until(lambda: daemon.runs() == 3)
        assert len(calls(log)) == 1  # the sync runs did not wait for the hook
        await daemon.until(lambda: daemon.hook_runs("ok") == 2, within=10)
        assert [c.changed for c in calls(log)] == [("blip", "esrgan"), ("blip", "esrgan")]
        assert not overlapped(log)
        assert daemon.hook_runs("coalesced") == 1


class TestSignals:
    @pytest.fixture(autouse=True)
    def _own_handlers(self) -> object:
        """The daemon's loop takes these signals and hands them to `early` when it stops:
        give the test process its own back afterwards."""
        kept = {s: signal.getsignal(s) for s in (*early.HELD, signal.SIGINT)}
        yield None
        early.take()
        for signum, handler in kept.items():
            signal.signal(signum, handler)

    async def test_sigusr1_storm_is_one_forced_run_and_sigterm_stops(
        self, start: Callable[..., Running]
    ) -> None:
        """Signals only raise flags: 200 SIGUSR1 coalesce to at most 2 forced runs; SIGHUP is a
        reload; SIGTERM ends serve() with 0."""
        daemon = start(handle_signals=True)
        await daemon.until(lambda: daemon.runs() == 1)
        for _ in range(200):
            os.kill(os.getpid(), signal.SIGUSR1)
        await daemon.until(lambda: daemon.runs() >= 2)
        await asyncio.sleep(1.5)
        assert 2 <= daemon.runs() <= 3
        assert daemon.daemon._alive().ok  # /healthz
        os.kill(os.getpid(), signal.SIGHUP)
        await daemon.until(lambda: daemon.reloads == 1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert daemon.task is not None
        assert await asyncio.wait_for(daemon.task, 10) == 0
        assert daemon.notes.sent[-1] == "STOPPING=1\nSTATUS=stopping"


class TestClocks:
    async def test_a_suspend_of_the_host_is_a_run_at_once(
        self, start: Callable[..., Running]
    ) -> None:
        """BOOTTIME ahead of the loop's clock by an hour: the run the sleep skipped, now."""
        daemon = start()
        await daemon.until(lambda: daemon.runs() == 1)
        await asyncio.sleep(1.2)
        assert daemon.runs() == 1  # hourly now: nothing due
        daemon.boot_slept += 3600
        await daemon.until(lambda: daemon.runs() == 2, within=3)

    async def test_a_wall_step_back_keeps_the_retries_and_forward_is_no_burst(
        self,
        start: Callable[..., Running],
        server: FaultServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An hour back (APScheduler's wall and the daemon's): the retries every second go on,
        the step is logged once, measured, and counted; an hour forward: no backlog burst."""
        wall = Wall.install(monkeypatch)
        stepped = Clock(wall=lambda: time.time() + wall.offset, monotonic=time.monotonic)
        _fail_primary(server)  # retrying every second (init_interval_seconds)
        daemon = start(wall=stepped)
        await daemon.until(lambda: daemon.runs("failed") >= 1)
        with capture_logs() as logged:
            wall.offset -= 3600
            before = daemon.runs("failed")
            await asyncio.sleep(4.0)
            after_back = daemon.runs("failed") - before
            wall.offset += 7200  # two hours forward at once
            before = daemon.runs("failed")
            await asyncio.sleep(2.0)
            after_forward = daemon.runs("failed") - before
        assert after_back >= 2, after_back  # at most the backstop's margin lost
        (step,) = [e for e in logged if e["event"] == "scheduler.clock_step"]
        assert step["wall_step_seconds"] == pytest.approx(-3600, abs=5)
        steps = daemon.registry.get_sample_value("horde_replica_scheduler_clock_steps_total")
        assert steps == 1
        assert 1 <= after_forward <= 3, after_forward  # not 7200 ticks


async def test_a_fake_transport_is_the_whole_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client with a transport mounts no proxy from the environment."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = FaultServer()
    server.script("/x", Reply(body=b"{}"))
    async with make_client(load_settings(), transport=server.transport()) as client:
        assert (await client.get("http://primary.test/x")).status_code == 200
    server.stop()
    with pytest.raises(httpx.ConnectError):  # without one, the environment's proxy is used
        async with make_client(load_settings()) as client:
            await client.get("http://primary.test/x")
