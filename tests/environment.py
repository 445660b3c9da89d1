"""Facts about this machine that tests and the harness share: `shared/`, a free port, the env."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
STEERING_PREFIXES: Final = ("HORDE_REPLICA_", "HORDE_MODEL_REFERENCE_", "NOTIFY_")
"""Variables that would steer our daemon, upstream's PRIMARY or client, or systemd notify."""


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


def free_ipv6_port() -> int | None:
    """A TCP port on [::1] that nothing listened on a moment ago; None without IPv6 loopback."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
            port: int = sock.getsockname()[1]
            return port
    except OSError:
        return None


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without `STEERING_PREFIXES` variables, local traffic unproxied, + `extra`.

    Daemons log at debug level, so tests can read every layer's `sync.category_done`.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(STEERING_PREFIXES)}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["HORDE_REPLICA_LOG_LEVEL"] = "debug"
    env.update(extra)
    return env


def daemon_env(server_url: str, root: Path, **extra: str) -> dict[str, str]:
    """The daemon's settings through the environment, as a container or unit file passes them:
    a PRIMARY (and GitHub, no fallback) at `server_url`, a replica and config file in `root`,
    one-second retries until a first success, then hourly; `extra` adds or overrides. The one
    daemon environment of the tests, for a child process and for an in-process `Daemon`."""
    config = root / "config.toml"
    if not config.exists():
        config.write_text("# settings come from the environment in tests\n")
    settings = {
        "HORDE_REPLICA_PRIMARY_URL": f"{server_url}/api",
        "HORDE_REPLICA_GITHUB_URL": server_url,
        "HORDE_REPLICA_GITHUB_FALLBACK": "false",
        "HORDE_REPLICA_REPLICA_DIR": str(root / "replica"),
        "HORDE_REPLICA_CATEGORIES": "esrgan,blip",
        "HORDE_REPLICA_INTERVAL_SECONDS": "3600",
        "HORDE_REPLICA_INIT_INTERVAL_SECONDS": "1",
        "HORDE_REPLICA_INTERVAL_JITTER_SECONDS": "0",
        "HORDE_REPLICA_RETRY_INITIAL_SECONDS": "0.01",
        "HORDE_REPLICA_RETRY_MAX_SECONDS": "0.05",
        "HORDE_REPLICA_REQUEST_TIMEOUT_SECONDS": "5",
        "HORDE_REPLICA_CONFIG": str(config),
    }
    return clean_env(**{**settings, **extra})
