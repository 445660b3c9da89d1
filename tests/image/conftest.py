"""The container image, built for real with podman: the engine, the base image and the build.

`make image-test` runs these tests (`pytest -m image tests/image`); `make test` leaves them out.
They fail, never skip, when podman is missing (`make image-tools` installs it). The base image
is `$PYTHON_IMAGE` when set, else the official `python:3.11-slim-bookworm` when it can be
pulled, else a local Debian base from `image/base.sh` (cached under a tag keyed by its inputs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from tests.environment import ROOT

IMAGE_DIR: Final = ROOT / "image"
CONTAINERS_CONF: Final = IMAGE_DIR / "containers.conf"
OFFICIAL_BASE: Final = "docker.io/library/python:3.11-slim-bookworm"
TEST_TAG: Final = "localhost/horde-replica-sync:image-test"
BUILD_TIMEOUT_SECONDS: Final = 900.0

# What the run measured, printed at the end of the session (pytest_terminal_summary).
MEASURED: dict[str, str] = {}


def engine_env() -> dict[str, str]:
    """The environment for podman: the project's containers.conf unless one is configured."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def podman_path() -> str:
    """podman's path; fail (never skip) when it is missing."""
    path = shutil.which("podman")
    if path is None:
        pytest.fail("podman is missing: `make image-tools` installs Debian's podman and runc")
    return path


def podman(
    *args: str, timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `podman ARGS`; with `check`, fail the test with its output on a non-zero exit."""
    argv = [podman_path(), *args]
    try:
        result = subprocess.run(
            argv,
            env=engine_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(argv)} did not finish in {exc.timeout} s")
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
        )
    return result


def _script(name: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    try:
        result = subprocess.run(
            [str(IMAGE_DIR / name)],
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_SECONDS,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"image/{name} did not finish in {exc.timeout} s")
    seconds = time.monotonic() - started
    if result.returncode != 0:
        pytest.fail(
            f"image/{name} exited {result.returncode} after {seconds:.0f} s\n"
            f"--- stdout (tail)\n{result.stdout[-4000:]}\n"
            f"--- stderr (tail)\n{result.stderr[-4000:]}"
        )
    return result, seconds


def base_image() -> str:
    """The base: $PYTHON_IMAGE, else the official one if it can be had, else a local one."""
    configured = os.environ.get("PYTHON_IMAGE", "").strip()
    if configured:
        MEASURED["base image"] = f"{configured} (PYTHON_IMAGE)"
        return configured
    if podman("image", "exists", OFFICIAL_BASE, check=False).returncode == 0:
        MEASURED["base image"] = f"{OFFICIAL_BASE} (already pulled)"
        return OFFICIAL_BASE
    pull = podman("pull", "--quiet", OFFICIAL_BASE, timeout=600, check=False)
    if pull.returncode == 0:
        MEASURED["base image"] = f"{OFFICIAL_BASE} (pulled)"
        return OFFICIAL_BASE
    reason = (pull.stderr.strip().splitlines() or ["?"])[-1].rpartition(": ")[2]
    env = engine_env()
    env["ENGINE"] = podman_path()
    result, seconds = _script("base.sh", env)
    tag = result.stdout.strip()
    assert tag.startswith("localhost/hrs-base:"), result.stdout
    cached = "cached" in result.stderr
    MEASURED["base image"] = (
        f"{tag} ({'cached' if cached else 'made'} in {seconds:.1f} s; "
        f"the official one cannot be pulled: {reason[:120]})"
    )
    return tag


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """The image built from the real Dockerfile, and what the build cost."""

    tag: str
    base: str
    build_seconds: float
    size_bytes: int


@pytest.fixture(name="built_image", scope="session")
def _built_image() -> Iterator[BuiltImage]:
    """Build the Dockerfile once per session through image/build.sh (as `make image` does)."""
    base = base_image()
    env = engine_env()
    env.update(ENGINE="podman", IMAGE=TEST_TAG, PYTHON_IMAGE=base)
    extra_ca = os.environ.get("EXTRA_CA", "").strip()
    if extra_ca:
        assert Path(extra_ca).is_file(), f"EXTRA_CA={extra_ca} is not a file"
        env["EXTRA_CA"] = extra_ca
    _, seconds = _script("build.sh", env)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", TEST_TAG).stdout.strip())
    MEASURED["build"] = (
        f"{seconds:.1f} s (image/build.sh, podman layer cache as left by earlier runs)"
    )
    MEASURED["image size"] = f"{size / 1e6:.1f} MB ({size} bytes)"
    yield BuiltImage(TEST_TAG, base, seconds, size)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the image build and smoke test measured."""
    if not MEASURED:
        return
    terminalreporter.section("container image")
    for name, value in MEASURED.items():
        terminalreporter.write_line(f"{name}: {value}")
