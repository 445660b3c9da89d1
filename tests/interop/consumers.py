"""Helpers for running the real downstream consumers the way the README tells workers to.

* `readme_environment(name)`: the environment block the README gives a consumer (the fenced
  block after `<!-- worker-env: NAME -->`), so the tests use exactly what operators are told.
* `sdk_python()`: the horde-sdk 0.33.3 venv, provisioned by `scripts/sdk_venv.sh` (cached
  like the peer's; `make sdk` or the first test run creates it). Fails, never skips.
* `reader_python(reader)`: another reader's venv (`scripts/reader_venv.sh READER`, `make
  readers`). Fails under CI=true; elsewhere skips, saying why, only when the venv cannot be built.
* `run_consumer(...)`: `consumer_probe.py` in a fresh mount and network namespace
  (`unshare --mount --net`, only a downed `lo`), the replica bind-mounted (read-only unless
  asked) at `$AIWORKER_CACHE_HOME/horde_model_reference`, with `env -i` and the given variables.
* `run_networked(...)`: `consumer_probe.py` with `env -i` and the given variables only, on the
  host's network (for a worker that must download), over its own cache home.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from tests.environment import ROOT

README: Final = ROOT / "README.md"
PROBE: Final = Path(__file__).with_name("consumer_probe.py")
SDK_VENV_SCRIPT: Final = ROOT / "scripts" / "sdk_venv.sh"
READER_VENV_SCRIPT: Final = ROOT / "scripts" / "reader_venv.sh"
PROVISION_TIMEOUT_SECONDS: Final = 900.0
PROBE_TIMEOUT_SECONDS: Final = 120.0
MOUNT_POINT: Final = "horde_model_reference"

# Mount the replica (read-only) where the consumer expects it, then run it with a wiped env.
_SANDBOX: Final = (
    'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && shift 2 && exec env -i "$@"'
)
_SANDBOX_WRITABLE: Final = 'mount --bind "$1" "$2" && shift 2 && exec env -i "$@"'


def readme_environment(name: str) -> dict[str, str]:
    """The `KEY=value` lines of the README block marked `<!-- worker-env: name -->`."""
    text = README.read_text(encoding="utf-8")
    match = re.search(
        rf"<!-- worker-env: {re.escape(name)} -->\s*```[a-z]*\n(.*?)```", text, re.DOTALL
    )
    assert match, f"README.md has no environment block marked <!-- worker-env: {name} -->"
    env: dict[str, str] = {}
    for line in match.group(1).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f"not KEY=value: {line!r}"
        env[key] = value
    return env


def _provision(command: list[str], what: str) -> tuple[Path | None, str]:
    """Run a venv script; its python, or None and why not."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=PROVISION_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as exc:
        return None, f"{' '.join(command)} did not finish in {exc.timeout}s"
    python = Path(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    if proc.returncode != 0 or python is None or not python.exists():
        return None, (
            f"cannot provision the {what} venv ({' '.join(command)} exited {proc.returncode})"
            f"\nstderr:\n{proc.stderr[-4000:]}"
        )
    print(f"\n[{what} venv] {python} ready in {time.perf_counter() - started:.1f} s")
    return python, ""


def sdk_python() -> Path:
    """The horde-sdk venv's interpreter, provisioned now if missing (fails loudly if it can't)."""
    python, why = _provision(["bash", str(SDK_VENV_SCRIPT)], "horde-sdk")
    if python is None:
        pytest.fail(f"{why}\nrun `make sdk`.")
    return python


def reader_python(reader: str) -> Path:
    """READER's venv interpreter (scripts/reader_venv.sh), provisioned now if missing.

    A venv that cannot be built (no Python >= 3.12, no package index) fails the test in CI
    (CI=true) and skips it elsewhere, with the script's reason.
    """
    python, why = _provision(["bash", str(READER_VENV_SCRIPT), reader], reader)
    if python is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}\nrun `make readers`.")
        pytest.skip(f"{reader}: {why}")
    return python


@dataclass(frozen=True, slots=True)
class ConsumerRun:
    """One finished consumer_probe.py process."""

    mode: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def result(self) -> dict[str, Any]:
        """The probe's JSON report (the run must have succeeded)."""
        assert self.returncode == 0, self.describe()
        report: dict[str, Any] = json.loads(self.stdout.strip().splitlines()[-1])
        return report

    @property
    def loaded(self) -> Any:
        """The consumer's view of the reference."""
        return self.result["loaded"]

    def describe(self) -> str:
        """Everything needed to debug a failed assertion."""
        return (
            f"consumer_probe.py {self.mode}: exit {self.returncode} after {self.seconds:.1f}s\n"
            f"--- stderr (tail)\n{self.stderr[-4000:]}"
        )


def run_consumer(
    python: Path,
    mode: str,
    replica: Path,
    cache_home: Path,
    environment: dict[str, str],
    primary_port: int,
    *,
    read_only: bool = True,
) -> ConsumerRun:
    """Run consumer_probe.py `mode` as a worker: no network, the replica mounted, `environment`."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare (util-linux) is needed for the consumer tests")
    mount_point = cache_home / MOUNT_POINT
    mount_point.mkdir(parents=True, exist_ok=True)
    env = {**environment, "AIWORKER_CACHE_HOME": str(cache_home)}
    args = [
        unshare,
        "--mount",
        "--net",
        "--propagation",
        "private",
        "sh",
        "-c",
        _SANDBOX if read_only else _SANDBOX_WRITABLE,
        "sandbox",
        str(replica),
        str(mount_point),
        *(f"{key}={value}" for key, value in env.items()),
        str(python),
        str(PROBE),
        mode,
        str(primary_port),
    ]
    return _run_probe(args, cache_home, mode)


def run_networked(
    python: Path, mode: str, cache_home: Path, environment: dict[str, str], primary_port: int
) -> ConsumerRun:
    """Run consumer_probe.py `mode` with `env -i` + `environment`, on the host's network."""
    env = {**environment, "AIWORKER_CACHE_HOME": str(cache_home)}
    args = [
        "env",
        "-i",
        *(f"{key}={value}" for key, value in env.items()),
        str(python),
        str(PROBE),
        mode,
        str(primary_port),
    ]
    return _run_probe(args, cache_home, mode)


def _run_probe(args: list[str], cwd: Path, mode: str) -> ConsumerRun:
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"consumer_probe.py {mode} did not finish in {exc.timeout}s")
    seconds = time.perf_counter() - started
    return ConsumerRun(mode, proc.returncode, proc.stdout, proc.stderr, seconds)
