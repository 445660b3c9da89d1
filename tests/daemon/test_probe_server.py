"""The probe server of a real daemon: a flood never starves it, and it binds IPv6.

A flood of idle and slowloris clients on the metrics port never starves the daemon.
A real daemon under systemd's usual soft limit of 1,024 file descriptors, here lowered to
256, gets 1,000 idle connections, 20 clients that send a header byte per second, and 200 new
idle connections a second. `/healthz`
must still answer at once, a forced sync must still succeed and save its state, and the
daemon's threads and file descriptors stay bounded. Run with `-s` to see the figures.
"""

from __future__ import annotations

import collections
import contextlib
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.test_docker import healthcheck
from tests.environment import free_ipv6_port, free_port
from tests.processes import DaemonProcess, LoggedProcess

Start = Callable[..., DaemonProcess]

NOFILE = 256
IDLE_CLIENTS = 1000
SLOW_CLIENTS = 20
CHURN_PER_SECOND = 200
FLOOD_SECONDS = 12.0  # the kernel re-offers connections its full accept queue dropped
HEALTHZ_WITHIN_SECONDS = 2.0
SLOW_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 100


@dataclass(frozen=True)
class Figures:
    """What the daemon holds, from /proc/PID."""

    fds: int
    sockets: int
    threads: int
    rss_kib: int

    def __str__(self) -> str:
        return (
            f"fds={self.fds} sockets={self.sockets} threads={self.threads} rss={self.rss_kib} KiB"
        )


def figures(pid: int) -> Figures:
    """Open fds, socket fds, threads and RSS of process `pid`."""
    links = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            links.append(fd.readlink())
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return Figures(
        fds=len(links),
        sockets=sum(str(link).startswith("socket:") for link in links),
        threads=int(status["Threads"]),
        rss_kib=int(status["VmRSS"].split()[0]),
    )


def peak_while(pid: int, seconds: float) -> Figures:
    """The largest figures of `pid` sampled every 0.25 s for `seconds`."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(figures(pid))
        time.sleep(0.25)
    return Figures(
        fds=max(f.fds for f in samples),
        sockets=max(f.sockets for f in samples),
        threads=max(f.threads for f in samples),
        rss_kib=max(f.rss_kib for f in samples),
    )


@contextlib.contextmanager
def flood(port: int) -> Iterator[list[socket.socket]]:
    """`IDLE_CLIENTS` silent connections, `SLOW_CLIENTS` sending one byte per second, and
    `CHURN_PER_SECOND` fresh idle connections replacing the oldest for as long as it lasts."""
    idle = _connect_steadily(port, IDLE_CLIENTS)
    slow = _connect_steadily(port, SLOW_CLIENTS)
    stop = threading.Event()

    def drip() -> None:
        sent = 0
        while not stop.wait(1.0) and sent < len(SLOW_REQUEST):
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(SLOW_REQUEST[sent : sent + 1])
            sent += 1

    def churn() -> None:
        fresh: collections.deque[socket.socket] = collections.deque()
        while not stop.wait(0.1):
            fresh.extend(_connect(port) for _ in range(CHURN_PER_SECOND // 10))
            while len(fresh) > IDLE_CLIENTS:
                fresh.popleft().close()
        for sock in fresh:
            sock.close()

    helpers = [threading.Thread(target=work, daemon=True) for work in (drip, churn)]
    for helper in helpers:
        helper.start()
    try:
        yield idle + slow
    finally:
        stop.set()
        for helper in helpers:
            helper.join(timeout=5)
        for sock in idle + slow:
            sock.close()


def established(socks: list[socket.socket], *, within: float) -> int:
    """Wait until every socket connected (the kernel retries dropped SYNs) or `within` s pass;
    return how many did."""
    done, deadline = 0, time.monotonic() + within
    with selectors.DefaultSelector() as waiting:  # epoll: select() stops at fd 1024
        for sock in socks:
            waiting.register(sock, selectors.EVENT_WRITE)
        while waiting.get_map() and time.monotonic() < deadline:
            for key, _ in waiting.select(timeout=0.2):
                waiting.unregister(key.fileobj)
                client = key.fileobj
                assert isinstance(client, socket.socket)
                done += client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    return done


def _connect_steadily(port: int, count: int) -> list[socket.socket]:
    # A few at a time, as a steady attacker would: a burst beyond the listen backlog has its
    # SYNs dropped and retried over tens of seconds.
    socks = []
    for n in range(count):
        socks.append(_connect(port))
        if n % 4 == 3:
            time.sleep(0.005)
    return socks


def _connect(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)  # a full accept queue must not block the test
    sock.connect_ex(("127.0.0.1", port))
    return sock


def timed_healthz(port: int) -> tuple[int | None, float]:
    """GET /healthz: (status or None on no answer within 5 s, seconds taken)."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            status: int | None = reply.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = None
    return status, time.monotonic() - started


