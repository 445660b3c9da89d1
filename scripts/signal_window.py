"""How long after `Popen` a `run` daemon starts holding SIGHUP (the start-up window left).

    python -m scripts.signal_window --trials 20

Polls /proc/PID/status until SigCgt shows SIGHUP caught; prints min, median and max.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIGHUP_BIT = 1 << (signal.SIGHUP - 1)


def caught_after(env: dict[str, str]) -> float | None:
    """Seconds from Popen until SIGHUP is caught; None when the process ended first."""
    argv = [sys.executable, "-m", "horde_replica_sync", "run", "--metrics-addr", "127.0.0.1:0"]
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status = Path(f"/proc/{proc.pid}/status")
    try:
        while proc.poll() is None:
            mask = next(x for x in status.read_text().splitlines() if x.startswith("SigCgt:"))
            if int(mask.split()[1], 16) & SIGHUP_BIT:
                return time.monotonic() - started
            time.sleep(0.0005)  # leave the CPU to the child: it is what is being timed
        return None
    finally:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args(argv)
    found = []
    for _ in range(args.trials):
        with tempfile.TemporaryDirectory() as replica:
            env = {
                **os.environ,
                "HORDE_REPLICA_REPLICA_DIR": replica,
                "HORDE_REPLICA_PRIMARY_URL": "http://127.0.0.1:9/api",  # nothing listens
                "HORDE_REPLICA_GITHUB_FALLBACK": "false",
            }
            if (seconds := caught_after(env)) is not None:
                found.append(seconds * 1000)
    if not found:
        sys.stdout.write("the daemon never started\n")
        return 1
    sys.stdout.write(
        f"SIGHUP caught {min(found):.0f} / {statistics.median(found):.0f} / {max(found):.0f} ms"
        f" (min / median / max of {len(found)}) after Popen; load {os.getloadavg()[0]:.2f}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
