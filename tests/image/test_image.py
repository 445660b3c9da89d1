"""The real image, run by podman against the real upstream PRIMARY: a smoke test, in order.

One container for the module (host network, so it reaches the PRIMARY on 127.0.0.1 and
nothing leaves loopback), a fresh named volume at the image's VOLUME and a config directory
mounted at /etc/horde-replica-sync. The tests run in file order; the last one stops it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from tests.deploy.conftest import http_get
from tests.environment import free_ipv6_port, free_port
from tests.image.conftest import MEASURED, BuiltImage, podman
from tests.interop.peer import V2_FILES, Primary, start_primary

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]

IMAGE_UID: Final = 10001
VOLUME: Final = "/data/horde_model_reference"
STOP_GRACE_SECONDS: Final = 30
CONFIG: Final = "# mounted at /etc/horde-replica-sync/config.toml\ninterval_seconds = 3600\n"
RELOADED: Final = "interval_seconds = 1800\nmax_staleness_seconds = 7000\n"

Event = dict[str, Any]


@dataclass(slots=True)
class Container:
    """The running container: its name, metrics address, volume and config on the host."""

    name: str
    metrics: str
    volume_dir: Path
    config_file: Path

    def events(self, name: str, **fields: Any) -> list[Event]:
        """The JSON log lines named `name` whose fields match, from `podman logs`."""
        out = podman("logs", self.name, timeout=30)
        found = []
        for line in (out.stdout + out.stderr).splitlines():
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
                found.append(event)
        return found

    def wait_for(
        self, name: str, *, count: int = 1, timeout: float = 60.0, **fields: Any
    ) -> list[Event]:
        """Wait for `count` matching log lines; fail with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name, **fields)
            if len(found) >= count:
                return found
            time.sleep(0.25)
        tail = podman("logs", "--tail", "20", self.name, check=False)
        pytest.fail(f"no {count}x {name} {fields} in {timeout} s; log tail:\n{tail.stderr}")

    def exec(self, *argv: str) -> str:
        """stdout of a command run in the container (as the image's user)."""
        return podman("exec", self.name, *argv, timeout=30).stdout


def wait_status(url: str, status: int, timeout: float = 60.0) -> str:
    """Poll `url` until it answers `status`; its body."""
    deadline = time.monotonic() + timeout
    last: tuple[int, str] | str = "no answer"
    while time.monotonic() < deadline:
        try:
            last = http_get(url)
        except OSError as exc:
            last = repr(exc)
        if isinstance(last, tuple) and last[0] == status:
            return last[1]
        time.sleep(0.25)
    pytest.fail(f"{url} did not answer {status} in {timeout} s; last: {last}")