def test_flood_of_idle_and_slow_clients(start_daemon: Start, tmp_path: Path) -> None:
    """1,000 idle + 20 slowloris clients under 256 fds: probes, syncs and state all work."""
    daemon = start_daemon()
    resource.prlimit(daemon.proc.pid, resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    daemon.wait_for("sync.run_done", ok=True)
    state_file = tmp_path / "replica" / ".horde-replica-sync" / "state.json"
    saved_before = state_file.stat().st_mtime_ns
    idle = figures(daemon.proc.pid)
    with flood(daemon.port) as clients:
        connected = established(clients, within=20.0)
        first_status, first_took = timed_healthz(daemon.port)  # while every client is fresh
        held = peak_while(daemon.proc.pid, FLOOD_SECONDS)
        status, took = timed_healthz(daemon.port)
        daemon.signal(signal.SIGUSR1)
        run = daemon.wait_for("sync.run_done", count=2, timeout=30)[-1]
        peak = figures(daemon.proc.pid)
    print(f"\nclients connected: {connected} of {len(clients)}\nidle: {idle}")
    print(f"flooded (peak over {FLOOD_SECONDS:.0f} s): {held}\nafter forced sync: {peak}")
    print(f"/healthz at once: {first_status} in {first_took:.3f} s")
    print(f"/healthz after {FLOOD_SECONDS:.0f} s: {status} in {took:.3f} s")
    print(f"forced run ok={run.get('ok')}")
    assert (first_status, status) == (200, 200), daemon.tail()
    assert max(first_took, took) < HEALTHZ_WITHIN_SECONDS
    assert run["ok"] is True, daemon.tail()
    assert state_file.stat().st_mtime_ns > saved_before
    assert max(held.threads, peak.threads) <= idle.threads + 2
    assert max(held.fds, peak.fds) <= idle.fds + 80
    assert daemon.get("/healthz")[0] == 200
    evicted = daemon.sample("horde_replica_probe_requests_refused_total", reason="evicted")
    assert evicted is not None and evicted >= IDLE_CLIENTS - 16
    assert daemon.stop() == 0
    assert not [line for line in daemon.raw if "Traceback" in line]  # no handler crashed


# A connect flood: processes that open connections as fast as they can and close each after
# `FLOOD_HOLD` newer ones, never sending a byte. Whatever the server does, the kernel's accept
# queue stays full and drops most SYNs (a client then waits 1 s, 3 s, 7 s: TCP's backoff).
FLOODERS = 2
FLOOD_HOLD = 200
CONNECT_FLOOD_SECONDS = 12.0
FLOODER = """
import collections, socket, sys, time
port, seconds, hold = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
held, attempts, end = collections.deque(), 0, time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(100):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        held.append(sock)
        attempts += 1
        if len(held) > hold:
            held.popleft().close()
print(attempts / seconds)
"""


def test_the_healthcheck_stays_healthy_under_a_connect_flood(
    start_daemon: Start, daemon_env: dict[str, str]
) -> None:
    """Two processes connecting as fast as they can: the image's HEALTHCHECK, run again and
    again, passes every time within its timeout (it tries its SYN again every 0.25 s instead
    of waiting out TCP's backoff); the daemon holds no more than before. Plain /healthz
    requests are timed beside it (`-s` prints both)."""
    command, timeout = healthcheck()
    daemon = start_daemon()
    daemon.wait_for("sync.run_done", ok=True)
    env = {
        **daemon_env,
        "HORDE_REPLICA_METRICS_ADDR": f"127.0.0.1:{daemon.port}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    argv = [sys.executable, "-c", FLOODER, str(daemon.port), str(CONNECT_FLOOD_SECONDS)]
    flooders = [
        subprocess.Popen([*argv, str(FLOOD_HOLD)], stdout=subprocess.PIPE, text=True)
        for _ in range(FLOODERS)
    ]
    checks: list[tuple[int, float, str]] = []
    probes: list[tuple[int | None, float]] = []

    def probe_plainly() -> None:  # what a client without the HEALTHCHECK's retries sees
        while all(f.poll() is None for f in flooders):
            probes.append(timed_healthz(daemon.port))
            time.sleep(0.5)

    prober = threading.Thread(target=probe_plainly, daemon=True)
    try:
        time.sleep(1.0)  # the flood is at full rate
        prober.start()
        while all(f.poll() is None for f in flooders):
            started = time.monotonic()
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=60, check=False
            )
            checks.append((done.returncode, time.monotonic() - started, done.stderr[-300:]))
    finally:
        rates = [float(f.communicate(timeout=60)[0] or 0) for f in flooders]
        prober.join(timeout=10)
    took = sorted(t for _, t in probes)
    print(f"\nconnect attempts/s: {', '.join(f'{r:,.0f}' for r in rates)}")
    print(f"HEALTHCHECK x{len(checks)}: exit codes {[code for code, _, _ in checks]}, ")
    print(f"  slowest {max(t for _, t, _ in checks):.2f} s (timeout {timeout:.0f} s)")
    print(f"/healthz x{len(probes)}: {[round(t, 2) for t in took]} s, ")
    print(f"  statuses {collections.Counter(status for status, _ in probes)}")
    print(f"after: {figures(daemon.proc.pid)}")
    assert len(checks) >= 2, checks
    assert all(code == 0 for code, _, _ in checks), checks
    assert max(t for _, t, _ in checks) < timeout, checks
    assert daemon.get("/healthz")[0] == 200
    assert daemon.stop() == 0
    assert not [line for line in daemon.raw if "Traceback" in line]


IPV6_PORT = free_ipv6_port()


@pytest.mark.skipif(IPV6_PORT is None, reason="this host has no IPv6 loopback")
def test_daemon_serves_probes_on_ipv6_loopback(daemon_env: dict[str, str]) -> None:
    """`--metrics-addr [::1]:PORT`: the daemon binds AF_INET6 and is scraped there."""
    address = f"[::1]:{IPV6_PORT}"
    argv = [sys.executable, "-m", "horde_replica_sync", "run", "--metrics-addr", address]
    daemon = LoggedProcess(argv, daemon_env)
    try:
        daemon.wait_for("daemon.listening", address=address)
        daemon.wait_for("sync.run_done", ok=True)
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
            assert reply.status == 200
            assert b"horde_replica_sync_runs_total" in reply.read()
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=5) as reply:
            assert reply.status == 200
    finally:
        daemon.close()


