"""The on-change hook: run the operator's command after a run published changes.

    run published X --notify(X)--> pending |= X --(none running)--> run_hook(pending)
                                        ^                                  |
                                        \\---- not ok: X due again at ---/
                                               the next notify (at-least-once)

One command at a time, never awaited by the sync loop (a task on the daemon's loop). Changes
that arrive while it runs wait as one follow-up with the union of their categories. The command
is an argv (`shlex.split` at config load, no shell), started in its own session with stdin
/dev/null and the daemon's environment, its own HORDE_REPLICA_* settings (any case) and every
value carrying a credential withheld, plus HORDE_REPLICA_CHANGED / HORDE_REPLICA_DIR; past its
timeout its whole process group is killed.
Each run is one `hook.done` log line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import os
import signal
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from horde_replica_sync.catalogs import ALL_NAMES, Name
from horde_replica_sync.config import ENV_PREFIX, Settings, describe_setting
from horde_replica_sync.redact import carries_credentials
from horde_replica_sync.report import SyncReport

log = structlog.get_logger(__name__)

OUTPUT_TAIL_BYTES: Final = 4096  # what of the command's output a log line carries
KILL_GRACE_SECONDS: Final = 2.0  # for a killed group's exit (and its output's end) to be seen
RUNS_REMEMBERED: Final = 8  # hook runs whose times are kept to explain a foreign change
MTIME_SLACK_SECONDS: Final = 0.05  # file times come from a coarse kernel clock
SETTING: Final = describe_setting("on_change_command")


class HookResult(enum.StrEnum):
    """How one hook run ended (a bounded metric label)."""

    OK = "ok"  # exit 0
    FAILED = "failed"  # a non-zero exit (or killed by a signal)
    TIMEOUT = "timeout"  # killed past on_change_timeout_seconds
    ERROR = "error"  # could not be started (not found, not executable)
    COALESCED = "coalesced"  # not a run: a change that joined a follow-up already waiting


@dataclass(frozen=True, slots=True)
class HookCommand:
    """What to run, for how long at most, and the replica it is told about."""

    argv: tuple[str, ...]
    timeout_seconds: float
    replica_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> HookCommand | None:
        """The configured command, or None when there is none."""
        if settings.on_change_argv is None:
            return None
        return cls(
            settings.on_change_argv, settings.on_change_timeout_seconds, settings.replica_dir
        )


@dataclass(frozen=True, slots=True)
class HookRun:
    """One finished run of the command."""

    result: HookResult
    changed: str  # what HORDE_REPLICA_CHANGED said
    duration_seconds: float
    exit_code: int | None = None
    output_tail: str = ""  # the end of its stdout and stderr (merged), when it ran
    error: str | None = None  # why it could not start


def announce(report: SyncReport, *, unannounced: Collection[Name]) -> frozenset[Name]:
    """The categories a run tells the hook about: what it published, and what it holds of those
    `unannounced` since the daemon started (so a restart never loses a change, even while
    another category keeps failing). Never a dry run."""
    if report.dry_run:
        return frozenset()
    return frozenset(report.changed) | frozenset(c for c in report.held if c in unannounced)


def changed_value(categories: Collection[Name]) -> str:
    """HORDE_REPLICA_CHANGED: comma-separated, in the catalogue's order."""
    return ",".join(c.value for c in ALL_NAMES if c in categories)


async def run_hook(command: HookCommand, changed: Collection[Name]) -> HookRun:
    """Run the command once for `changed`, within its timeout; log and return the result."""
    started = time.monotonic()
    value = changed_value(changed)
    try:
        proc, output = await _spawn(command, value)
    except OSError as exc:
        error = f"cannot run {command.argv[0]!r} ({SETTING}): {exc.strerror or exc}"
        return _logged(HookRun(HookResult.ERROR, value, time.monotonic() - started, error=error))
    try:
        code, tail = await _finish(proc, output, command.timeout_seconds)
    except asyncio.CancelledError:  # the daemon is stopping and the bound is spent
        _kill_group(proc)
        with contextlib.suppress(TimeoutError):  # reap it, so no process outlives its record
            await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE_SECONDS)
        log.warning("hook.killed", changed=value, reason="daemon stopping")
        raise
    seconds = time.monotonic() - started
    if code is None:
        result = HookResult.TIMEOUT
    else:
        result = HookResult.OK if code == 0 else HookResult.FAILED
    return _logged(HookRun(result, value, seconds, exit_code=code, output_tail=tail), command)


async def _spawn(command: HookCommand, changed: str) -> tuple[asyncio.subprocess.Process, int]:
    """The started command and the read end of its output pipe.

    The pipe is ours, not asyncio's: a process the command leaves in another session may hold
    the other end for ever, and asyncio would keep its end open (a descriptor per run) as long.
    """
    env = {
        **hook_environment(os.environ),
        "HORDE_REPLICA_CHANGED": changed,
        "HORDE_REPLICA_DIR": str(command.replica_dir.resolve()),
    }
    output, write_end = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *command.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_end,
            stderr=write_end,
            env=env,
            start_new_session=True,  # its own process group, so a timeout kills all of it
        )
    except BaseException:
        os.close(output)
        raise
    finally:
        os.close(write_end)
    return proc, output