def replica_files(volume_dir: Path) -> dict[str, os.stat_result]:
    """Every file in the volume (the lock and state included), by relative path."""
    return {
        path.relative_to(volume_dir).as_posix(): path.stat()
        for path in sorted(volume_dir.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(name="primary", scope="module")
def _primary() -> Iterator[Primary]:
    """The real upstream PRIMARY on 127.0.0.1 (shared/peer/start_primary.sh)."""
    data = Path(tempfile.mkdtemp(prefix="hrs-image-primary-"))
    primary = start_primary(data)
    yield primary
    primary.stop()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(name="container", scope="module")
def _container(built_image: BuiltImage, primary: Primary) -> Iterator[Container]:
    """`podman run -d` the image: a fresh named volume, a mounted config, host network."""
    name = f"hrs-image-test-{secrets.token_hex(4)}"
    config_dir = Path(tempfile.mkdtemp(prefix="hrs-image-config-"))
    config_dir.chmod(0o755)  # the image's user reads it through the bind mount
    config_file = config_dir / "config.toml"
    config_file.write_text(CONFIG, encoding="utf-8")
    config_file.chmod(0o644)
    podman("volume", "create", name)
    mountpoint = podman("volume", "inspect", "--format", "{{.Mountpoint}}", name).stdout.strip()
    metrics = f"127.0.0.1:{free_port()}"
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--volume",
        f"{name}:{VOLUME}",
        "--volume",
        f"{config_dir}:/etc/horde-replica-sync:ro",
        "--env",
        f"HORDE_REPLICA_PRIMARY_URL={primary.base_url}",
        "--env",
        f"HORDE_REPLICA_METRICS_ADDR={metrics}",
        "--env",
        "HORDE_REPLICA_GITHUB_FALLBACK=false",
        "--env",
        "HORDE_REPLICA_INIT_INTERVAL_SECONDS=1",
        "--env",
        "HORDE_REPLICA_INTERVAL_JITTER_SECONDS=0",
        "--env",
        "NO_PROXY=127.0.0.1,localhost",
        built_image.tag,
        timeout=120,
    )
    try:
        yield Container(name, metrics, Path(mountpoint), config_file)
    finally:
        podman("rm", "--force", "--time", "0", name, check=False, timeout=60)
        podman("volume", "rm", "--force", name, check=False)
        shutil.rmtree(config_dir, ignore_errors=True)


def test_image_metadata(built_image: BuiltImage) -> None:
    """The built image keeps its user, HEALTHCHECK, entrypoint and volume (docker format)."""
    inspected = json.loads(podman("image", "inspect", built_image.tag).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert config["Entrypoint"] == ["horde-replica-sync"]
    assert config["Cmd"] == ["run"]
    assert list(config["Volumes"]) == [VOLUME]
    assert config["StopSignal"] == "SIGTERM"
    # HEALTHCHECK has no place in an OCI image config: it is kept by --format docker.
    assert inspected["ManifestType"] == "application/vnd.docker.distribution.manifest.v2+json"
    test = inspected["Healthcheck"]["Test"]
    assert test == ["CMD", "python", "-m", "horde_replica_sync.healthcheck"], test
    assert built_image.size_bytes < 400_000_000, built_image.size_bytes


def test_runtime_venv_has_no_pip(built_image: BuiltImage) -> None:
    """The image's venv holds the daemon and its dependencies, and no pip."""
    probe = (
        "import importlib.util as u, sys; print(sys.prefix, "
        "u.find_spec('pip') is None, u.find_spec('horde_replica_sync') is not None)"
    )
    out = podman(
        "run", "--rm", "--network", "none", "--entrypoint", "python", built_image.tag, "-c", probe
    )
    assert out.stdout.split() == ["/opt/horde-replica-sync", "True", "True"]


def test_daemon_is_pid_1_and_not_root(container: Container) -> None:
    """PID 1 is the daemon itself (exec-form entrypoint), with the image's non-root UID."""
    status = container.exec("cat", "/proc/1/status")
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    gids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Gid:"))
    assert uids == [str(IMAGE_UID)] * 4, status
    assert gids == [str(IMAGE_UID)] * 4, status
    argv = container.exec("cat", "/proc/1/cmdline").split("\0")
    assert argv[1] == "/opt/horde-replica-sync/bin/horde-replica-sync", argv
    assert argv[2:] == ["run", ""], argv
    assert container.exec("id", "-u").strip() == str(IMAGE_UID)
    MEASURED["PID 1"] = f"{' '.join(argv[:3])} (uid {uids[0]})"


def test_healthz_and_readyz(container: Container) -> None:
    """/healthz answers 200 at once, /readyz 200 after the first sync from the PRIMARY."""
    started = time.monotonic()
    wait_status(f"http://{container.metrics}/healthz", 200)
    container.wait_for("sync.run_done", ok=True)
    body = wait_status(f"http://{container.metrics}/readyz", 200)
    MEASURED["/healthz, /readyz"] = f"200, 200 ({time.monotonic() - started:.1f} s after start)"
    assert body


def test_replica_in_the_volume_owned_by_the_image_user(
    container: Container, primary: Primary
) -> None:
    """Every v2 file is in the named volume, owned by the image's user, equal to the PRIMARY's."""
    container.wait_for("sync.run_done", ok=True)
    files = replica_files(container.volume_dir)
    assert set(V2_FILES.values()) <= set(files), sorted(files)
    assert any(name.startswith("legacy/") for name in files), sorted(files)
    for name, stat in files.items():
        assert (stat.st_uid, stat.st_gid) == (IMAGE_UID, IMAGE_UID), name
    for category in ("esrgan", "blip", "image_generation"):
        ours = json.loads((container.volume_dir / V2_FILES[category]).read_bytes())
        assert ours == json.loads(primary.v2(category)), category
    MEASURED["volume"] = f"{len(files)} files, all owned by {IMAGE_UID}:{IMAGE_UID}"


def test_usr1_forces_a_sync(container: Container, primary: Primary) -> None:
    """SIGUSR1 runs a forced sync: everything re-downloaded, nothing rewritten."""
    container.wait_for("sync.run_done", ok=True)
    runs = len(container.events("sync.run_done"))
    before = replica_files(container.volume_dir)
    requests = primary.request_count()
    podman("kill", "--signal", "USR1", container.name)
    forced = container.wait_for("sync.run_done", forced=True, timeout=60)
    assert forced[-1]["ok"] is True, forced
    assert len(container.events("sync.run_done")) == runs + 1
    fetched = primary.request_count() - requests
    assert fetched > 2, fetched  # an unforced run with nothing changed costs 2 requests
    after = replica_files(container.volume_dir)
    data = [name for name in after if not name.startswith(".horde-replica-sync")]
    assert [(n, after[n].st_ino, after[n].st_mtime_ns) for n in data] == [
        (n, before[n].st_ino, before[n].st_mtime_ns) for n in data
    ]
    MEASURED["USR1"] = f"forced sync: {fetched} requests to the PRIMARY, 0 data files rewritten"


def test_hup_reloads_the_mounted_config(container: Container) -> None:
    """SIGHUP re-reads /etc/horde-replica-sync/config.toml; a broken file is refused."""
    container.config_file.write_text(RELOADED, encoding="utf-8")
    podman("kill", "--signal", "HUP", container.name)
    reloaded = container.wait_for("config.reloaded")
    assert reloaded[-1]["changed"] == {"interval_seconds": 1800, "max_staleness_seconds": 7000}
    container.config_file.write_text("interval_seconds = 'soon'\n", encoding="utf-8")
    podman("kill", "--signal", "HUP", container.name)
    failed = container.wait_for("config.reload_failed")
    assert "interval_seconds" in failed[-1]["error"], failed
    status, _ = http_get(f"http://{container.metrics}/healthz")
    assert status == 200
    MEASURED["HUP"] = "config.reloaded with the 2 changed keys; a broken file: config.reload_failed"


def test_healthcheck_passes(container: Container) -> None:
    """The image's own HEALTHCHECK, run by podman, reports healthy."""
    result = podman("healthcheck", "run", container.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr  # prints only when unhealthy
    health = json.loads(
        podman("inspect", "--format", "{{json .State.Health}}", container.name).stdout
    )
    assert health["Status"] == "healthy", health
    assert health["Log"][-1]["ExitCode"] == 0, health
    MEASURED["HEALTHCHECK"] = "podman healthcheck run: healthy"


def test_healthcheck_follows_an_ipv6_metrics_addr(
    built_image: BuiltImage, primary: Primary
) -> None:
    """`HORDE_REPLICA_METRICS_ADDR=[::1]:PORT`: the HEALTHCHECK probes [::1] and reports healthy
    (it used to probe 127.0.0.1 whatever the setting, and report unhealthy)."""
    port = free_ipv6_port()
    if port is None:
        pytest.skip("this host has no IPv6 loopback")
    name = f"hrs-image-test-v6-{secrets.token_hex(4)}"
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--env",
        f"HORDE_REPLICA_PRIMARY_URL={primary.base_url}",
        "--env",
        f"HORDE_REPLICA_METRICS_ADDR=[::1]:{port}",
        "--env",
        "HORDE_REPLICA_GITHUB_FALLBACK=false",
        "--env",
        "NO_PROXY=127.0.0.1,localhost",
        built_image.tag,
        timeout=120,
    )
    try:
        wait_status(f"http://[::1]:{port}/healthz", 200)
        result = podman("healthcheck", "run", name, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        health = json.loads(podman("inspect", "--format", "{{json .State.Health}}", name).stdout)
        assert health["Status"] == "healthy", health
    finally:
        podman("rm", "--force", "--volumes", "--time", "0", name, check=False, timeout=60)
    MEASURED["HEALTHCHECK, [::1]"] = "podman healthcheck run: healthy"


def test_stop_exits_0_within_the_grace_period(container: Container) -> None:
    """`podman stop -t 30` (SIGTERM): exit code 0 well within the grace period."""
    started = time.monotonic()
    podman("stop", "--time", str(STOP_GRACE_SECONDS), container.name, timeout=90)
    seconds = time.monotonic() - started
    state = podman("inspect", "--format", "{{.State.ExitCode}} {{.State.Status}}", container.name)
    assert state.stdout.split() == ["0", "exited"]
    assert seconds < STOP_GRACE_SECONDS, seconds
    assert container.events("daemon.stopped")
    MEASURED["stop"] = f"podman stop -t {STOP_GRACE_SECONDS}: exit 0 in {seconds:.2f} s"
