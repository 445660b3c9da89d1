"""The probe server in-process, over real sockets: bounded in time, size, connections, threads."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from horde_replica_sync.config import load_settings
from horde_replica_sync.errors import ConfigError
from horde_replica_sync.health import (
    MAX_CONNECTIONS,
    REQUEST_DEADLINE_SECONDS,
    HealthServer,
    Refusal,
    Verdict,
    probe_url,
)
from tests.environment import clean_env
from tests.processes import run_cli

DEADLINE = 1.0  # seconds a client may take to send its request and read the answer
ALIVE = Verdict(ok=True, detail={"loop_silent_seconds": 0.1})


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@contextlib.contextmanager
def serving(
    host: str = "127.0.0.1",
    *,
    max_connections: int = MAX_CONNECTIONS,
    request_deadline_seconds: float = REQUEST_DEADLINE_SECONDS,
    refusals: list[Refusal] | None = None,
    registry: CollectorRegistry | None = None,
    alive: Verdict = ALIVE,
) -> Iterator[HealthServer]:
    """A started server with a test counter in its registry, stopped on exit; what it
    refused is appended to `refusals`."""
    if registry is None:
        registry = CollectorRegistry()
        Counter("probe_test", "a sample", registry=registry).inc()
    server = HealthServer(
        host,
        0,
        registry=registry,
        alive=lambda: alive,
        ready=lambda: Verdict(ok=False, detail={"never_synced": ["esrgan/v2"]}),
        max_connections=max_connections,
        request_deadline_seconds=request_deadline_seconds,
        on_refusal=(refusals if refusals is not None else []).append,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def get(server: HealthServer, path: str) -> tuple[int, str]:
    """GET `path` from `server`: (status, body)."""
    try:
        with urllib.request.urlopen(f"http://{server.address}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def port_of(server: HealthServer) -> int:
    """The port `server` bound."""
    return int(server.address.rpartition(":")[2])


def raw(server: HealthServer, request: bytes) -> bytes:
    """Send `request` as is and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def healthcheck(metrics_addr: str) -> subprocess.CompletedProcess[str]:
    """`horde-replica-sync healthcheck --metrics-addr ADDR` in a fresh interpreter."""
    return run_cli("healthcheck", "--metrics-addr", metrics_addr, env=clean_env(), timeout=30)


def dropped_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed `sock` (EOF or reset); fails after `seconds`."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(1024):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server still held the connection after {seconds} s")
    return time.monotonic() - started


