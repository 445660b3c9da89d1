"""One small HTTP server: /metrics, /healthz (the loop is alive), /readyz (the data is fresh).

It runs its own asyncio loop in its own thread, so a scrape never waits on a sync and a sync
never waits on a scrape, and it reads only immutable snapshots the daemon's loop publishes.

Bounded, because the port may face a network (the container binds 0.0.0.0): one thread in
all, never one per connection; at most `max_connections` connections held (file descriptors
the sync needs are never taken), the oldest one that has not sent a byte (else the oldest
still unread) evicted to admit a new one, so a flood of idle clients cannot lock a probe out
(a probe sends its request at once, so it is not the one evicted even when a burst of
connections is accepted before its request was read); a deadline on each whole exchange, so
idle and slowloris clients are dropped; a request head capped at `MAX_REQUEST_BYTES`. Why not the
stdlib's ThreadingHTTPServer with a pool: a pool of blocking handlers is held by as many idle
clients as it has threads, and then /healthz waits; an event loop holds idle sockets for free.
Why not the daemon's loop: /healthz must still answer (503) when that loop is stuck.

`probe_url` and `probe` are the other side: how the image's HEALTHCHECK (healthcheck.py)
reaches this server where `metrics_addr` binds it.
"""

from __future__ import annotations

import array
import asyncio
import dataclasses
import enum
import fcntl
import http.client
import ipaddress
import json
import socket
import termios
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MAX_CONNECTIONS: Final = 16
"""Held at once; Prometheus and two probes need 3. Far below systemd's soft limit of 1,024."""
REQUEST_DEADLINE_SECONDS: Final = 5.0
"""For reading the request and writing the answer; a scrape on 127.0.0.1 takes milliseconds."""
MAX_REQUEST_BYTES: Final = 8192
"""The request line and headers; a probe's are a few hundred bytes."""
LISTEN_BACKLOG: Final = 64
"""Connections the kernel queues before they are accepted (and, if need be, evicted)."""
PROBE_CONNECT_SECONDS: Final = 0.25
"""How long `probe` waits for a connect attempt before it makes another."""
JSON: Final = "application/json"


class Refusal(enum.StrEnum):
    """Why the server cut a client short (a bounded metrics label, pre-created at 0)."""

    TIMEOUT = "timeout"  # idle, or too slow (slowloris), past the deadline
    EVICTED = "evicted"  # the oldest silent (else unread) connection, to admit a new one
    BUSY = "busy"  # every connection held is being answered: the new one is closed
    OVERSIZE = "oversize"  # a request head past MAX_REQUEST_BYTES (answered 431)
    BAD_REQUEST = "bad_request"  # not an HTTP/1.x GET or HEAD (answered 400 or 405)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A yes/no answer with the reasons behind a no."""

    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    content_type: str = JSON
    head_only: bool = False  # HEAD: the headers GET would send, no body

    def encode(self) -> bytes:
        status = HTTPStatus(self.status)
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            f"Content-Type: {self.content_type}\r\n"
            f"Content-Length: {len(self.body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        return head if self.head_only else head + self.body