def hook_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What the command inherits: the daemon's environment without its own settings (in any
    case: names are case-insensitive to us) and without any value carrying a credential (a
    URL's `user:password@`, e.g. upstream's `HORDE_MODEL_REFERENCE_PRIMARY_API_URL`)."""
    kept, withheld = {}, []
    for name, value in environ.items():
        if name.upper().startswith(ENV_PREFIX) or carries_credentials(name, value):
            withheld.append(name)
        else:
            kept[name] = value
    if withheld:  # names only: they are no secret, and they explain a hook missing one
        log.debug("hook.environment_withheld", variables=sorted(withheld))
    return kept


async def _finish(
    proc: asyncio.subprocess.Process, output: int, bound_seconds: float
) -> tuple[int | None, str]:
    """Wait for the exit and the end of `output`; past `bound_seconds` kill the group.

    Returns (exit code or None on timeout, output tail). A process left behind that still holds
    the output counts as the hook still running: detach it (`setsid cmd >/dev/null 2>&1 &`).
    `output` is closed on return, whoever still holds its other end.
    """
    stream = asyncio.StreamReader()
    pipe, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(output, "rb", buffering=0)
    )
    reader = asyncio.create_task(_tail(stream))
    exited = asyncio.create_task(proc.wait())
    both = {reader, exited}
    try:
        _, running = await asyncio.wait(both, timeout=bound_seconds)
        timed_out = bool(running)
        if timed_out:
            _kill_group(proc)
            _, running = await asyncio.wait(both, timeout=KILL_GRACE_SECONDS)
    finally:
        for task in both:
            task.cancel()
        pipe.close()
    tail = reader.result() if reader.done() and not reader.cancelled() else b""
    code = None if timed_out else proc.returncode
    return code, tail.decode("utf-8", errors="replace")


async def _tail(stream: asyncio.StreamReader) -> bytes:
    kept = bytearray()
    while chunk := await stream.read(65536):
        kept += chunk
        del kept[:-OUTPUT_TAIL_BYTES]
    return bytes(kept)


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)


def _logged(run: HookRun, command: HookCommand | None = None) -> HookRun:
    fields: dict[str, object] = {
        "result": run.result.value,
        "changed": run.changed,
        "duration_seconds": round(run.duration_seconds, 3),
    }
    if run.result is HookResult.OK:
        log.info("hook.done", **fields)
        return run
    if run.result is HookResult.ERROR:
        log.error("hook.done", **fields, error=run.error)
        return run
    if run.result is HookResult.TIMEOUT and command is not None:
        fields["timeout_seconds"] = command.timeout_seconds
        fields["killed"] = "process group"
    else:
        fields["exit_code"] = run.exit_code
    log.warning("hook.done", **fields, output=run.output_tail)
    return run


Recorder = Callable[[HookResult, float | None], None]


def _ignore(result: HookResult, seconds: float | None) -> None:
    """The recorder of a hook nobody counts (`sync --once`)."""


class ChangeHook:
    """Runs the command for each change, one run at a time, without losing a change.

    `notify` never waits: it starts a run, or adds to the one follow-up waiting behind the
    run in flight. A run that did not succeed leaves its categories due; they join the next
    notification (the daemon notifies after every sync run, so a failure is retried then).
    """

    def __init__(self, command: HookCommand | None, *, record: Recorder = _ignore) -> None:
        self.command = command  # replaced on a config reload; takes effect at the next run
        self._record = record
        self._pending: set[Name] = set()
        self._due: set[Name] = set()  # announced, not yet delivered
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Wall-clock [start, end] of the last runs (end None while running): a file whose
        # mtime falls in one was likely written by the hook (see `ran_at`).
        self._windows: collections.deque[list[float | None]] = collections.deque(
            maxlen=RUNS_REMEMBERED
        )

    @property
    def _program(self) -> str:
        return self.command.argv[0] if self.command is not None else "(removed by a reload)"

    def notify(self, changed: Iterable[Name]) -> None:
        """Tell the hook about `changed` (and retry what is still due)."""
        if self.command is None or self._closing:
            return
        fresh = set(changed) | self._due
        self._due.clear()
        if not fresh:
            return
        if self._task is not None and not self._task.done():
            if self._pending:
                self._record(HookResult.COALESCED, None)
                log.debug("hook.coalesced", changed=changed_value(fresh))
            self._pending |= fresh
            return
        fresh |= self._pending  # left over if a reload had removed the command
        self._pending.clear()
        self._task = asyncio.create_task(self._drain(self.command, fresh))

    async def _drain(self, command: HookCommand, changed: set[Name]) -> None:
        """Run for `changed`, then for what piled up meanwhile, until nothing is waiting."""
        while True:
            window: list[float | None] = [time.time(), None]  # wall clock: compared with mtimes
            self._windows.append(window)
            try:
                run = await run_hook(command, changed)
            except Exception:  # a bug here must not end the hook for good
                log.exception("hook.crashed", changed=changed_value(changed))
                run = HookRun(HookResult.ERROR, changed_value(changed), 0.0)
            finally:
                window[1] = time.time()
            self._record(run.result, run.duration_seconds)
            if run.result is not HookResult.OK:
                self._due |= changed
            if not self._pending or self.command is None or self._closing:
                return
            command, changed, self._pending = self.command, self._pending, set()

    def ran_at(self, moment: float) -> str | None:
        """The program of the command if one of its recent runs was under way at the wall
        time `moment` (a file's mtime), else None. Only the program: arguments may hold a
        token."""
        for start, end in self._windows:
            assert start is not None
            if start - MTIME_SLACK_SECONDS <= moment <= (end or time.time()) + MTIME_SLACK_SECONDS:
                return self._program
        return None

    async def idle(self) -> None:
        """Wait until no run is in flight or waiting."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    async def close(self, grace_seconds: float) -> None:
        """Stop: let a run in flight finish within `grace_seconds`, else kill it; drop the rest.

        What is dropped is announced again at the next start (every category held)."""
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            _, running = await asyncio.wait({task}, timeout=grace_seconds)
            if running:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._pending or self._due:
            log.info("hook.dropped", changed=changed_value(self._pending | self._due))
