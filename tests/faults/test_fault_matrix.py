"""The fault matrix over the real daemon: a hostile PRIMARY and a hostile disk (docs/faults.md).

Every case runs against `horde-replica-sync run` as a child process (tests/daemon/conftest.py
`DaemonProcess`) and shows the same four things: the daemon keeps running, the last good copy
keeps its bytes and mtime, the error is counted in `/metrics` under its reason and logged with
it, and the first run that starts after the fault clears succeeds. The PRIMARY cases share one
daemon (runs are triggered by SIGUSR1; recovery is left to the 1 s schedule); the disk cases
mount a small tmpfs or a read-only bind mount (we run as root) and unmount in teardown.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.store import ReplicaStore, sha256_hex
from tests import environment
from tests.faultserver import FaultServer, Reply, metadata, records, script_primary, v2_path
from tests.processes import DaemonProcess, Event

ESRGAN_V2 = v2_path(C.esrgan)
METADATA = tuple(f"/api/model_references/{f}/metadata/metadata" for f in ("v1", "v2"))
MAX_BODY_BYTES = 1024 * 1024
REQUEST_TIMEOUT_SECONDS = 1.0
# A run is only known by its `sync.run_done` line (logged at its end, with its duration); a
# run counts as "after the fault cleared" when its fetch phase began this long after clearing.
CLEAR_MARGIN_SECONDS = 0.25


class SwitchableServer(FaultServer):
    """A FaultServer whose listening socket can be closed (connection refused) and reopened.

    Every answer carries `Connection: close`, so no pooled keep-alive connection outlives a
    closed listener and "refused" really means refused.
    """

    def __init__(self) -> None:
        super().__init__()
        self._quiet(self._server)

    @staticmethod
    def _quiet(server: ThreadingHTTPServer) -> None:
        # A client hanging up on a hostile answer is the point, not an error to print.
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]

    def next_reply(self, path: str, headers: dict[str, str], query: str = "") -> Reply:
        """The scripted reply, told to close its connection."""
        reply = super().next_reply(path, headers, query)
        return dataclasses.replace(reply, headers={**reply.headers, "Connection": "close"})

    def close_listener(self) -> None:
        """Stop accepting: connections to the port are refused from now on."""
        self._server.shutdown()
        self._server.server_close()

    def reopen(self) -> None:
        """Accept again on the same port, with the same scripts."""
        address = self._server.server_address[:2]
        server = ThreadingHTTPServer(
            (str(address[0]), int(address[1])), self._server.RequestHandlerClass
        )
        server.daemon_threads = True
        self._quiet(server)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()


def daemon_env(server: FaultServer, root: Path, **extra: str) -> dict[str, str]:
    """The environment of a matrix daemon: esrgan only, a 1 s schedule, fast retries."""
    matrix = {
        "HORDE_REPLICA_CATEGORIES": "esrgan",
        "HORDE_REPLICA_INTERVAL_SECONDS": "1",
        "HORDE_REPLICA_REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT_SECONDS),
        "HORDE_REPLICA_RETRY_ATTEMPTS": "2",
        "HORDE_REPLICA_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    }
    return environment.daemon_env(server.url, root, **{**matrix, **extra})


def started_at(event: Event) -> float:
    """When a run's fetch phase began: its log time minus its duration."""
    logged = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
    return logged - float(event["duration_seconds"])


@dataclass
class Fault:
    """One hostile answer, what it must be counted as, and the text its log line must carry."""

    name: str
    replies: tuple[Reply, ...]
    reason: str
    says: str
    outcome: str = "failed"
    source: str = "primary"


