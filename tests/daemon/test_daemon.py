"""The daemon as operators run it: a real process, real signals, real sockets."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from tests.faultserver import FaultServer, Reply, metadata, records, script_primary, v2_path
from tests.processes import DaemonProcess, run_cli

Start = Callable[..., DaemonProcess]


class TestMetrics:
    """Scraped over HTTP, the metrics move the way the replica does."""

    def test_hits_misses_and_staleness(self, start_daemon: Start, server: FaultServer) -> None:
        """A cold run counts misses; the next run counts hits; staleness resets on change."""
        daemon = start_daemon()
        daemon.wait_for("sync.run_done", ok=True)
        labels = {"category": "esrgan", "layer": "v2"}
        first_load = daemon.sample(
            "horde_replica_cache_misses_total", **labels, reason="first_load"
        )
        assert first_load == 1
        assert daemon.sample("horde_replica_cache_hits_total", **labels) == 0
        daemon.signal(signal.SIGHUP)  # a no-op reload must not disturb anything
        daemon.wait_for("config.reloaded")
        time.sleep(1.2)
        first = daemon.sample("horde_replica_staleness_seconds", **labels)
        assert first is not None and first >= 1.0
        # Metadata moves for esrgan only: esrgan misses again, blip is a hit.
        moved = json.loads(metadata(1000))
        moved["esrgan"]["last_updated"] = 2000
        server.script(
            "/api/model_references/v1/metadata/metadata", Reply(body=json.dumps(moved).encode())
        )
        # a write changes the body: the same bytes under a new stamp would prove nothing
        server.script(v2_path(C.esrgan), Reply(body=records(C.esrgan, 4, tag="moved")))
        daemon.signal(signal.SIGUSR1)  # forced: everything re-verified, no cache read
        daemon.wait_for("sync.run_done", count=2)
        assert (daemon.sample("horde_replica_staleness_seconds", **labels) or 99) < first
        assert daemon.sample("horde_replica_sync_runs_total", result="ok") == 2
        assert (
            daemon.sample(
                "horde_replica_upstream_last_updated_timestamp_seconds", category="esrgan"
            )
            == 2000
        )
        assert (
            daemon.sample(
                "horde_replica_build_info", version=_version(daemon), python=_python(daemon)
            )
            == 1
        )
        assert daemon.stop() == 0

    def test_metadata_change_counts_a_miss_not_a_hit(
        self, start_daemon: Start, server: FaultServer, tmp_path: Path
    ) -> None:
        """A scheduled run after a metadata move misses for that category and hits for others."""
        daemon = start_daemon(HORDE_REPLICA_INTERVAL_SECONDS="1")
        daemon.wait_for("sync.run_done", ok=True)
        daemon.wait_for("sync.run_done", count=2)
        blip = {"category": "blip", "layer": "v2"}
        assert (daemon.sample("horde_replica_cache_hits_total", **blip) or 0) >= 1
        moved = json.loads(metadata(1000))
        moved["esrgan"]["last_updated"] = 3000
        server.script(
            "/api/model_references/v2/metadata/metadata", Reply(body=json.dumps(moved).encode())
        )
        server.script(v2_path(C.esrgan), Reply(body=records(C.esrgan, 4, tag="changed")))
        daemon.wait_for(
            "sync.category_done", category="esrgan", layer="v2", outcome="updated", count=2
        )
        esrgan = {"category": "esrgan", "layer": "v2"}
        assert daemon.sample("horde_replica_cache_misses_total", **esrgan, reason="first_load") == 1
        moved_misses = daemon.sample(
            "horde_replica_cache_misses_total", **esrgan, reason="changed_upstream"
        )
        assert moved_misses == 1
        assert b"changed" in (tmp_path / "replica" / "esrgan.json").read_bytes()
        assert daemon.stop() == 0

    def test_promtool_accepts_the_exposition(self, start_daemon: Start) -> None:
        """`promtool check metrics` finds nothing to complain about in a live scrape."""
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.fail("promtool is missing: `make tools` installs Debian's prometheus package")
        daemon = start_daemon()
        daemon.wait_for("sync.run_done", ok=True)
        _, text = daemon.get("/metrics")
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.strip() == ""
        assert "horde_replica_staleness_seconds" in text
        assert daemon.stop() == 0


class TestSignals:
    """Signals set flags; the loop acts on them promptly and exactly once."""

    def test_sigusr1_starts_a_forced_run_within_a_second(self, start_daemon: Start) -> None:
        """SIGUSR1 makes a forced run start (and here finish) in under 1 s."""
        daemon = start_daemon()
        daemon.wait_for("sync.run_done", ok=True)
        sent = time.monotonic()
        daemon.signal(signal.SIGUSR1)
        daemon.wait_for("sync.run_done", forced=True, timeout=5)
        assert time.monotonic() - sent < 1.0
        assert daemon.stop() == 0

    def test_sigterm_mid_sync_exits_0_without_temp_files(
        self, start_daemon: Start, server: FaultServer, tmp_path: Path
    ) -> None:
        """A stop during a slow sync exits 0 promptly and leaves only whole files."""
        server.script(v2_path(C.esrgan), Reply(body=records(C.esrgan, 4), delay=4.0))
        daemon = start_daemon()
        daemon.wait_for("sync.category_done", category="blip", layer="v2")
        sent = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - sent < 3.0
        replica = tmp_path / "replica"
        assert not list(replica.rglob("*.hrs-tmp"))
        for path in replica.rglob("*.json"):
            json.loads(path.read_bytes())  # every published file is whole
        assert daemon.matching("daemon.stopped")


class TestSystemdNotify:
    """The notify protocol over a real datagram socket."""

    @pytest.fixture(name="notify_socket")
    def _notify_socket(self, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
        path = str(tmp_path / "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(10)
        yield sock, path
        sock.close()

    def test_ready_status_watchdog_stopping(
        self, start_daemon: Start, notify_socket: tuple[socket.socket, str]
    ) -> None:
        """READY once synced, STATUS after runs, WATCHDOG pings, STOPPING on shutdown."""
        sock, path = notify_socket
        daemon = start_daemon(NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
        messages: list[str] = []

        def receive_until(needle: str) -> None:
            while not any(needle in m for m in messages):
                messages.append(sock.recv(4096).decode())

        receive_until("READY=1")
        receive_until("STATUS=last sync")
        receive_until("WATCHDOG=1")
        daemon.signal(signal.SIGTERM)
        receive_until("STOPPING=1")
        assert daemon.proc.wait(timeout=10) == 0
        assert sum("WATCHDOG=1" in m for m in messages) >= 1

    def test_unread_socket_never_freezes_the_daemon(
        self, start_daemon: Start, notify_socket: tuple[socket.socket, str]
    ) -> None:
        """A manager that stops reading (its queue holds 10 datagrams): drops are counted,
        /healthz answers, and SIGTERM still ends the daemon at once."""
        _, path = notify_socket  # bound, and never read
        daemon = start_daemon(NOTIFY_SOCKET=path, WATCHDOG_USEC="100000")  # a ping every 50 ms
        daemon.wait_for("sync.run_done", ok=True)
        deadline = time.monotonic() + 10
        while (daemon.sample("horde_replica_notify_dropped_total") or 0) < 5:
            assert time.monotonic() < deadline, daemon.tail()
            time.sleep(0.1)
        assert daemon.get("/healthz")[0] == 200
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=10) == 0


def _version(daemon: DaemonProcess) -> str:
    (started,) = daemon.matching("daemon.starting")
    return str(started["version"])


def _python(daemon: DaemonProcess) -> str:
    import platform

    return platform.python_version()


class TestStartup:
    """Start-up problems are named and end with the right exit code."""

    def test_taken_metrics_port_exits_78(self, daemon_env: dict[str, str]) -> None:
        """A metrics address already in use is a configuration error naming the setting."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            taken_env = {**daemon_env, "HORDE_REPLICA_METRICS_ADDR": f"127.0.0.1:{port}"}
            result = run_cli("run", env=taken_env, timeout=30)
        assert result.returncode == 78
        assert "HORDE_REPLICA_METRICS_ADDR" in result.stderr

    def test_second_daemon_on_the_same_replica_exits_75(self, start_daemon: Start) -> None:
        """Two daemons on one replica: the second refuses to race the first."""
        first = start_daemon()
        first.wait_for("sync.run_done", ok=True)
        second = start_daemon()
        assert second.proc.wait(timeout=30) == 75
        second.close()
        assert any("already being synced" in line for line in second.raw)
        assert first.stop() == 0


