"""A small, scriptable HTTP server on 127.0.0.1 for fault tests.

Each path answers from a queue of `Reply` objects (the last one repeats), so a test can say
"500, then 200" or "hang for 5 s" or "send half the body and drop the connection". Every
request is recorded. It plays both a PRIMARY and raw.githubusercontent.com.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from horde_replica_sync.categories import (
    GITHUB_BRANCH,
    GITHUB_OWNER,
    MODEL_REFERENCE_CATEGORY,
    spec_for,
)


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    truncate_to: int | None = None  # promise the whole body, send this many bytes, hang up
    reset: bool = False  # close the connection without answering
    etag: str | None = None  # answer 304 to a matching If-None-Match
    drip: float = 0.0  # seconds between body bytes: a server that never quite finishes


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    path: str  # without the query string: routes and counts ignore it, as the PRIMARY does
    headers: dict[str, str]
    query: str = ""


class FaultServer:
    """A threaded HTTP/1.1 server whose answers are scripted per path."""

    def __init__(
        self, tls: ssl.SSLContext | None = None, basic_auth: tuple[str, str] | None = None
    ) -> None:
        self._routes: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self.requests: list[Seen] = []
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        if tls is not None:  # HTTPS; the handshake happens in the handler thread
            server.socket = tls.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
            server.handle_error = _quiet  # type: ignore[method-assign]  # refused handshakes
        self.scheme = "http" if tls is None else "https"
        # With `basic_auth`, a request without exactly these credentials gets 401.
        self.authorization = (
            None
            if basic_auth is None
            else "Basic " + base64.b64encode(":".join(basic_auth).encode()).decode()
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        """The server's base URL."""
        host, port = self._server.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"

    def start(self) -> FaultServer:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (if it was started) and close the socket."""
        if self._thread.is_alive():  # shutdown() waits for a serve_forever that never began
            # socketserver's accept() blocks when a client left between select() and accept()
            # (CI hung there for good): a connection of our own wakes it to see the shutdown.
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self._server.server_port), timeout=1).close()
            self._server.shutdown()
        self._server.server_close()

    def script(self, path: str, *replies: Reply) -> None:
        """Answer `path` with `replies` in order; the last one repeats."""
        with self._lock:
            self._routes[path] = list(replies)

    def count(self, path: str | None = None) -> int:
        """How many requests arrived (for `path`, or in all)."""
        with self._lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def next_reply(self, path: str, headers: dict[str, str], query: str = "") -> Reply:
        """Record a request and pop its reply (404 for unscripted paths)."""
        with self._lock:
            self.requests.append(Seen(path, headers, query))
            queue = self._routes.get(path)
            if not queue:
                return Reply(404, b'{"detail":"Not Found"}')
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def transport(self) -> httpx.MockTransport:
        """The same script answered in-process, without a socket: for a client's `transport`.

        Status, body, headers, ETag and delay are played; a torn connection needs the socket."""

        async def answer(request: httpx.Request) -> httpx.Response:
            headers = {k.lower(): v for k, v in request.headers.items()}
            reply = self.next_reply(request.url.path, headers, request.url.query.decode())
            if reply.reset or reply.truncate_to is not None or reply.drip:
                raise AssertionError("a torn connection needs the socket: use `running()`")
            if reply.delay:
                await asyncio.sleep(reply.delay)
            out = {"Content-Type": "application/json", **reply.headers}
            if reply.etag is not None:
                out["ETag"] = reply.etag
                if headers.get("if-none-match") == reply.etag:
                    return httpx.Response(304, headers=out)
            return httpx.Response(reply.status, headers=out, content=reply.body)

        return httpx.MockTransport(answer)


def _quiet(request: object, client_address: object) -> None:
    """A client that refused our certificate is what a TLS test expects: no traceback."""


def _handler_for(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = server.next_reply(path, headers, query)
            if server.authorization and self.headers.get("Authorization") != server.authorization:
                reply = Reply(401, b'{"detail":"Not authenticated"}', {"WWW-Authenticate": "Basic"})
            if reply.delay:
                time.sleep(reply.delay)
            if reply.reset:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if reply.etag is not None and self.headers.get("If-None-Match") == reply.etag:
                self._answer(304, b"", {"ETag": reply.etag})
                return
            headers = dict(reply.headers)
            if reply.etag is not None:
                headers["ETag"] = reply.etag
            self._answer(reply.status, reply.body, headers, reply.truncate_to, reply.drip)

        def _answer(
            self,
            status: int,
            body: bytes,
            headers: dict[str, str],
            truncate_to: int | None = None,
            drip: float = 0.0,
        ) -> None:
            self.send_response(status)
            headers.setdefault("Content-Type", "application/json")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if truncate_to is not None:
                self.wfile.write(body[:truncate_to])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if drip:
                self._drip(body, drip)
            elif status != 304:
                self.wfile.write(body)

        def _drip(self, body: bytes, every: float) -> None:
            for i in range(len(body)):  # ends when the client hangs up (or the body does)
                try:
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                except OSError:
                    self.close_connection = True
                    return
                time.sleep(every)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


@contextlib.contextmanager
def running(
    tls: ssl.SSLContext | None = None, basic_auth: tuple[str, str] | None = None
) -> Iterator[FaultServer]:
    """A started `FaultServer` (HTTPS with `tls`, requiring `basic_auth`), stopped on exit."""
    server = FaultServer(tls, basic_auth).start()
    try:
        yield server
    finally:
        server.stop()


# -- realistic scripts ---------------------------------------------------------------------


def records(category: MODEL_REFERENCE_CATEGORY, count: int, *, tag: str = "a") -> bytes:
    """A small valid v2 body with `count` records: the least each passes `record_rules` with.

    `tag` is each record's description, so a test can tell bodies apart.
    """
    data = {
        f"{category.value}-{i}": minimal_record(category, f"{category.value}-{i}", tag)
        for i in range(count)
    }
    return json.dumps(data, separators=(",", ":")).encode()


def minimal_record(category: MODEL_REFERENCE_CATEGORY, name: str, tag: str) -> dict[str, Any]:
    """The smallest record of `category` upstream's readers can use (see `record_rules`)."""
    record: dict[str, Any] = {"name": name, "description": tag}
    if category is MODEL_REFERENCE_CATEGORY.text_generation:
        record["parameters"] = 7_000_000_000
        return record
    record["config"] = {"download": [{"file_name": f"{name}.pth", "file_url": "https://x/f"}]}
    if category is MODEL_REFERENCE_CATEGORY.image_generation:
        record.update(baseline="stable_diffusion_1", nsfw=False)
    return record