class TestRoutes:
    """What Prometheus and the probes see."""

    def test_metrics_healthz_readyz_and_404(self) -> None:
        """/metrics is the registry, /healthz 200, /readyz 503 with its reasons, else 404."""
        with serving() as server:
            status, body = get(server, "/metrics")
            assert status == 200 and "probe_test_total 1.0" in body
            assert get(server, "/healthz") == (
                200,
                '{"loop_silent_seconds": 0.1, "status": "ok"}\n',
            )
            status, body = get(server, "/readyz?verbose=1")
            assert status == 503 and '"never_synced": ["esrgan/v2"]' in body
            assert get(server, "/nope")[0] == 404

    def test_other_methods_are_refused(self) -> None:
        """POST is 405; a line that is not HTTP is 400; HEAD has headers and no body."""
        refusals: list[Refusal] = []
        with serving(refusals=refusals) as server:
            assert raw(server, b"POST /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
            assert raw(server, b"hello\r\n\r\n").startswith(b"HTTP/1.1 400 ")
            head = raw(server, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
        assert refusals == [Refusal.BAD_REQUEST, Refusal.BAD_REQUEST]


class TestFraming:
    """Requests framed as RFC 9112 lets a recipient accept them (§2.2, §3.2.2)."""

    @pytest.mark.parametrize(
        "request_bytes",
        [
            pytest.param(b"GET /healthz HTTP/1.1\nHost: x\n\n", id="bare-LF"),
            pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\n\r\n", id="mixed-CRLF-LF"),
            pytest.param(b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", id="leading-CRLF"),
            pytest.param(b"\n\r\nGET /healthz HTTP/1.1\r\n\r\n", id="leading-LF-and-CRLF"),
            pytest.param(b"GET http://127.0.0.1:9464/healthz HTTP/1.1\r\n\r\n", id="absolute"),
            pytest.param(b"GET HTTP://[::1]:9464/healthz?x=1 HTTP/1.0\r\n\r\n", id="absolute-q"),
        ],
    )
    def test_is_answered(self, request_bytes: bytes) -> None:
        """Bare LF line ends, empty lines before the request line, and an absolute-form
        target are answered like the plain request, at once (not after the deadline)."""
        with serving(request_deadline_seconds=DEADLINE) as server:
            started = time.monotonic()
            answer = raw(server, request_bytes)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert answer.endswith(b'"status": "ok"}\n')
            assert time.monotonic() - started < DEADLINE / 2

    def test_other_absolute_paths_are_404(self) -> None:
        """The absolute form routes on its path: an unknown one is 404, not our /healthz."""
        with serving() as server:
            answer = raw(server, b"GET http://h/healthz/x HTTP/1.1\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 404 ")

    def test_empty_lines_count_towards_the_head_limit(self) -> None:
        """A client sending only empty lines is refused at the head limit, not read for ever."""
        refusals: list[Refusal] = []
        with serving(refusals=refusals) as server:
            assert raw(server, b"\r\n" * 10_000).startswith(b"HTTP/1.1 431 ")
        assert refusals == [Refusal.OVERSIZE]


class TestBounds:
    """No client holds the server: slow ones are dropped, big ones refused, floods evicted."""

    def test_slowloris_is_dropped_after_the_deadline(self) -> None:
        """One header byte every 0.2 s: dropped after the deadline, not served forever."""
        refusals: list[Refusal] = []
        with serving(request_deadline_seconds=DEADLINE, refusals=refusals) as server:
            sock = socket.create_connection(("127.0.0.1", port_of(server)))
            stop = threading.Event()

            def drip() -> None:
                for byte in b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"y" * 100:
                    if stop.wait(0.2):
                        return
                    with contextlib.suppress(OSError):
                        sock.send(bytes([byte]))

            dripper = threading.Thread(target=drip, daemon=True)
            dripper.start()
            try:
                assert dropped_within(sock, DEADLINE + 3) < DEADLINE + 1
            finally:
                stop.set()
                dripper.join()
                sock.close()
        assert refusals == [Refusal.TIMEOUT]

    def test_idle_connection_is_dropped(self) -> None:
        """A client that connects and says nothing is closed after the deadline."""
        with (
            serving(request_deadline_seconds=DEADLINE) as server,
            socket.create_connection(("127.0.0.1", port_of(server))) as sock,
        ):
            assert dropped_within(sock, DEADLINE + 3) < DEADLINE + 1

    def test_oversized_request_is_refused(self) -> None:
        """A request head past the size limit gets 431 and the connection closed."""
        refusals: list[Refusal] = []
        with serving(refusals=refusals) as server:
            huge = b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"y" * 20_000 + b"\r\n\r\n"
            assert raw(server, huge).startswith(b"HTTP/1.1 431 ")
        assert refusals == [Refusal.OVERSIZE]

    def test_flood_evicts_the_oldest_and_healthz_answers(self) -> None:
        """200 idle connections over a cap of 8: the newest, /healthz, is still served at once,
        and the server holds no thread per connection."""
        threads_before = threading.active_count()
        refusals: list[Refusal] = []
        with serving(max_connections=8, request_deadline_seconds=30, refusals=refusals) as server:
            idle = [socket.create_connection(("127.0.0.1", port_of(server))) for _ in range(200)]
            try:
                time.sleep(0.3)
                assert threading.active_count() <= threads_before + 1
                started = time.monotonic()
                assert get(server, "/healthz")[0] == 200
                assert time.monotonic() - started < 1.0
                assert dropped_within(idle[0], 2.0) < 2.0  # the oldest made room
            finally:
                for sock in idle:
                    sock.close()
        assert refusals.count(Refusal.EVICTED) >= 200 - 8

    def test_when_every_connection_is_being_answered_a_new_one_is_closed(self) -> None:
        """Two clients that never read a large /metrics hold the cap of 2 while their answers
        wait; a third is closed at once (busy), the two are dropped at the deadline (their
        descriptors are not kept until they read)."""
        registry = CollectorRegistry()
        big = Counter("probe_big", "many series", ["n"], registry=registry)
        for n in range(40_000):  # ~1 MB of text: more than the socket buffers hold
            big.labels(str(n)).inc()
        refusals: list[Refusal] = []
        with serving(
            max_connections=2,
            # Rendering 1 MB takes seconds on a busy host, twice before the third client comes:
            # the first must not reach its deadline (freeing a slot) before then.
            request_deadline_seconds=20 * DEADLINE,
            refusals=refusals,
            registry=registry,
        ) as server:
            stuck = []
            for _ in range(2):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", port_of(server)))
                sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
                stuck.append(sock)
            try:
                for sock in stuck:  # both answers are being written, and block
                    sock.settimeout(20 * DEADLINE)
                    assert sock.recv(1, socket.MSG_PEEK)
                with socket.create_connection(("127.0.0.1", port_of(server))) as third:
                    assert dropped_within(third, 1.0) < 1.0
                waited = time.monotonic() + 25 * DEADLINE
                while refusals.count(Refusal.TIMEOUT) < 2 and time.monotonic() < waited:
                    time.sleep(0.1)  # until the deadline of the two that never read
            finally:
                for sock in stuck:
                    sock.close()
        assert refusals == [Refusal.BUSY, Refusal.TIMEOUT, Refusal.TIMEOUT]


class TestAddresses:
    """metrics_addr: IPv4, bracketed IPv6, and a clear refusal of an ambiguous IPv6."""

    @pytest.mark.skipif(not _has_ipv6_loopback(), reason="this host has no IPv6 loopback")
    def test_ipv6_loopback_is_bound_and_scraped(self) -> None:
        """`[::1]:0` binds AF_INET6; the address reads back with brackets and answers."""
        host, port = load_settings(metrics_addr="[::1]:0").metrics_host_port
        assert (host, port) == ("::1", 0)
        with serving(host) as server:
            assert server.address.startswith("[::1]:")
            status, body = get(server, "/metrics")
            assert status == 200 and "probe_test_total" in body

    def test_ipv6_without_brackets_is_refused(self) -> None:
        """`::1:9464` is ambiguous: a ConfigError naming the setting and the bracketed form."""
        with pytest.raises(ConfigError, match=r"metrics_addr.*\[::1\]:9464"):
            load_settings(metrics_addr="::1:9464")

    @pytest.mark.parametrize("value", ["[::1:9464", "[nonsense]:9464", "[::1]9464", ":9464"])
    def test_malformed_addresses_are_refused(self, value: str) -> None:
        """Unbalanced brackets, a non-address in brackets, no colon, no host: refused."""
        with pytest.raises(ConfigError, match="metrics_addr"):
            load_settings(metrics_addr=value)

    @pytest.mark.parametrize(
        ("metrics_addr", "url"),
        [
            ("0.0.0.0:9464", "http://127.0.0.1:9464/healthz"),
            ("[::]:9464", "http://[::1]:9464/healthz"),
            ("[::1]:9464", "http://[::1]:9464/healthz"),
            ("127.0.0.1:1", "http://127.0.0.1:1/healthz"),
            ("10.1.2.3:9464", "http://10.1.2.3:9464/healthz"),
            ("[fd00::5]:80", "http://[fd00::5]:80/healthz"),
            ("localhost:9464", "http://localhost:9464/healthz"),
        ],
    )
    def test_the_probe_url_reaches_the_bound_address(self, metrics_addr: str, url: str) -> None:
        """A wildcard is probed on its own family's loopback, any other address as it is."""
        assert probe_url(*load_settings(metrics_addr=metrics_addr).metrics_host_port) == url

    def test_the_healthcheck_command_probes_metrics_addr(self) -> None:
        """`horde-replica-sync healthcheck`: 0 on a 200, 1 naming the URL and the reason on a
        503 (the detail included) or on no answer."""
        stuck = Verdict(ok=False, detail={"loop_silent_seconds": 42})
        for alive, code, said in [(Verdict(ok=True), 0, ""), (stuck, 1, "answered 503")]:
            with serving(alive=alive) as server:
                address = server.address
                done = healthcheck(address)
            assert done.returncode == code, done.stderr
            assert said in done.stderr
        assert '"loop_silent_seconds": 42' in done.stderr
        gone = healthcheck(address)
        assert gone.returncode == 1
        assert f"http://{address}/healthz did not answer" in gone.stderr

    def test_ipv4_and_names_still_work(self) -> None:
        """The default and a host name are unchanged."""
        assert load_settings().metrics_host_port == ("127.0.0.1", 9464)
        assert load_settings(metrics_addr="localhost:1").metrics_host_port == ("localhost", 1)