class TestDeadlines:
    """A PRIMARY that drips its metadata cannot stop the daemon from syncing or alarming."""

    def test_runs_keep_ending_and_are_counted_failed(
        self, start_daemon: Start, server: FaultServer
    ) -> None:
        """Each run ends at run_timeout_seconds, failed with run_timeout; the next one starts."""
        for family in ("v1", "v2"):
            server.script(
                f"/api/model_references/{family}/metadata/metadata",
                Reply(body=metadata(1000), drip=0.5),
            )
        daemon = start_daemon(HORDE_REPLICA_RUN_TIMEOUT_SECONDS="1.5")
        daemon.wait_for("sync.run_done", count=2, timeout=20, ok=False)
        assert (daemon.sample("horde_replica_sync_runs_total", result="failed") or 0) >= 2
        errors = daemon.sample(
            "horde_replica_fetch_errors_total", source="primary", reason="run_timeout"
        )
        assert (errors or 0) >= 2
        assert daemon.get("/readyz")[0] == 503
        assert daemon.stop() == 0


class TestLogReadsLikeADiagnosis:
    """At info level: one line for a quiet run; an outage when it starts, changes and ends."""

    def test_quiet_runs_log_one_line_each(self, start_daemon: Start) -> None:
        """After the first sync, a run in which nothing changed logs `sync.run_done` only."""
        daemon = start_daemon(HORDE_REPLICA_LOG_LEVEL="info", HORDE_REPLICA_INTERVAL_SECONDS="1")
        daemon.wait_for("sync.run_done", ok=True)
        daemon.wait_for("daemon.ready")  # logged after the first run's run_done
        first = len(daemon.events)
        daemon.wait_for("sync.run_done", count=4)
        quiet = daemon.events[first:]
        assert [e["event"] for e in quiet] == ["sync.run_done"] * len(quiet), quiet
        assert daemon.stop() == 0

    def test_outage_is_logged_when_it_starts_and_ends(
        self, start_daemon: Start, server: FaultServer
    ) -> None:
        """Every source down for several runs: a handful of lines, then one line when it ends."""
        for family in ("v1", "v2"):
            server.script(f"/api/model_references/{family}/metadata/metadata", Reply(reset=True))
        for category in (C.esrgan, C.blip):
            server.script(v2_path(category), Reply(reset=True))
        daemon = start_daemon(HORDE_REPLICA_LOG_LEVEL="info")  # start-up interval: 1 s
        daemon.wait_for("sync.run_done", count=4, timeout=30)
        runs = daemon.matching("sync.run_done")
        sync_lines = [e for e in daemon.events if e["event"].startswith(("sync.", "http."))]
        outages = daemon.matching("sync.outage")
        assert len(outages) == 1, outages
        assert outages[0]["state"] == "started" and outages[0]["next_attempt_in_seconds"] == 1
        assert "primary" in " ".join(outages[0]["down"])
        assert len(sync_lines) <= len(runs) + 2, sync_lines  # run_done per run + the outage
        script_primary(server)
        daemon.wait_for("sync.outage_ended", timeout=15)
        assert daemon.stop() == 0


