"""Facts about this machine that tests and scripts share: where `shared/` is, a free port."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """`$HRS_SHARED_DIR` (the Makefile exports it), else `shared/` beside the repository."""
    configured = os.environ.get("HRS_SHARED_DIR")
    return Path(configured) if configured else ROOT.parent / "shared"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