class HealthServer:
    """Serves metrics and probes on HOST:PORT until `stop`.

    The socket is bound here, so a taken or unusable address fails at construction.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        alive: Callable[[], Verdict],
        ready: Callable[[], Verdict],
        max_connections: int = MAX_CONNECTIONS,
        request_deadline_seconds: float = REQUEST_DEADLINE_SECONDS,
        on_refusal: Callable[[Refusal], None] = lambda _: None,
    ) -> None:
        self._registry, self._alive, self._ready = registry, alive, ready
        self._on_refusal = on_refusal  # called in the server's thread
        self._max_connections = max_connections
        self._deadline = request_deadline_seconds
        self._socket = _listen(host, port)
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._open: set[asyncio.StreamWriter] = set()
        # Connections whose request is not read yet, oldest first: the eviction candidates.
        self._reading: dict[asyncio.StreamWriter, asyncio.StreamReader] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name="health-server", daemon=True)

    @property
    def address(self) -> str:
        """HOST:PORT actually bound (the port may have been 0); IPv6 in brackets."""
        host, port = self._socket.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, drop open connections and release the port."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=5)
        elif not self._loop.is_closed():
            self._loop.close()  # never started
        self._socket.close()

    # -- the server's own loop ----------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        server = await asyncio.start_server(
            self._handle, sock=self._socket, backlog=LISTEN_BACKLOG, limit=MAX_REQUEST_BYTES
        )
        async with server:
            await self._stopping.wait()
            server.close()
            for writer in self._open:
                writer.transport.abort()  # each handler then ends as if its client left
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a connection handler always runs as a task
        self._handlers.add(task)
        if not self._admit(reader, writer):
            self._handlers.discard(task)
            writer.transport.abort()
            return
        answered = False
        try:
            async with asyncio.timeout(self._deadline):
                answer = await self._answer(reader)
                self._reading.pop(writer, None)
                writer.write(answer.encode())
                writer.close()
                # Until the client has it all: a closed transport would otherwise keep the
                # socket, and its descriptor, for as long as a client declines to read.
                await writer.wait_closed()
                answered = True
        except TimeoutError:
            self._on_refusal(Refusal.TIMEOUT)  # dropped below
        except ConnectionError:
            pass  # the client left
        finally:
            self._reading.pop(writer, None)
            self._open.discard(writer)
            self._handlers.discard(task)
            if not answered:  # timed out, evicted or gone: free the descriptor now
                writer.transport.abort()

    def _admit(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Hold the connection, evicting if need be the oldest that has sent nothing, else the
        oldest unread (a slowloris); False when every connection held is being answered."""
        if len(self._open) >= self._max_connections:
            silent = (w for w, r in self._reading.items() if _silent(r, w))
            oldest = next(silent, None) or next(iter(self._reading), None)
            if oldest is None:
                self._on_refusal(Refusal.BUSY)
                return False
            del self._reading[oldest]
            # Not Task.cancel(): asyncio 3.11 logs a traceback for every cancelled handler.
            # Its reader sees the connection lost and the handler ends on its own.
            oldest.transport.abort()
            self._on_refusal(Refusal.EVICTED)
        self._open.add(writer)
        self._reading[writer] = reader
        return True

    async def _answer(self, reader: asyncio.StreamReader) -> _Answer:
        try:
            request_line = await _read_head(reader)
        except asyncio.LimitOverrunError:
            request_line = None
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError from exc  # the client left mid-request
        if request_line is None:
            self._on_refusal(Refusal.OVERSIZE)
            return _error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        method, path = _request_line(request_line)
        if method not in ("GET", "HEAD"):
            self._on_refusal(Refusal.BAD_REQUEST)
            return _error(
                HTTPStatus.BAD_REQUEST if method is None else HTTPStatus.METHOD_NOT_ALLOWED
            )
        answer = self._route(path)
        return dataclasses.replace(answer, head_only=True) if method == "HEAD" else answer

    def _route(self, path: str) -> _Answer:
        if path == "/metrics":
            return _Answer(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            return _verdict(self._alive())
        if path == "/readyz":
            return _verdict(self._ready())
        return _error(HTTPStatus.NOT_FOUND)


def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether the client has sent nothing yet: no byte buffered by asyncio nor waiting in the
    kernel (a connection accepted in a burst is admitted before its first bytes are read)."""
    if getattr(reader, "_buffer", b""):  # StreamReader has no public "bytes buffered"
        return False
    sock = writer.get_extra_info("socket")
    if sock is None:
        return True
    waiting = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, waiting)
    except OSError:  # gone already: nothing to protect
        return True
    return waiting[0] == 0


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on HOST:PORT: IPv6 for an IPv6 address, else IPv4 (a host name
    included, as before: `localhost` keeps meaning 127.0.0.1 where it resolves to ::1 first)."""
    try:
        ipv6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        ipv6 = False
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The request line, once the whole head is read; None past `MAX_REQUEST_BYTES`.

    As RFC 9112 §2.2 lets a server: a line ends at LF, a CR before it ignored (curl, Python
    and Go send CRLF; `printf 'GET /healthz HTTP/1.1\\n\\n' | nc` does not), and empty lines
    before the request line are skipped. They all count towards the bound.
    """
    request_line, size = None, 0
    while True:
        line = await reader.readuntil(b"\n")  # one line is bounded by the reader's limit
        size += len(line)
        if size > MAX_REQUEST_BYTES:
            return None
        line = line.removesuffix(b"\n").removesuffix(b"\r")
        if request_line is None:
            request_line = line or None
        elif not line:
            return request_line


def probe_url(host: str, port: int, path: str = "/healthz") -> str:
    """The URL a probe on this host uses to reach a server bound to HOST:PORT: a wildcard is
    reached on its own family's loopback (0.0.0.0 on 127.0.0.1, :: on ::1, which an IPv6
    socket serves alone: see `_listen`), any other address or name as it is."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a name: resolved by the probe as it was by the server
        return f"http://{host}:{port}{path}"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{port}{path}"


def probe(url: str, timeout_seconds: float) -> tuple[int, bytes]:
    """GET `url` (a `probe_url`) within `timeout_seconds`: (status, the body's first 512 bytes).

    Never through a proxy. A connect attempt that is not answered within
    `PROBE_CONNECT_SECONDS` is made again at once: under a connect flood the kernel's accept
    queue is full and drops SYNs, and TCP's own retries would come only after 1 s and 3 s.
    Raises OSError when no answer came in time.
    """
    target = urllib.parse.urlsplit(url)
    assert target.hostname is not None and target.port is not None  # a probe_url has both
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            sock = socket.create_connection((target.hostname, target.port), PROBE_CONNECT_SECONDS)
            break
        except TimeoutError:
            if time.monotonic() + PROBE_CONNECT_SECONDS > deadline:
                raise
    connection = http.client.HTTPConnection(target.hostname, target.port)
    connection.sock = sock
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.1))
        connection.request("GET", target.path)
        reply = connection.getresponse()
        return reply.status, reply.read(512)
    finally:
        connection.close()


def _request_line(line: bytes) -> tuple[str | None, str]:
    """(method, path without the query) of an HTTP/1.x request line; (None, "") if it is not.

    The target may be in absolute form (`http://host:port/healthz`, RFC 9112 §3.2.2), as a
    client talking to a proxy sends it: its path is routed, its authority ignored.
    """
    parts = line.decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None, ""
    target = parts[1]
    if target[:7].lower() == "http://" or target[:8].lower() == "https://":
        target = urllib.parse.urlsplit(target).path or "/"
    return parts[0], target.split("?", 1)[0]


def _verdict(verdict: Verdict) -> _Answer:
    body = {"status": "ok" if verdict.ok else "unavailable", **verdict.detail}
    payload = json.dumps(body, sort_keys=True).encode() + b"\n"
    return _Answer(200 if verdict.ok else 503, payload)


def _error(status: HTTPStatus) -> _Answer:
    return _Answer(status, json.dumps({"error": status.phrase.lower()}).encode() + b"\n")
