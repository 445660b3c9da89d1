"""A byte-counting TCP relay: every client of the bench reaches the PRIMARY through one.

So "bytes" are the same wire bytes (status line, headers, bodies) for every client.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class Relay:
    """A TCP relay that counts the bytes flowing from the PRIMARY to its clients."""

    def __init__(self, target_port: Callable[[], int]) -> None:
        self.target_port = target_port  # asked per connection: the target may restart
        self.down = 0
        self.up = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        """The API base clients use."""
        return f"http://127.0.0.1:{self.port}/api"

    def bytes_down(self) -> int:
        """Bytes sent to clients so far."""
        with self._lock:
            return self.down

    def close(self) -> None:
        """Stop accepting."""
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port()), timeout=10)
        except OSError:
            client.close()  # the PRIMARY is down (restarting): the client sees a closed connection
            return
        upstream.settimeout(None)
        with self._lock:
            self.connections += 1
        pump = threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True)
        pump.start()
        self._pump(upstream, client, True)
        pump.join(timeout=30)

    def _pump(self, source: socket.socket, sink: socket.socket, downstream: bool) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
                with self._lock:
                    if downstream:
                        self.down += len(chunk)
                    else:
                        self.up += len(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