@pytest.mark.skipif(IPV6_PORT is None, reason="this host has no IPv6 loopback")
@pytest.mark.parametrize("host", ["[::1]", "[::]"])
def test_the_images_healthcheck_probes_an_ipv6_metrics_addr(
    daemon_env: dict[str, str], host: str
) -> None:
    """The Dockerfile's HEALTHCHECK command, run as the image runs it (settings in the
    environment), reports a daemon on an IPv6 `metrics_addr` healthy, and one gone unhealthy
    naming the URL it probed, within its timeout."""
    command, timeout = healthcheck()
    env = {
        **daemon_env,
        "HORDE_REPLICA_METRICS_ADDR": f"{host}:{IPV6_PORT}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    argv = [sys.executable, "-m", "horde_replica_sync", "run"]
    daemon = LoggedProcess(argv, env)

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    try:
        daemon.wait_for("daemon.listening", address=f"{host}:{IPV6_PORT}")
        healthy = check()
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    finally:
        daemon.close()
    unhealthy = check()
    assert unhealthy.returncode == 1
    assert f"http://[::1]:{IPV6_PORT}/healthz" in unhealthy.stderr


def test_the_images_healthcheck_survives_a_config_file_the_daemon_refused(
    daemon_env: dict[str, str], tmp_path: Path
) -> None:
    """A config file broken after start (the daemon refuses it at SIGHUP and keeps running on
    its settings) leaves the HEALTHCHECK probing the address the daemon bound: healthy, not
    exit 78. (`make image-test` caught this: the HEALTHCHECK reported the container unhealthy
    after a refused reload.)"""
    command, timeout = healthcheck()
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(f'metrics_addr = "127.0.0.1:{port}"\n', encoding="utf-8")
    env = {
        **daemon_env,
        "HORDE_REPLICA_CONFIG": str(config),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    daemon = LoggedProcess([sys.executable, "-m", "horde_replica_sync", "run"], env)
    try:
        daemon.wait_for("daemon.listening", address=f"127.0.0.1:{port}")
        config.write_text(f'metrics_addr = "127.0.0.1:{port}"\nmax_concurrency = "many"\n')
        os.kill(daemon.proc.pid, signal.SIGHUP)  # ours, by PID
        daemon.wait_for("config.reload_failed")
        checked = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "max_concurrency" in checked.stderr  # says why it probed the address alone
    finally:
        daemon.close()