def metadata(stamp: int) -> bytes:
    """A metadata/metadata body giving every category `stamp`."""
    return json.dumps(
        {c.value: {"category": c.value, "last_updated": stamp} for c in MODEL_REFERENCE_CATEGORY}
    ).encode()


def v2_path(category: MODEL_REFERENCE_CATEGORY) -> str:
    """The PRIMARY's v2 path of `category`."""
    return f"/api/model_references/v2/{category.value}"


def v1_path(category: MODEL_REFERENCE_CATEGORY) -> str:
    """The PRIMARY's v1 path of `category` (it must have a legacy layer)."""
    name = spec_for(category).primary_legacy_name
    assert name is not None
    return f"/api/model_references/v1/{name}"


def script_primary(
    server: FaultServer, *, stamp: int = 1000, count: int = 4, tag: str = "a"
) -> None:
    """Make `server` a healthy PRIMARY: metadata, v2 and v1 for every category."""
    for family in ("v1", "v2"):
        server.script(
            f"/api/model_references/{family}/metadata/metadata", Reply(body=metadata(stamp))
        )
    for category in MODEL_REFERENCE_CATEGORY:
        server.script(v2_path(category), Reply(body=records(category, count, tag=tag)))
        if spec_for(category).has_legacy:
            server.script(v1_path(category), Reply(body=records(category, count, tag=tag)))


def change_upstream(
    server: FaultServer,
    category: MODEL_REFERENCE_CATEGORY,
    stamp: int,
    tag: str,
    *,
    held: Mapping[MODEL_REFERENCE_CATEGORY, int] = {},
) -> None:
    """The PRIMARY publishes a new version of `category` (metadata moves, the body changes);
    the others keep stamp 1000, or what `held` gives them."""
    moved = json.loads(metadata(1000))
    for other, other_stamp in held.items():
        moved[other.value]["last_updated"] = other_stamp
    moved[category.value]["last_updated"] = stamp
    server.script(
        "/api/model_references/v2/metadata/metadata", Reply(body=json.dumps(moved).encode())
    )
    server.script(v2_path(category), Reply(body=records(category, 4, tag=tag)))


def github_path(category: MODEL_REFERENCE_CATEGORY, file: str) -> str:
    """The raw GitHub path of one legacy file of `category`."""
    repo = spec_for(category).github_repo
    assert repo is not None
    return f"/{GITHUB_OWNER}/{repo.value}/refs/heads/{GITHUB_BRANCH}/{file}"


def script_github(server: FaultServer, legacy_dir: Path) -> None:
    """Serve the real legacy files from `legacy_dir`, with ETags, laid out like GitHub raw."""
    for category in MODEL_REFERENCE_CATEGORY:
        for file in spec_for(category).github_files:
            body = (legacy_dir / file).read_bytes()
            etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
            server.script(github_path(category, file), Reply(body=body, etag=etag))
