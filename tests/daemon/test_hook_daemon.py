"""The on-change hook in a real daemon: a real script, real upstream changes, real signals."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from tests.faultserver import FaultServer, Reply, change_upstream, metadata, v2_path
from tests.hookscript import calls, gone, write_hook
from tests.processes import DaemonProcess, run_cli

Start = Callable[..., DaemonProcess]
V2_METADATA = "/api/model_references/v2/metadata/metadata"


def start_hanging_hook(start_daemon: Start, pid_file: Path, **env: str) -> DaemonProcess:
    """A daemon whose hook writes its pid to `pid_file` and hangs, after its first ok run."""
    daemon = start_daemon("--on-change", f"sh -c 'echo $$ > {pid_file}; exec sleep 300'", **env)
    daemon.wait_for("sync.run_done", ok=True)
    return daemon


def hook_runs(daemon: DaemonProcess, result: str) -> float | None:
    return daemon.sample("horde_replica_hook_runs_total", result=result)


@pytest.fixture(name="hook")
def _hook(tmp_path: Path) -> tuple[Path, Path]:
    return write_hook(tmp_path)


class TestAnnouncements:
    """Once at start, once per run that published changes, with the right categories."""

    def test_restart_announces_again(self, start_daemon: Start, hook: tuple[Path, Path]) -> None:
        """A restart with nothing new upstream still announces once: no event is lost."""
        script, log = hook
        first = start_daemon("--on-change", str(script), HOOK_LOG=str(log))
        first.wait_for("hook.done", result="ok")
        assert first.stop() == 0
        second = start_daemon("--on-change", str(script), HOOK_LOG=str(log))
        second.wait_for("hook.done", result="ok")
        assert [c.changed for c in calls(log)] == [("blip", "esrgan"), ("blip", "esrgan")]
        assert second.stop() == 0

    def test_restart_whose_first_run_is_partly_ok_still_announces(
        self, start_daemon: Start, server: FaultServer, hook: tuple[Path, Path]
    ) -> None:
        """The hook never got a change before the stop, and after the restart another category
        keeps failing: what the first run holds is announced all the same, not once every
        category recovers (which may be days)."""
        script, log = hook
        first = start_daemon("--on-change", str(script), HOOK_LOG=str(log), HOOK_EXIT="5")
        first.wait_for("hook.done", result="failed")
        assert first.stop() == 0
        moved = json.loads(metadata(1000))
        moved["blip"]["last_updated"] = 2000
        server.script(V2_METADATA, Reply(body=json.dumps(moved).encode()))
        server.script(v2_path(C.blip), Reply(status=500))  # blip fails from now on
        second = start_daemon("--on-change", str(script), HOOK_LOG=str(log))
        second.wait_for("hook.done", result="ok", timeout=8)
        assert [c.changed for c in calls(log)][-1] == ("blip", "esrgan")  # blip legacy held
        second.wait_for("sync.run_done", count=2)  # a later run does not announce it again
        assert hook_runs(second, "ok") == 1
        assert second.stop() == 0

    def test_reload_sets_the_command_for_the_next_run(
        self,
        start_daemon: Start,
        server: FaultServer,
        hook: tuple[Path, Path],
        daemon_env: dict[str, str],
    ) -> None:
        """SIGHUP with a command in the config file: the next change runs it."""
        script, log = hook
        daemon = start_daemon(HOOK_LOG=str(log))
        daemon.wait_for("sync.run_done", ok=True)
        config = Path(daemon_env["HORDE_REPLICA_CONFIG"])
        config.write_text(f"on_change_command = {json.dumps(str(script))}\n")
        daemon.signal(signal.SIGHUP)
        (reloaded,) = daemon.wait_for("config.reloaded")
        assert reloaded["changed"] == {"on_change_command": str(script)}
        change_upstream(server, C.blip, 2000, "changed")
        daemon.signal(signal.SIGUSR1)
        daemon.wait_for("hook.done", result="ok")
        assert [c.changed for c in calls(log)] == [("blip",)]
        assert daemon.stop() == 0


class TestBadHooks:
    """A hanging, failing or missing hook is counted and logged; the daemon stays healthy."""

    def test_hanging_hook_is_killed_and_never_delays_a_sync(
        self, start_daemon: Start, tmp_path: Path
    ) -> None:
        """A hook past `on_change_timeout_seconds` is killed; syncs go on meanwhile."""
        pid_file = tmp_path / "hook.pid"
        daemon = start_hanging_hook(
            start_daemon, pid_file, HORDE_REPLICA_ON_CHANGE_TIMEOUT_SECONDS="3"
        )
        sent = time.monotonic()
        daemon.signal(signal.SIGUSR1)  # while the hook hangs
        daemon.wait_for("sync.run_done", forced=True, timeout=5)
        assert time.monotonic() - sent < 1.0
        (done,) = daemon.wait_for("hook.done", result="timeout", timeout=10)
        assert done["timeout_seconds"] == 3
        assert gone(int(pid_file.read_text()))
        assert hook_runs(daemon, "timeout") == 1
        assert daemon.get("/healthz")[0] == 200
        assert daemon.get("/readyz")[0] == 200
        assert daemon.stop() == 0

    def test_failing_hook_is_counted_logged_and_retried(
        self, start_daemon: Start, hook: tuple[Path, Path]
    ) -> None:
        """A non-zero exit is logged with its code and stderr, and retried after the next run."""
        script, log = hook
        daemon = start_daemon("--on-change", str(script), HOOK_LOG=str(log), HOOK_EXIT="5")
        (done,) = daemon.wait_for("hook.done", result="failed")
        assert done["exit_code"] == 5
        assert "reload refused: worker busy" in done["output"]
        assert hook_runs(daemon, "failed") == 1
        daemon.signal(signal.SIGUSR1)  # nothing changed, but the failed announcement is due
        daemon.wait_for("hook.done", result="failed", count=2)
        assert [c.changed for c in calls(log)] == [("blip", "esrgan"), ("blip", "esrgan")]
        assert daemon.get("/healthz")[0] == 200
        assert daemon.get("/readyz")[0] == 200
        assert daemon.stop() == 0

    def test_missing_command_is_an_error_naming_the_setting(
        self, start_daemon: Start, tmp_path: Path
    ) -> None:
        """A command that cannot start is counted as `error`, the log names the setting."""
        daemon = start_daemon("--on-change", str(tmp_path / "no-such-hook"))
        (done,) = daemon.wait_for("hook.done", result="error")
        assert "on_change_command" in done["error"]
        assert "no-such-hook" in done["error"]
        assert hook_runs(daemon, "error") == 1
        assert daemon.get("/readyz")[0] == 200
        assert daemon.stop() == 0

    def test_sigterm_during_a_hook_kills_it_within_the_bound(
        self, start_daemon: Start, tmp_path: Path
    ) -> None:
        """SIGTERM waits for a running hook up to `shutdown_timeout_seconds`, then kills it."""
        pid_file = tmp_path / "hook.pid"
        daemon = start_hanging_hook(
            start_daemon, pid_file, HORDE_REPLICA_SHUTDOWN_TIMEOUT_SECONDS="1"
        )
        deadline = time.monotonic() + 5
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline, "the hook never started"
            time.sleep(0.02)
        sent = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - sent < 4
        assert gone(int(pid_file.read_text()))


class TestCommandLine:
    """The flag, its validation, and `sync --once`."""

    def test_empty_command_exits_78_naming_the_setting(self, daemon_env: dict[str, str]) -> None:
        """`--on-change ''` is a configuration error before any I/O."""
        done = run_cli("run", "--on-change", "", env=daemon_env)
        assert done.returncode == 78
        assert "on_change_command" in done.stderr
        assert "HORDE_REPLICA_ON_CHANGE_COMMAND" in done.stderr

    def test_sync_once_runs_the_hook_when_something_changed(
        self, daemon_env: dict[str, str], hook: tuple[Path, Path], server: FaultServer
    ) -> None:
        """`sync --once` runs the hook after publishing changes, not when nothing changed,
        never in a dry run; a failing hook makes it exit 75."""
        script, log = hook
        env = {**daemon_env, "HOOK_LOG": str(log)}
        dry = run_cli("sync", "--once", "--dry-run", "--on-change", str(script), env=env)
        assert dry.returncode == 0, dry.stderr
        assert calls(log) == []
        first = run_cli("sync", "--once", "--on-change", str(script), env=env)
        assert first.returncode == 0, first.stderr
        assert [c.changed for c in calls(log)] == [("blip", "esrgan")]
        again = run_cli("sync", "--once", "--on-change", str(script), env=env)
        assert again.returncode == 0, again.stderr
        assert len(calls(log)) == 1
        change_upstream(server, C.blip, 2000, "changed")
        failing = run_cli(
            "sync", "--once", "--on-change", str(script), env={**env, "HOOK_EXIT": "2"}
        )
        assert failing.returncode == 75
        assert "on-change hook failed" in failing.stdout
        assert [c.changed for c in calls(log)][-1] == ("blip",)

    def test_sync_once_retries_a_failed_hook_at_the_next_invocation(
        self, daemon_env: dict[str, str], hook: tuple[Path, Path], server: FaultServer
    ) -> None:
        """A failed hook stays due in state.json: the next `sync --once` runs it even when
        nothing changed since, with what changed meanwhile too; a success clears it."""
        script, log = hook
        env = {**daemon_env, "HOOK_LOG": str(log)}
        argv = ("sync", "--once", "--on-change", str(script))
        state_file = Path(env["HORDE_REPLICA_REPLICA_DIR"]) / ".horde-replica-sync" / "state.json"
        assert run_cli(*argv, env=env).returncode == 0
        change_upstream(server, C.blip, 2000, "changed")
        failing = run_cli(*argv, env={**env, "HOOK_EXIT": "2"})
        assert failing.returncode == 75
        assert json.loads(state_file.read_text())["hook_due"] == ["blip"]
        unchanged = run_cli(*argv, env={**env, "HOOK_EXIT": "2"})  # still failing: still due
        assert unchanged.returncode == 75
        change_upstream(server, C.esrgan, 3000, "changed", held={C.blip: 2000})
        retried = run_cli(*argv, env=env)
        assert retried.returncode == 0, retried.stdout + retried.stderr
        assert [c.changed for c in calls(log)] == [
            ("blip", "esrgan"),
            ("blip",),
            ("blip",),
            ("blip", "esrgan"),
        ]
        assert json.loads(state_file.read_text())["hook_due"] == []
        quiet = run_cli(*argv, env=env)
        assert quiet.returncode == 0, quiet.stdout + quiet.stderr
        assert len(calls(log)) == 4


class TestCredentialsNeverReachTheHook:
    """No variable whose value carries a credential reaches the hook, whatever its case."""

    def test_upstream_url_and_lower_case_settings_are_withheld(
        self, start_daemon: Start, server: FaultServer, tmp_path: Path
    ) -> None:
        """Upstream's PRIMARY URL with `user:password@`, our settings in lower case and a
        proxy with a password: none reaches the hook; the rest of the environment does."""
        dump = tmp_path / "hook.env"
        daemon = start_daemon(
            "--on-change",
            f"sh -c 'env > {dump}'",
            HORDE_MODEL_REFERENCE_PRIMARY_API_URL=f"http://user:upstream-pw@{server.url[7:]}/api",
            horde_replica_request_timeout_seconds="5",
            horde_replica_github_url="http://tok:lower-pw@127.0.0.1:9/",
            https_proxy_unused_by_this_test="http://proxy-user:proxy-pw@proxy.test:3128",
            WORKER_SOCKET="/run/worker.sock",
        )
        daemon.wait_for("hook.done", result="ok")
        seen = dump.read_text()
        for secret in ("upstream-pw", "lower-pw", "proxy-pw"):
            assert secret not in seen, secret
        assert "horde_replica_request_timeout_seconds" not in seen.lower()
        assert "WORKER_SOCKET=/run/worker.sock" in seen
        assert "HORDE_REPLICA_CHANGED=blip,esrgan" in seen
        assert daemon.stop() == 0


class TestHookThatEditsTheReplica:
    """A hook that rewrites a published file is named as the writer, not an upstream reader."""

    def test_foreign_change_during_the_hook_names_it(
        self, start_daemon: Start, tmp_path: Path
    ) -> None:
        """The hook rewrites esrgan.json while it runs: the next run's `store.foreign_change`
        names the on-change hook (its program) as the likely cause."""
        script = tmp_path / "edit-replica.sh"
        script.write_text('#!/bin/sh\necho "{}" > "$HORDE_REPLICA_DIR/esrgan.json"\n')
        script.chmod(0o755)
        daemon = start_daemon("--on-change", str(script), HORDE_REPLICA_INTERVAL_SECONDS="1")
        daemon.wait_for("hook.done", result="ok")
        (found, *_) = daemon.wait_for("store.foreign_change", category="esrgan", layer="v2")
        assert found["files"] == ["esrgan.json"]
        assert "on-change hook" in found["likely_cause"], found
        assert str(script) in found["likely_cause"]
        assert "offline" not in found["likely_cause"]
        assert daemon.stop() == 0

    def test_a_change_while_no_hook_ran_blames_no_hook(
        self, start_daemon: Start, hook: tuple[Path, Path], tmp_path: Path
    ) -> None:
        """With a hook configured, a rewrite long after it ended still names another writer."""
        script, log = hook
        daemon = start_daemon(
            "--on-change", str(script), HOOK_LOG=str(log), HORDE_REPLICA_INTERVAL_SECONDS="1"
        )
        daemon.wait_for("hook.done", result="ok")
        time.sleep(0.5)
        (tmp_path / "replica" / "esrgan.json").write_text("{}")
        (found, *_) = daemon.wait_for("store.foreign_change", category="esrgan", layer="v2")
        assert "on-change hook" not in found["likely_cause"]
        assert "offline" in found["likely_cause"]
        assert daemon.stop() == 0