class Harness:
    """One daemon and its PRIMARY, with the checks every case shares."""

    def __init__(self, daemon: DaemonProcess, server: FaultServer, replica: Path) -> None:
        self.daemon = daemon
        self.server = server
        self.replica = replica
        self.generation = 0

    @property
    def v2_file(self) -> Path:
        """The published v2 file of esrgan."""
        return self.replica / "esrgan.json"

    def stamp(self) -> tuple[bytes, int]:
        """The v2 file's bytes and mtime."""
        return self.v2_file.read_bytes(), self.v2_file.stat().st_mtime_ns

    def errors(self, reason: str, source: str = "primary") -> float:
        """horde_replica_fetch_errors_total{source, reason} (0 when never counted)."""
        return (
            self.daemon.sample("horde_replica_fetch_errors_total", source=source, reason=reason)
            or 0.0
        )

    def runs(self) -> list[Event]:
        """Every `sync.run_done` so far."""
        return self.daemon.matching("sync.run_done")

    def layer_events(self) -> list[Event]:
        """Every `sync.category_done` of esrgan v2 so far (one per run, in run order)."""
        return self.daemon.matching("sync.category_done", category="esrgan", layer="v2")

    def forced_run(self, timeout: float = 20.0) -> tuple[Event, Event]:
        """SIGUSR1, then the forced run's `sync.run_done` and its esrgan v2 event."""
        forced = len(self.daemon.matching("sync.run_done", forced=True))
        self.daemon.signal(signal.SIGUSR1)
        self.daemon.wait_for("sync.run_done", forced=True, count=forced + 1, timeout=timeout)
        return self._run_and_layer(self.daemon.matching("sync.run_done", forced=True)[forced])

    def _run_and_layer(self, run: Event) -> tuple[Event, Event]:
        index = next(i for i, e in enumerate(self.runs()) if e is run)
        return run, self.layer_events()[index]

    def run_after(self, moment: float, timeout: float = 15.0) -> tuple[Event, Event]:
        """The first run whose fetch phase began after `moment` (+ the margin)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.runs():
                if started_at(run) > moment + CLEAR_MARGIN_SECONDS:
                    return self._run_and_layer(run)
            time.sleep(0.02)
        pytest.fail(f"no run started within {timeout} s after the fault cleared")

    def forced_run_or_exit(self, timeout: float = 15.0) -> None:
        """SIGUSR1, then wait until the forced run is logged or the process has exited."""
        forced = len(self.daemon.matching("sync.run_done", forced=True))
        self.daemon.signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.daemon.proc.poll() is None:
            if len(self.daemon.matching("sync.run_done", forced=True)) > forced:
                return
            time.sleep(0.02)

    def heal(self, *, count: int = 4) -> bytes:
        """Serve a healthy PRIMARY whose esrgan v2 body is new; return that body."""
        self.generation += 1
        script_primary(self.server, stamp=1000 + self.generation, count=count)
        body = records(C.esrgan, count, tag=f"good-{self.generation}")
        self.server.script(ESRGAN_V2, Reply(body=body))
        return body

    def assert_alive(self) -> None:
        """The process runs and /healthz says so."""
        code = self.daemon.proc.poll()
        assert code is None, f"the daemon exited {code}:\n" + "".join(self.daemon.raw[-5:])
        assert self.daemon.get("/healthz")[0] == 200

    def assert_recovers(self, cleared_at: float, body: bytes) -> Event:
        """The first run after the fault cleared is ok and publishes `body`."""
        run, layer = self.run_after(cleared_at)
        assert run["ok"] is True, (run, layer)
        assert layer["outcome"] in ("updated", "unchanged"), layer
        assert self.v2_file.read_bytes() == body
        self.assert_alive()
        return run


# -- the hostile PRIMARY -----------------------------------------------------------------------

GOOD = records(C.esrgan, 400, tag="big")
FAULTS = [
    Fault("hang", (Reply(200, b"{}", delay=3.0),), "timeout", "timed out"),
    Fault("reset-before-headers", (Reply(reset=True),), "connection", "connection failed"),
    Fault(
        "reset-mid-body",
        (Reply(200, GOOD, truncate_to=len(GOOD) // 3),),
        "connection",
        "connection failed",
    ),
    Fault(
        "truncated-json",  # a complete response whose body is cut: Content-Length agrees
        (Reply(200, GOOD[: len(GOOD) // 2]),),
        "invalid",
        "not valid JSON",
        outcome="refused",
    ),
    Fault(
        "invalid-json", (Reply(200, b'{"a": {"name": '),), "invalid", "not valid JSON", "refused"
    ),
    Fault("empty-body", (Reply(200, b""),), "invalid", "not valid JSON", "refused"),
    Fault(
        "oversize",
        (Reply(200, records(C.esrgan, 30_000)),),
        "oversize",
        f"exceeds the {MAX_BODY_BYTES}-byte cap",
    ),
    Fault(
        "deeply-nested",
        (Reply(200, b'{"a":' * 100_000 + b"1" + b"}" * 100_000),),
        "invalid",
        "JSON nested too deeply",
        "refused",
    ),
    Fault(
        "not-utf8", (Reply(200, b'{"x": {"name": "\xff\xfe"}}'),), "invalid", "not UTF-8", "refused"
    ),
    Fault(
        "html-error-page-200",
        (
            Reply(
                200,
                b"<html><body><h1>502 Bad Gateway</h1></body></html>",
                headers={"Content-Type": "text/html"},
            ),
        ),
        "invalid",
        "not valid JSON",
        "refused",
    ),
    Fault("wrong-shape", (Reply(200, b'[{"name": "x"}]'),), "invalid", "not an object", "refused"),
    Fault("shrink", (Reply(200, records(C.esrgan, 1)),), "shrink", "shrink guard", "refused"),
    Fault(
        "redirect-loop",
        (Reply(302, headers={"Location": ESRGAN_V2}),),
        "redirect",
        "unexpected redirect (HTTP 302",
    ),
    Fault("500", (Reply(500, b"Internal Server Error"),), "http_5xx", "HTTP 500"),
    Fault(
        "503-retry-after-1",
        (Reply(503, b"", headers={"Retry-After": "1"}),),
        "http_5xx",
        "HTTP 503",
    ),
    Fault(
        "403-plain", (Reply(403, b'{"detail": "forbidden"}'),), "http_4xx", "unexpected HTTP 403"
    ),
    Fault(
        "422-unknown-category",
        (Reply(422, b'{"detail": []}'),),
        "unknown_category",
        "does not know category 'esrgan'",
    ),
]


@pytest.fixture(scope="module", name="primary")
def _primary() -> Iterator[SwitchableServer]:
    server = SwitchableServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", name="harness")
def _harness(
    primary: SwitchableServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    """One daemon for every PRIMARY case, synced once from a healthy PRIMARY."""
    root = tmp_path_factory.mktemp("matrix")
    script_primary(primary)
    daemon = DaemonProcess([], daemon_env(primary, root))
    harness = Harness(daemon, primary, root / "replica")
    try:
        daemon.wait_for("sync.run_done", ok=True)
        yield harness
    finally:
        daemon.close()


class TestHostilePrimary:
    """Each PRIMARY fault: still running, last good copy intact, counted, logged, recovered."""

    @pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
    def test_fault(self, harness: Harness, fault: Fault) -> None:
        """The forced run fails with the fault's reason; the next run after it clears is ok."""
        harness.heal()
        harness.forced_run()
        before, counted = harness.stamp(), harness.errors(fault.reason, fault.source)
        asked = harness.server.count(ESRGAN_V2)
        harness.server.script(ESRGAN_V2, *fault.replies)
        run, layer = harness.forced_run()
        assert run["ok"] is False, (run, layer)
        assert layer["outcome"] == fault.outcome, layer
        assert fault.says in (layer["error"] or ""), layer
        assert ESRGAN_V2 in layer["error"], layer
        assert harness.errors(fault.reason, fault.source) >= counted + 1
        assert harness.stamp() == before
        assert not list(harness.replica.rglob("*.hrs-tmp"))
        harness.assert_alive()
        asked = harness.server.count(ESRGAN_V2) - asked
        print(f"\n[{fault.name}] {asked} request(s): {layer['error']}")
        body = harness.heal()
        harness.assert_recovers(time.time(), body)

    def test_connection_refused(self, harness: Harness) -> None:
        """Nothing listening: counted as connection errors, the file stays, reopening heals."""
        assert isinstance(harness.server, SwitchableServer)
        harness.heal()
        harness.forced_run()
        before, counted = harness.stamp(), harness.errors("connection")
        harness.server.close_listener()
        try:
            run, layer = harness.forced_run()
            assert run["ok"] is False, run
            assert "ConnectError" in (run["primary_error"] or ""), run
            assert layer["outcome"] == "failed", layer
            assert "PRIMARY is unavailable" in (layer["error"] or ""), layer
            assert "connection failed" in (layer["error"] or ""), layer
            print(f"\n[refused] {layer['error']}")
            assert harness.errors("connection") >= counted + 1
            assert harness.stamp() == before
            harness.assert_alive()
        finally:
            body = harness.heal()
            harness.server.reopen()
        harness.assert_recovers(time.time(), body)

    def test_metadata_down(self, harness: Harness) -> None:
        """Both metadata endpoints answer 500: the run is not ok, counted, cached data kept."""
        harness.heal()
        harness.forced_run()
        before, counted = harness.stamp(), harness.errors("http_5xx")
        for path in METADATA:
            harness.server.script(path, Reply(500, b"down"))
        broke = time.time()
        run, layer = harness.run_after(broke)
        print(
            f"\n[metadata 500] ok={run['ok']} {run['primary_error']}; esrgan v2 {layer['outcome']}"
        )
        assert run["ok"] is False, run
        assert "metadata/metadata: HTTP 500" in (run["primary_error"] or ""), run
        assert harness.errors("http_5xx") >= counted + 1
        assert harness.stamp() == before
        harness.assert_alive()
        body = harness.heal()
        harness.server.script(METADATA[0], Reply(body=metadata(5000 + harness.generation)))
        harness.assert_recovers(time.time(), body)


