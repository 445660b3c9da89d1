"""`/readyz`, the staleness metric and `status` read one record of confirmations and agree."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.faultserver import FaultServer, Reply
from tests.processes import DaemonProcess, run_cli

Start = Callable[..., DaemonProcess]
METADATA = ("v1", "v2")


def status_of(daemon_env: dict[str, str]) -> dict[str, Any]:
    """`horde-replica-sync status --json` with the daemon's own settings."""
    out = run_cli("status", "--json", env=daemon_env, timeout=30)
    document: dict[str, Any] = json.loads(out.stdout)
    return document


def views(daemon: DaemonProcess, daemon_env: dict[str, str]) -> tuple[int, float, dict[str, Any]]:
    """(/readyz status, esrgan v2 staleness, esrgan v2 status row), read back to back."""
    ready, _ = daemon.get("/readyz")
    age = daemon.sample("horde_replica_staleness_seconds", category="esrgan", layer="v2")
    assert age is not None
    rows = status_of(daemon_env)["layers"]
    row = next(r for r in rows if (r["category"], r["layer"]) == ("esrgan", "v2"))
    return ready, age, row


class TestOneStalenessRule:
    """With a cache TTL far above max staleness, metadata polls keep every view fresh."""

    def test_fresh_then_stale_in_all_three(
        self, start_daemon: Start, server: FaultServer, daemon_env: dict[str, str]
    ) -> None:
        """Polls confirm: all say fresh past max staleness; PRIMARY down: all say stale."""
        env = {
            "HORDE_REPLICA_CACHE_TTL_SECONDS": "3600",
            "HORDE_REPLICA_MAX_STALENESS_SECONDS": "3",
            "HORDE_REPLICA_INTERVAL_SECONDS": "1",
        }
        daemon_env = {**daemon_env, **env}
        daemon = start_daemon(**env)
        daemon.wait_for("sync.run_done", ok=True)
        time.sleep(4.5)  # longer than max staleness: only the polls keep it fresh
        daemon.wait_for("sync.run_done", count=len(daemon.matching("sync.run_done")) + 1)
        ready, age, row = views(daemon, daemon_env)
        assert ready == 200
        assert age < 3
        assert row["problem"] is None and row["age_seconds"] < 3, row
        assert row["fetched_seconds_ago"] >= 4, row  # downloaded once, at the start
        for family in METADATA:
            server.script(f"/api/model_references/{family}/metadata/metadata", Reply(500))
        time.sleep(4.5)
        ready, age, row = views(daemon, daemon_env)
        assert ready == 503
        assert age > 3
        assert row["problem"] is not None and "stale" in row["problem"], row
        assert daemon.stop() == 0
