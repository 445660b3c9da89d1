"""A real on-change hook for tests: a shell script that records every call in a log file.

Each call appends `start <HORDE_REPLICA_CHANGED> <HORDE_REPLICA_DIR> <pid>` and, when done,
`end`; a call that starts while another is still running appends `OVERLAP`. `HOOK_SLEEP`
(seconds) makes it slow, `HOOK_EXIT` makes it fail with that code after writing to stderr.
"""

from __future__ import annotations

import stat
import time
from dataclasses import dataclass
from pathlib import Path

SCRIPT = """#!/bin/sh
log="$HOOK_LOG"
if ! mkdir "$log.running" 2>/dev/null; then echo OVERLAP >> "$log"; fi
echo "start $HORDE_REPLICA_CHANGED $HORDE_REPLICA_DIR $$" >> "$log"
sleep "${HOOK_SLEEP:-0}"
echo "end" >> "$log"
rmdir "$log.running"
if [ -n "$HOOK_EXIT" ]; then echo "reload refused: worker busy" >&2; exit "$HOOK_EXIT"; fi
"""


@dataclass(frozen=True)
class Call:
    """One recorded call of the hook."""

    changed: tuple[str, ...]
    replica_dir: str
    pid: int


def write_hook(directory: Path) -> tuple[Path, Path]:
    """The executable script and the log file it appends to (named by `$HOOK_LOG`)."""
    script = directory / "on-change.sh"
    script.write_text(SCRIPT, encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, directory / "hook.log"


def calls(log: Path) -> list[Call]:
    """The calls recorded so far, in order (started ones, finished or not)."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text(encoding="utf-8").splitlines():
        if line.startswith("start "):
            _, changed, replica, pid = line.split(" ")
            found.append(Call(tuple(changed.split(",")), replica, int(pid)))
    return found


def overlapped(log: Path) -> bool:
    """Whether two calls ever ran at once."""
    return log.exists() and "OVERLAP" in log.read_text(encoding="utf-8").splitlines()


def wait_for_calls(log: Path, count: int, timeout: float = 15.0) -> list[Call]:
    """Wait until `count` calls started; fail with what was seen otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = calls(log)
        if len(found) >= count:
            return found
        time.sleep(0.02)
    seen = log.read_text(encoding="utf-8") if log.exists() else "(no log)"
    raise AssertionError(f"{count} hook calls expected within {timeout} s, saw:\n{seen}")


def alive(pid: int) -> bool:
    """Whether process `pid` still exists (and is not a zombie)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def gone(pid: int, within: float = 2.0) -> bool:
    """Whether process `pid` is gone, waiting up to `within` seconds for it to go."""
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
