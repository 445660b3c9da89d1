"""One small HTTP server: /metrics, /healthz (the loop is alive), /readyz (the data is fresh).

It runs in its own thread so a scrape never waits on a sync, and reads only immutable
snapshots the loop publishes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


@dataclass(frozen=True, slots=True)
class Verdict:
    """A yes/no answer with the reasons behind a no."""

    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


class HealthServer:
    """Serves metrics and probes on HOST:PORT until `stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        alive: Callable[[], Verdict],
        ready: Callable[[], Verdict],
    ) -> None:
        handler = _handler(registry, alive, ready)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    @property
    def address(self) -> str:
        """HOST:PORT actually bound (the port may have been 0)."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


def _handler(
    registry: CollectorRegistry, alive: Callable[[], Verdict], ready: Callable[[], Verdict]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._verdict(alive())
            elif path == "/readyz":
                self._verdict(ready())
            else:
                self._send(404, b'{"error": "not found"}\n', "application/json")

        def _verdict(self, verdict: Verdict) -> None:
            body = {"status": "ok" if verdict.ok else "unavailable", **verdict.detail}
            payload = json.dumps(body, sort_keys=True).encode() + b"\n"
            self._send(200 if verdict.ok else 503, payload, "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every 15 s would drown the structured log

    return Handler