# -- the hostile disk --------------------------------------------------------------------------


def run_mount(*args: str) -> None:
    """`mount ARGS`, or fail the test saying why (these tests need root in a mount namespace)."""
    proc = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(
            f"`mount {' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip()}. "
            "The disk-fault tests need root with CAP_SYS_ADMIN (tmpfs and bind mounts)."
        )


def unmount(path: Path) -> None:
    """Unmount `path` (lazily if it is busy); never raises."""
    done = subprocess.run(["umount", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(directory: Path, leave: int) -> Path:
    """Fill the filesystem of `directory` until ENOSPC, then free `leave` bytes; the filler."""
    filler = directory / "filler.bin"
    chunk = b"\0" * 4096
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while True:
            os.write(fd, chunk)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


StartDaemon = Callable[..., Harness]


@pytest.fixture(name="disk_primary")
def _disk_primary() -> Iterator[FaultServer]:
    server = SwitchableServer().start()
    try:
        script_primary(server)
        yield server
    finally:
        server.stop()


@pytest.fixture(name="start_disk_daemon")
def _start_disk_daemon(disk_primary: FaultServer, tmp_path: Path) -> Iterator[StartDaemon]:
    started: list[DaemonProcess] = []

    def start(**env: str) -> Harness:
        daemon = DaemonProcess([], daemon_env(disk_primary, tmp_path, **env))
        started.append(daemon)
        harness = Harness(daemon, disk_primary, tmp_path / "replica")
        daemon.wait_for("sync.run_done", ok=True)
        return harness

    yield start
    for daemon in started:
        daemon.close()


@pytest.fixture(name="tmpfs_replica")
def _tmpfs_replica(tmp_path: Path) -> Iterator[Path]:
    """The replica directory is a 256 KiB tmpfs."""
    replica = tmp_path / "replica"
    replica.mkdir()
    run_mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(replica))
    try:
        yield replica
    finally:
        unmount(replica)


@pytest.fixture(name="read_only")
def _read_only(tmp_path: Path) -> Iterator[Callable[[bool], None]]:
    """`read_only(True)` makes the replica's file system read-only; False undoes it.

    The replica is a bind mount of itself from before the daemon starts, remounted read-only
    and back: the daemon writes through the directory it opened at start, so a read-only
    mount stacked on the path afterwards would not be the one it writes through.
    """
    replica = tmp_path / "replica"
    replica.mkdir()
    run_mount("--bind", str(replica), str(replica))

    def switch(on: bool) -> None:
        run_mount("-o", f"remount,{'ro' if on else 'rw'},bind", str(replica))

    try:
        yield switch
    finally:
        unmount(replica)


def assert_store_failure(harness: Harness, run: Event, layer: Event, says: str) -> None:
    """The run failed on the store, named the path and the errno, counted reason=store."""
    assert run["ok"] is False, run
    assert layer["outcome"] == "failed", layer
    error = layer["error"] or ""
    assert f"cannot write {harness.v2_file}" in error, layer
    assert says in error, layer


def assert_state_save_failed(harness: Harness, says: str) -> None:
    """`state.save_failed` was logged, naming the state file and the errno."""
    state_file = harness.replica / ".horde-replica-sync" / "state.json"
    errors = [str(e.get("error")) for e in harness.daemon.matching("state.save_failed")]
    assert any(str(state_file) in e and says in e for e in errors), errors


def assert_state_records(harness: Harness, body: bytes) -> None:
    """Once writable again, the state file records the published v2 file's digest."""
    store = ReplicaStore(harness.replica, harness.replica / ".horde-replica-sync")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        record = store.load_state().layer(C.esrgan, Layer.V2).files.get("esrgan.json")
        if record is not None and record.sha256 == sha256_hex(body):
            return
        time.sleep(0.05)
    pytest.fail("the state file never recorded the recovered esrgan.json")


class TestRateLimitAcrossRuns:
    """A long Retry-After is a cooldown for the whole source, across scheduled runs."""

    @pytest.mark.parametrize(
        ("status", "says"), [(429, "HTTP 429"), (403, "HTTP 403 (rate limited)")], ids=str
    )
    def test_long_retry_after_is_honoured_across_runs(
        self, start_disk_daemon: StartDaemon, disk_primary: FaultServer, status: int, says: str
    ) -> None:
        """After a 429/403 asking for an hour, the next runs send the PRIMARY nothing at all."""
        harness = start_disk_daemon()
        disk_primary.script(ESRGAN_V2, Reply(status, b"{}", headers={"Retry-After": "3600"}))
        before = harness.stamp()
        asked = disk_primary.count()
        harness.forced_run()
        # 2 metadata, the 429 (never retried), and the legacy layer fetched alongside it
        # unless the cooldown began first.
        after_429 = disk_primary.count()
        assert asked + 3 <= after_429 <= asked + 4
        runs = len(harness.runs())
        harness.daemon.wait_for("sync.run_done", count=runs + 3, timeout=15)
        assert disk_primary.count() == after_429, "the PRIMARY was asked again during cooldown"
        (last,) = harness.runs()[-1:]
        assert "cooldown" in str(last.get("primary_error"))
        assert any(says in str(e.get("error")) for e in harness.layer_events())
        assert harness.stamp() == before
        assert harness.errors("rate_limited") >= 3
        harness.assert_alive()


class TestHostileDisk:
    """A full or read-only replica: StoreError logged with the path, last good copy kept."""

    def test_disk_full_for_data(self, tmpfs_replica: Path, start_disk_daemon: StartDaemon) -> None:
        """Data does not fit (the small state file still does): failed, counted, then healed."""
        harness = start_disk_daemon()
        before, counted = harness.stamp(), harness.errors("store", "none")
        filler = fill(tmpfs_replica, leave=16 * 1024)
        harness.server.script(ESRGAN_V2, Reply(body=records(C.esrgan, 3000, tag="big")))
        run, layer = harness.forced_run()
        assert_store_failure(harness, run, layer, "No space left on device")
        assert harness.errors("store", "none") > counted
        assert harness.stamp() == before
        assert not list(tmpfs_replica.rglob("*.hrs-tmp"))
        harness.assert_alive()
        filler.unlink()
        body = harness.heal()
        harness.assert_recovers(time.time(), body)

    def test_disk_completely_full(
        self, tmpfs_replica: Path, start_disk_daemon: StartDaemon
    ) -> None:
        """Not even the state file fits: both failures logged, the daemon runs on and recovers."""
        harness = start_disk_daemon()
        before, counted = harness.stamp(), harness.errors("store", "none")
        filler = fill(tmpfs_replica, leave=0)
        harness.server.script(ESRGAN_V2, Reply(body=records(C.esrgan, 3000, tag="big")))
        harness.forced_run_or_exit()
        assert harness.stamp() == before
        harness.assert_alive()
        run, layer = harness.runs()[-1], harness.layer_events()[-1]
        assert_store_failure(harness, run, layer, "No space left on device")
        assert harness.errors("store", "none") > counted
        assert_state_save_failed(harness, "No space left on device")
        assert not list(tmpfs_replica.rglob("*.hrs-tmp"))
        filler.unlink()
        body = harness.heal()
        harness.assert_recovers(time.time(), body)
        assert_state_records(harness, body)

    def test_read_only_replica_with_state_elsewhere(
        self,
        tmp_path: Path,
        start_disk_daemon: StartDaemon,
        read_only: Callable[[bool], None],
    ) -> None:
        """A read-only replica (state dir writable): failed, counted reason=store, then healed."""
        harness = start_disk_daemon(HORDE_REPLICA_STATE_DIR=str(tmp_path / "state"))
        before, counted = harness.stamp(), harness.errors("store", "none")
        read_only(True)
        harness.server.script(ESRGAN_V2, Reply(body=records(C.esrgan, 5, tag="new")))
        run, layer = harness.forced_run()
        assert_store_failure(harness, run, layer, "Read-only file system")
        assert harness.errors("store", "none") > counted
        assert harness.stamp() == before
        harness.assert_alive()
        read_only(False)
        body = harness.heal()
        harness.assert_recovers(time.time(), body)

    def test_read_only_replica_with_default_state_dir(
        self, start_disk_daemon: StartDaemon, read_only: Callable[[bool], None]
    ) -> None:
        """A read-only replica holding the state dir: both failures logged, the daemon runs on."""
        harness = start_disk_daemon()
        before, counted = harness.stamp(), harness.errors("store", "none")
        read_only(True)
        harness.server.script(ESRGAN_V2, Reply(body=records(C.esrgan, 5, tag="new")))
        harness.forced_run_or_exit()
        assert harness.stamp() == before
        harness.assert_alive()
        run, layer = harness.runs()[-1], harness.layer_events()[-1]
        assert_store_failure(harness, run, layer, "Read-only file system")
        assert harness.errors("store", "none") > counted
        assert_state_save_failed(harness, "Read-only file system")
        read_only(False)
        body = harness.heal()
        harness.assert_recovers(time.time(), body)
        assert_state_records(harness, body)
