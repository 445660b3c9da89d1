"""The peak memory of `sync --once` for a body of `max_body_bytes` of the smallest valid records.

What the memory limits of `systemd/*.service` (MemoryMax) and `config/compose.example.yaml`
(mem_limit) are sized from: the worst legitimate body, not the real reference (docs/bench.md).

    .venv/bin/python -m tests.harness.body_memory      # ~1 min, needs ~2 GiB free

Two runs against the fault server: the first publishes the body, the second a changed body of
the same size (the old copy is still cached then: the peak).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Final

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.config import DEFAULT_MAX_BODY_BYTES
from tests.environment import clean_env
from tests.faults.test_network_edge import peak_rss_kib
from tests.faultserver import Reply, metadata, records, running, script_primary, v2_path

MIB: Final = 1024 * 1024
MEASURED_PEAK_MIB: Final = 1433
"""The changed run's peak (VmHWM via wait4) with the default cap, measured on 2026-12-06 after
v2 was held as its bytes (1763 before)."""
RECORDS: Final = 470_000  # esrgan minimal records: 63.3 MiB, just under the default cap


def measure(count: int = RECORDS) -> tuple[int, int, int]:
    """(body bytes, first run's peak KiB, changed run's peak KiB)."""
    scratch = Path(tempfile.mkdtemp(prefix="body-memory-"))
    with running() as server:
        script_primary(server)
        body = records(C.esrgan, count, tag="a")
        assert len(body) <= DEFAULT_MAX_BODY_BYTES
        server.script(v2_path(C.esrgan), Reply(body=body))
        env = clean_env(
            HORDE_REPLICA_PRIMARY_URL=f"{server.url}/api",
            HORDE_REPLICA_REPLICA_DIR=str(scratch / "replica"),
            HORDE_REPLICA_CATEGORIES="esrgan",
            HORDE_REPLICA_GITHUB_FALLBACK="false",
            HORDE_REPLICA_LOG_LEVEL="warning",
            HORDE_REPLICA_REQUEST_TIMEOUT_SECONDS="60",
        )
        argv = [sys.executable, "-m", "horde_replica_sync", "sync", "--once"]
        code, first = peak_rss_kib(argv, env, scratch / "first.log")
        assert code == 0, (scratch / "first.log").read_text()
        for family in ("v1", "v2"):
            path = f"/api/model_references/{family}/metadata/metadata"
            server.script(path, Reply(body=metadata(2000)))
        server.script(v2_path(C.esrgan), Reply(body=records(C.esrgan, count, tag="b")))
        code, changed = peak_rss_kib(argv, env, scratch / "changed.log")
        assert code == 0, (scratch / "changed.log").read_text()
    return len(body), first, changed


if __name__ == "__main__":
    size, first, changed = measure()
    print(
        f"body {size / MIB:.1f} MiB: peak {first / 1024:.0f} MiB publishing it, "
        f"{changed / 1024:.0f} MiB replacing it"
    )
