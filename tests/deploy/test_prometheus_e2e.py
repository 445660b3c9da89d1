"""Real Prometheus scrapes a real daemon, evaluates config/alerts.yml, sees the replica go stale."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from tests.deploy.conftest import CONFIG_DIR, clean_env, http_get, require_tool
from tests.environment import daemon_env, free_port
from tests.faultserver import FaultServer, Reply, v1_path, v2_path
from tests.processes import DaemonProcess

ALERTS: Final = CONFIG_DIR / "alerts.yml"
JOB: Final = "horde-replica-sync"
STALE_AFTER: Final = 4  # seconds: the test's stand-in for the 7200 s bound
FIRING_WITHIN: Final = 40.0
CATEGORIES: Final = (C.esrgan, C.blip)
T = TypeVar("T")


def fast_rules(tmp_path: Path) -> Path:
    """A copy of alerts.yml with 1 s `for:` durations and a STALE_AFTER staleness bound."""
    text = ALERTS.read_text(encoding="utf-8")
    text, durations = re.subn(r"^(\s*for:) \S+$", r"\1 1s", text, flags=re.MULTILINE)
    text, bounds = re.subn(
        r"(horde_replica_staleness_seconds\{[^}]*\} > )7200\b", rf"\g<1>{STALE_AFTER}", text
    )
    assert durations >= 1 and bounds == 1, "alerts.yml changed shape: update fast_rules()"
    path = tmp_path / "alerts-fast.yml"
    path.write_text(text, encoding="utf-8")
    return path


class Prometheus:
    """Debian's prometheus on 127.0.0.1, scraping one target every second."""

    def __init__(self, tmp_path: Path, target: str, rules: Path) -> None:
        config = {  # JSON is YAML: no YAML library needed
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "scrape_timeout": "1s",
            },
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }
        config_file = tmp_path / "prometheus.yml"
        config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    require_tool("prometheus"),
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(),
            )

    def api(self, path: str, **params: str) -> Any:
        """GET an API path; its `data`."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = http_get(f"{self.url}{path}{query}")
        assert status == 200, f"{path}: {status} {body}"
        return json.loads(body)["data"]

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: (labels, value) per series."""
        data = self.api("/api/v1/query", query=promql)
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def alerts(self, name: str, state: str) -> list[dict[str, Any]]:
        """Active alerts called `name` in `state` (pending or firing)."""
        return [
            a
            for a in self.api("/api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] == name and a["state"] == state
        ]

    def ready(self) -> bool:
        """Whether /-/ready answers 200."""
        try:
            return http_get(f"{self.url}/-/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def eventually(what: str, probe: Callable[[], T | None], timeout: float, log: Path) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.25)
    pytest.fail(f"{what} not within {timeout} s; prometheus log:\n{log.read_text()[-2000:]}")


@pytest.fixture(name="daemon")
def _daemon(primary: FaultServer, tmp_path: Path) -> Iterator[DaemonProcess]:
    env = daemon_env(
        primary.url,
        tmp_path,
        HORDE_REPLICA_CATEGORIES=",".join(c.value for c in CATEGORIES),
        HORDE_REPLICA_INTERVAL_SECONDS="1",
        HORDE_REPLICA_MAX_STALENESS_SECONDS=str(STALE_AFTER),
        # Short, so that during the outage cached layers expire and their fetches fail too
        # (within the TTL a metadata outage alone only shows as staleness).
        HORDE_REPLICA_CACHE_TTL_SECONDS="2",
        HORDE_REPLICA_REQUEST_TIMEOUT_SECONDS="2",
    )
    daemon = DaemonProcess([], env)
    yield daemon
    daemon.close()


@pytest.fixture(name="prometheus")
def _prometheus(daemon: DaemonProcess, tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path, f"127.0.0.1:{daemon.port}", fast_rules(tmp_path))
    try:
        eventually("prometheus ready", server.ready, 20, server.log)
        yield server
    finally:
        server.stop()


def break_primary(server: FaultServer) -> None:
    """The PRIMARY answers 500 to metadata and data alike."""
    for family in ("v1", "v2"):
        server.script(f"/api/model_references/{family}/metadata/metadata", Reply(500))
    for category in CATEGORIES:
        server.script(v2_path(category), Reply(500))
        server.script(v1_path(category), Reply(500))


class TestPrometheusEndToEnd:
    """Scraped every second, the metrics reach Prometheus and the stale alert fires."""

    def test_metrics_then_stale_alert(
        self, daemon: DaemonProcess, prometheus: Prometheus, primary: FaultServer
    ) -> None:
        """Healthy: fresh layers, hits and misses; PRIMARY down: HordeReplicaStale fires."""
        daemon.wait_for("sync.run_done", ok=True)
        esrgan = f'category="esrgan", layer="v2", job="{JOB}"'

        def fresh() -> list[tuple[dict[str, str], float]] | None:
            found = prometheus.query(f"horde_replica_staleness_seconds{{{esrgan}}}")
            return found if found and 0 <= found[0][1] < STALE_AFTER else None

        eventually("a fresh staleness sample", fresh, 15, prometheus.log)

        def cache_counts() -> tuple[float, float] | None:
            hits = prometheus.query(f'sum(horde_replica_cache_hits_total{{job="{JOB}"}})')
            misses = prometheus.query(f'sum(horde_replica_cache_misses_total{{job="{JOB}"}})')
            if hits and misses and hits[0][1] >= 1 and misses[0][1] >= 1:
                return hits[0][1], misses[0][1]
            return None

        _, misses = eventually("cache hits and misses", cache_counts, 15, prometheus.log)
        assert misses >= len(CATEGORIES)  # the cold run fetched every category's v2 layer
        assert prometheus.query(f'up{{job="{JOB}"}}')[0][1] == 1
        # Whatever the first scrapes said (NaN before the first sync), healthy means silent.
        eventually(
            "HordeReplicaStale resolved while healthy",
            lambda: (
                not prometheus.alerts("HordeReplicaStale", "firing")
                and not prometheus.alerts("HordeReplicaStale", "pending")
            ),
            10,
            prometheus.log,
        )

        break_primary(primary)
        broken_at = time.monotonic()
        firing = eventually(
            "HordeReplicaStale firing",
            lambda: prometheus.alerts("HordeReplicaStale", "firing"),
            FIRING_WITHIN,
            prometheus.log,
        )
        elapsed = time.monotonic() - broken_at
        layers = {(a["labels"]["category"], a["labels"]["layer"]) for a in firing}
        assert ("esrgan", "v2") in layers or ("blip", "v2") in layers
        alert = firing[0]
        assert alert["labels"]["severity"] == "critical"
        assert {"summary", "description", "runbook"} <= set(alert["annotations"])
        stale = prometheus.query(f"horde_replica_staleness_seconds{{{esrgan}}}")
        assert stale and not math.isnan(stale[0][1]) and stale[0][1] > STALE_AFTER
        # The expired layers' fetches fail: most runs fail, and the rule sees it.
        eventually(
            "HordeReplicaSyncFailing firing",
            lambda: prometheus.alerts("HordeReplicaSyncFailing", "firing"),
            FIRING_WITHIN - elapsed,
            prometheus.log,
        )

        # Every metric the alerts use exists for real (names cannot drift apart silently).
        used = set(re.findall(r"\b(horde_replica_\w+)", ALERTS.read_text(encoding="utf-8")))
        scraped = {
            labels["__name__"]
            for labels, _ in prometheus.query(
                'count by (__name__) ({__name__=~"horde_replica_.*"})'
            )
        }
        assert used <= scraped, f"alerts use metrics the daemon does not export: {used - scraped}"
        assert daemon.stop() == 0