class TestForeignWriters:
    """A second writer on the replica is seen while the daemon runs, counted, and repaired."""

    def test_rewritten_file_is_counted_logged_shown_and_repaired(
        self, start_daemon: Start, daemon_env: dict[str, str], tmp_path: Path
    ) -> None:
        """What a non-offline upstream reader does: it replaces one of our files."""
        daemon = start_daemon(HORDE_REPLICA_INTERVAL_SECONDS="1")
        daemon.wait_for("sync.run_done", ok=True)
        published = tmp_path / "replica" / "esrgan.json"
        ours = published.read_bytes()
        published.write_text("{}")  # a second writer's rewrite
        found = daemon.wait_for("store.foreign_change", category="esrgan", layer="v2")
        assert found[0]["files"] == ["esrgan.json"] and "offline" in found[0]["likely_cause"]
        runs = len(daemon.matching("sync.run_done"))
        daemon.wait_for("sync.category_done", category="esrgan", layer="v2", outcome="updated")
        daemon.wait_for("sync.run_done", count=runs + 1)  # that run's state is saved
        assert published.read_bytes() == ours
        labels = {"category": "esrgan", "layer": "v2"}
        assert daemon.sample("horde_replica_foreign_changes_total", **labels) == 1
        assert (
            daemon.sample("horde_replica_foreign_changes_total", category="blip", layer="v2") == 0
        )
        status_env = {**daemon_env, "HORDE_REPLICA_INTERVAL_SECONDS": "1"}
        out = run_cli("status", "--json", env=status_env, timeout=30)
        rows = json.loads(out.stdout)["layers"]
        row = next(r for r in rows if (r["category"], r["layer"]) == ("esrgan", "v2"))
        assert row["foreign_changes"] == 1
        assert daemon.stop() == 0

    def test_replica_dir_swapped_for_a_symlink_is_never_written_through(
        self, start_daemon: Start, server: FaultServer, tmp_path: Path
    ) -> None:
        """Someone moves the replica away and puts a symlink to another directory in its
        place while the daemon runs: a change upstream fails (reason `store`, naming the
        path) instead of landing there, past the lock, with the state file beside it."""
        daemon = start_daemon()
        daemon.wait_for("sync.run_done", ok=True)
        replica, elsewhere = tmp_path / "replica", tmp_path / "elsewhere"
        elsewhere.mkdir()
        replica.rename(tmp_path / "replica.old")
        replica.symlink_to(elsewhere)
        moved = json.loads(metadata(1000))
        moved["esrgan"]["last_updated"] = 2000
        server.script(
            "/api/model_references/v2/metadata/metadata", Reply(body=json.dumps(moved).encode())
        )
        server.script(v2_path(C.esrgan), Reply(body=records(C.esrgan, 4, tag="changed")))
        daemon.signal(signal.SIGUSR1)
        (done,) = daemon.wait_for(
            "sync.category_done", category="esrgan", layer="v2", outcome="failed"
        )
        assert "no longer the directory" in done["error"]
        assert list(elsewhere.iterdir()) == []
        assert (
            daemon.sample("horde_replica_fetch_errors_total", reason="store", source="none") or 0
        ) >= 1
        assert daemon.stop() == 0


