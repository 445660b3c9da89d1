"""The on-change hook runner in-process, over real child processes and real files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog

from horde_replica_sync import logs
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.config import load_settings
from horde_replica_sync.errors import ConfigError
from horde_replica_sync.hook import (
    ChangeHook,
    HookCommand,
    HookResult,
    announce,
    hook_environment,
    run_hook,
)
from horde_replica_sync.report import LayerResult, Outcome, SyncReport
from tests.hookscript import calls, gone, overlapped, write_hook


@pytest.fixture(name="hook_env")
def _hook_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The recording script; its log file is named through the inherited environment."""
    script, log = write_hook(tmp_path)
    monkeypatch.setenv("HOOK_LOG", str(log))
    return script


def command(
    *argv: str | Path, timeout: float = 10.0, replica: Path = Path("replica")
) -> HookCommand:
    return HookCommand(tuple(str(a) for a in argv), timeout, replica)


def open_descriptors() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


class Recorder:
    """What the hook reported to its metrics."""

    def __init__(self) -> None:
        self.results: list[HookResult] = []

    def __call__(self, result: HookResult, seconds: float | None) -> None:
        self.results.append(result)


class TestOneRun:
    """`run_hook`: one call of the command, its environment and its result."""

    async def test_ok_with_changed_and_absolute_dir(self, hook_env: Path, tmp_path: Path) -> None:
        """The command sees the changed categories (catalogue order) and the absolute replica."""
        run = await run_hook(command(hook_env), {C.blip, C.esrgan})
        assert run.result is HookResult.OK
        (call,) = calls(tmp_path / "hook.log")
        assert call.changed == ("blip", "esrgan")
        assert call.replica_dir == str(Path("replica").resolve())

    async def test_non_zero_exit_is_failed_with_code_and_tail(self, hook_env: Path) -> None:
        """A non-zero exit is `failed`, with the exit code and the end of its output."""
        os.environ["HOOK_EXIT"] = "3"
        try:
            run = await run_hook(command(hook_env), {C.blip})
        finally:
            del os.environ["HOOK_EXIT"]
        assert run.result is HookResult.FAILED
        assert run.exit_code == 3
        assert "reload refused: worker busy" in run.output_tail

    async def test_output_tail_is_bounded(self) -> None:
        """A chatty command cannot fill the log: only the end of its output is kept."""
        chatty = command("sh", "-c", "yes 0123456789 | head -c 1000000; echo LAST; exit 1")
        run = await run_hook(chatty, {C.blip})
        assert run.result is HookResult.FAILED
        assert run.output_tail.endswith("LAST\n")
        assert len(run.output_tail) <= 4096

    async def test_hanging_command_is_killed_with_its_group(self, tmp_path: Path) -> None:
        """Past the timeout the whole process group is killed (a grandchild too): `timeout`."""
        pid_file = tmp_path / "grandchild.pid"
        hanging = command("sh", "-c", f"sleep 300 & echo $! > {pid_file}; wait", timeout=0.5)
        started = time.monotonic()
        run = await run_hook(hanging, {C.blip})
        assert time.monotonic() - started < 3
        assert run.result is HookResult.TIMEOUT
        assert gone(int(pid_file.read_text()))

    async def test_a_process_left_holding_the_output_takes_no_descriptor(
        self, tmp_path: Path
    ) -> None:
        """A command that leaves a process in its own session holding its output (`setsid
        cmd &`, no redirect) times out, as documented; the daemon's end of the pipe is closed
        all the same (it was kept for as long as that process lived, one per retry: a slow
        leak of descriptors until the daemon could open none)."""
        pid_file = tmp_path / "left-behind.pid"
        leaver = command("sh", "-c", f"setsid sleep 60 & echo $! > {pid_file}", timeout=0.2)
        before = open_descriptors()
        try:
            run = await run_hook(leaver, {C.blip})
            assert run.result is HookResult.TIMEOUT
            await asyncio.sleep(0.1)  # a closed pipe transport lets its descriptor go a turn later
            assert open_descriptors() == before
        finally:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)  # ours: started just above

    async def test_the_daemons_settings_are_not_passed_on(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`HORDE_REPLICA_*` are the daemon's settings, and `primary_url` may carry credentials
        (which never leave the process): the command gets the rest of the environment, and its
        own two variables."""
        monkeypatch.setenv("HORDE_REPLICA_PRIMARY_URL", "https://user:s3cr3t@primary.test/api")
        monkeypatch.setenv("HORDE_REPLICA_CHANGED", "injected")
        monkeypatch.setenv("WORKER_SOCKET", "/run/worker.sock")
        run = await run_hook(command("sh", "-c", "env; exit 1"), {C.blip})
        assert "s3cr3t" not in run.output_tail
        assert "HORDE_REPLICA_CHANGED=blip\n" in run.output_tail
        assert "injected" not in run.output_tail
        assert "WORKER_SOCKET=/run/worker.sock" in run.output_tail

    def test_credentials_are_withheld_in_any_case(self) -> None:
        """Our settings in any case, and every value with a URL's userinfo, are withheld;
        URLs without one and everything else pass."""
        environ = {
            "horde_replica_primary_url": "http://primary.test/api",
            "Horde_Replica_Interval_Seconds": "5",
            "HORDE_MODEL_REFERENCE_PRIMARY_API_URL": "https://user:pw@primary.test/api",
            "horde_model_reference_primary_api_url": "https://TOKEN@primary.test/api",
            "HTTPS_PROXY": "user:pw@proxy.test:3128",
            "MIRRORS": "https://a.test, https://u:pw@b.test",
            "HORDE_MODEL_REFERENCE_OFFLINE": "true",
            "WORKER_URL": "http://worker.test:7001/reload",
            "HTTP_PROXY": "http://proxy.test:3128",
        }
        assert hook_environment(environ) == {
            "HORDE_MODEL_REFERENCE_OFFLINE": "true",
            "WORKER_URL": "http://worker.test:7001/reload",
            "HTTP_PROXY": "http://proxy.test:3128",
        }

    async def test_missing_command_is_error_naming_the_setting(self, tmp_path: Path) -> None:
        """A command that cannot start is `error`, and the message names the setting."""
        run = await run_hook(command(tmp_path / "no-such-hook"), {C.blip})
        assert run.result is HookResult.ERROR
        assert run.error is not None
        assert "on_change_command" in run.error and "no-such-hook" in run.error

    async def test_not_executable_is_error(self, hook_env: Path) -> None:
        """A file without the execute bit is `error` too."""
        hook_env.chmod(0o644)
        run = await run_hook(command(hook_env), {C.blip})
        assert run.result is HookResult.ERROR
        assert run.error is not None and "on_change_command" in run.error

    async def test_stdin_is_dev_null(self) -> None:
        """The command reads no input from the daemon (stdin is /dev/null)."""
        run = await run_hook(command("sh", "-c", "cat; exit 4"), {C.blip})
        assert run.result is HookResult.FAILED
        assert run.output_tail == ""


# Three daemon shutdowns while a hook hangs; prints how long the slowest close() took.
STOP_WHILE_IT_RUNS = """
import asyncio, gc, sys, time
from pathlib import Path
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.hook import ChangeHook, HookCommand

sys.unraisablehook = lambda u: print("UNRAISABLE", u.exc_value)
pid_file = Path(sys.argv[1])

async def stop_while_it_runs():
    argv = ("sh", "-c", f"echo $$ > {pid_file}; exec sleep 300")
    hook = ChangeHook(HookCommand(argv, 30.0, Path("replica")))
    pid_file.write_text("")
    hook.notify({C.blip})
    while not pid_file.read_text().strip():
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await hook.close(0.3)
    return time.monotonic() - started

slowest = max(asyncio.run(stop_while_it_runs()) for _ in range(3))
gc.collect()
print(slowest)
"""


class TestChangeHook:
    """`ChangeHook`: one run at a time, changes coalesced, nothing lost, the loop never held."""

    async def test_changes_during_a_run_coalesce_into_one_follow_up(
        self, hook_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Three changes while a slow hook runs: two runs, never at once, the union last."""
        monkeypatch.setenv("HOOK_SLEEP", "0.5")
        recorder = Recorder()
        hook = ChangeHook(command(hook_env), record=recorder)
        started = time.monotonic()
        hook.notify({C.blip})
        hook.notify({C.esrgan})
        hook.notify({C.gfpgan})
        assert time.monotonic() - started < 0.1  # notify never waits for the command
        await hook.idle()
        log = tmp_path / "hook.log"
        assert [tuple(sorted(c.changed)) for c in calls(log)] == [("blip",), ("esrgan", "gfpgan")]
        assert not overlapped(log)
        assert recorder.results.count(HookResult.OK) == 2
        assert recorder.results.count(HookResult.COALESCED) == 1

    async def test_a_failed_change_is_announced_again_with_the_next(
        self, hook_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """At-least-once: a failed run's categories ride along with the next notification."""
        recorder = Recorder()
        hook = ChangeHook(command(hook_env), record=recorder)
        monkeypatch.setenv("HOOK_EXIT", "1")
        hook.notify({C.blip})
        await hook.idle()
        monkeypatch.delenv("HOOK_EXIT")
        hook.notify(set())  # the next sync run changed nothing: the failed change is retried
        await hook.idle()
        assert [c.changed for c in calls(tmp_path / "hook.log")] == [("blip",), ("blip",)]
        assert recorder.results == [HookResult.FAILED, HookResult.OK]
        hook.notify(set())
        await hook.idle()
        assert len(calls(tmp_path / "hook.log")) == 2  # delivered: nothing more to say

    async def test_no_command_does_nothing(self) -> None:
        """Without a command, notifications are dropped and nothing runs."""
        recorder = Recorder()
        hook = ChangeHook(None, record=recorder)
        hook.notify({C.blip})
        await hook.idle()
        assert recorder.results == []

    def test_close_kills_and_reaps_a_hook_past_the_bound(self, tmp_path: Path) -> None:
        """Shutdown waits for a running hook up to its bound, then kills its group and reaps
        it before returning: no child outlives the loop unaccounted for (a fresh interpreter
        runs the shutdown and reports every unraisable warning)."""
        pid_file = tmp_path / "hook.pid"
        done = subprocess.run(
            [sys.executable, "-c", STOP_WHILE_IT_RUNS, str(pid_file)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "UNRAISABLE" not in done.stdout, done.stdout
        assert float(done.stdout.split()[-1]) < 2  # seconds close() took, each time
        assert gone(int(pid_file.read_text()))

    async def test_close_lets_a_quick_hook_finish(self, hook_env: Path, tmp_path: Path) -> None:
        """A hook that ends within the bound finishes normally at shutdown."""
        recorder = Recorder()
        hook = ChangeHook(command(hook_env), record=recorder)
        hook.notify({C.blip})
        await hook.close(grace_seconds=5)
        assert recorder.results == [HookResult.OK]
        assert "end" in (tmp_path / "hook.log").read_text()


class TestLogs:
    """Each run is one `hook.done` line; the environment never appears in it."""

    async def test_failed_run_is_logged_without_the_environment(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Result, exit code and output tail are logged; a secret in the environment is not."""
        monkeypatch.setenv("WORKER_API_KEY", "s3cr3t-value")
        logs.configure(json=True)
        try:
            await run_hook(command("sh", "-c", "echo oops >&2; exit 2"), {C.blip})
        finally:
            structlog.reset_defaults()
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        (done,) = [line for line in lines if line["event"] == "hook.done"]
        assert done["result"] == "failed"
        assert done["exit_code"] == 2
        assert done["changed"] == "blip"
        assert "oops" in done["output"]
        assert "s3cr3t-value" not in json.dumps(lines)


def report(*results: LayerResult, dry_run: bool = False) -> SyncReport:
    return SyncReport(results=results, forced=False, dry_run=dry_run, duration_seconds=0.1)


def layer(category: C, outcome: Outcome) -> LayerResult:
    return LayerResult(category=category, layer=Layer.V2, outcome=outcome)


class TestAnnounce:
    """What a run tells the hook."""

    def test_updated_categories(self) -> None:
        """A run announces the categories it published."""
        run = report(layer(C.blip, Outcome.UPDATED), layer(C.esrgan, Outcome.UNCHANGED))
        assert announce(run, unannounced=()) == {C.blip}

    def test_unannounced_categories_held_are_announced(self) -> None:
        """After a start, every category present not yet announced, changed or not, even in a
        run where another failed."""
        run = report(
            layer(C.blip, Outcome.UNCHANGED),
            layer(C.esrgan, Outcome.UPDATED),
            layer(C.gfpgan, Outcome.ABSENT),
            layer(C.lora, Outcome.FAILED),
            layer(C.clip, Outcome.UNCHANGED),
        )
        assert announce(run, unannounced={C.blip, C.gfpgan, C.lora}) == {C.blip, C.esrgan}

    def test_dry_run_announces_nothing(self) -> None:
        """A dry run never runs the hook."""
        run = report(layer(C.blip, Outcome.UPDATED), dry_run=True)
        assert announce(run, unannounced=set(C)) == set()


class TestSettings:
    """`on_change_command` and `on_change_timeout_seconds` are checked at load."""

    @pytest.mark.parametrize(
        ("value", "rule"),
        [
            pytest.param("", "empty", id="empty"),
            pytest.param("   ", "empty", id="blank"),
            pytest.param("reload 'worker", "quotation", id="unbalanced-quote"),
        ],
    )
    def test_bad_command_names_the_setting(self, value: str, rule: str) -> None:
        """An empty or unparsable command is a ConfigError naming setting, env and flag."""
        with pytest.raises(ConfigError) as caught:
            load_settings(on_change_command=value)
        message = str(caught.value)
        assert "on_change_command" in message
        assert "HORDE_REPLICA_ON_CHANGE_COMMAND" in message
        assert "--on-change" in message
        assert rule in message.lower()

    def test_command_is_split_without_a_shell(self) -> None:
        """The command is split like a shell would, but no shell runs it."""
        settings = load_settings(on_change_command="systemctl reload 'horde worker'")
        assert settings.on_change_argv == ("systemctl", "reload", "horde worker")
        assert load_settings().on_change_argv is None

    @pytest.mark.parametrize("value", [0, -1, 3601, float("inf"), True])
    def test_timeout_in_range(self, value: float) -> None:
        """The timeout is finite, positive and at most an hour."""
        with pytest.raises(ConfigError, match="on_change_timeout_seconds"):
            load_settings(on_change_timeout_seconds=value)

    def test_arguments_never_shown(self) -> None:
        """The dumped config (logged, check-config) shows the program, not its arguments."""
        settings = load_settings(on_change_command="curl -H 'Authorization: Bearer tok' http://w")
        shown = settings.model_dump(mode="json")["on_change_command"]
        assert shown.startswith("curl")
        assert "tok" not in shown


class TestCommandNeverShown:
    """The hook's arguments may carry a token: `check-config` and the logs show the program."""

    def test_check_config_shows_only_the_program(self, tmp_path: Path) -> None:
        import json

        from tests.environment import clean_env
        from tests.processes import run_cli

        command = "curl -H 'Authorization: Bearer s3cr3t-hook-token' http://worker.test/reload"
        env = clean_env(HORDE_REPLICA_ON_CHANGE_COMMAND=command)
        for extra in ([], ["--json"]):
            shown = run_cli("check-config", *extra, env=env, cwd=tmp_path)
            assert shown.returncode == 0, shown.stderr
            assert "s3cr3t-hook-token" not in shown.stdout + shown.stderr
            assert "curl (+3 arguments, not shown)" in shown.stdout
        assert json.loads(shown.stdout)["on_change_command"]["value"].startswith("curl")