class TestHostilePrimary:
    """What a compromised or buggy PRIMARY sends cannot stop the daemon."""

    @pytest.mark.parametrize("stamp", [10**400, 2**53 + 1, -1], ids=["1e400", "2^53+1", "-1"])
    def test_an_absurd_stamp_blinds_its_category_and_the_daemon_runs_on(
        self, start_daemon: Start, server: FaultServer, stamp: int
    ) -> None:
        """esrgan's `last_updated` no clock gives (past a float, before 1970): the entry is
        unusable (named; esrgan is confirmed by a fetch), and /metrics keeps answering. 10**400
        used to kill the daemon (OverflowError setting the gauge), a restart loop under systemd."""
        absurd = json.loads(metadata(1000))
        absurd["esrgan"]["last_updated"] = stamp
        for family in ("v1", "v2"):
            server.script(
                f"/api/model_references/{family}/metadata/metadata",
                Reply(body=json.dumps(absurd).encode()),
            )
        daemon = start_daemon()
        (done,) = daemon.wait_for("sync.run_done", timeout=20)
        daemon.wait_for("daemon.ready", timeout=10)  # logged after the run's metrics are set
        assert daemon.proc.poll() is None, daemon.tail()
        gauge = "horde_replica_upstream_last_updated_timestamp_seconds"
        assert daemon.sample(gauge, category="blip") == 1000
        assert done["metadata_unusable"] == ["esrgan"], done
        assert daemon.stop() == 0


class TestStampNotShown:
    """Issue 20, item 1: a cache that ignores query strings (the fault server routes by path
    alone, as CloudFront's legacy cache key or nginx `proxy_cache_key $uri` do) answers the
    new stamp, and `&fresh=`, with the body it stored first."""

    def test_readyz_fails_within_three_runs_naming_category_and_cause(
        self, start_daemon: Start, server: FaultServer
    ) -> None:
        daemon = start_daemon(HORDE_REPLICA_INTERVAL_SECONDS="1")
        daemon.wait_for("daemon.ready", timeout=10)
        runs = len(daemon.matching("sync.run_done"))
        moved = json.loads(metadata(1000))
        moved["esrgan"]["last_updated"] = 2000
        moved["esrgan"]["last_operation_type"] = "update"
        for family in ("v1", "v2"):
            server.script(
                f"/api/model_references/{family}/metadata/metadata",
                Reply(body=json.dumps(moved).encode()),
            )
        daemon.wait_for("sync.run_done", count=runs + 3, timeout=15)
        status, body = daemon.get("/readyz")
        assert status == 503, body
        detail = json.loads(body)
        assert detail["stamp_not_shown"] == ["esrgan"]
        assert "ignores query strings" in detail["likely_cause"]
        assert (daemon.sample("horde_replica_stamp_unshown_runs", category="esrgan") or 0) >= 3
        # never recorded: the replica's stamp is still the one its bytes came with
        assert (
            daemon.sample("horde_replica_replica_last_updated_timestamp_seconds", category="esrgan")
            == 1000
        )
        assert daemon.get("/healthz")[0] == 200
        assert daemon.stop() == 0
