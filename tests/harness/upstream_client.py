#!/usr/bin/env python
"""Upstream's own replica client, timed phase by phase for the bench (tests/harness/bench.py).

Runs under the peer venv's Python (>= 3.12, `horde-model-reference` 8.6.2 installed), never
ours. Upstream builds its settings and singletons from the environment at import time, so the
environment is set first, then the package is imported:

    HORDE_MODEL_REFERENCE_REPLICATE_MODE=REPLICA   (HTTPBackend: the PRIMARY's v2/v1 API)
    HORDE_MODEL_REFERENCE_PRIMARY_API_URL=<url>    (including /api)
    HORDE_MODEL_REFERENCE_ENABLE_GITHUB_FALLBACK=false
    AIWORKER_CACHE_HOME=<cache dir>                (where HTTPBackend persists v2 files)

    $PEER_VENV/bin/python tests/harness/upstream_client.py URL CACHE_DIR LEGACY_CATEGORIES

Protocol (so the parent can read the PRIMARY's access log between phases): one JSON line on
stdout per phase, and before each phase the script waits for a line on stdin.

    {"phase": "ready", ...}     manager created (imports done), nothing fetched by us yet
    {"phase": "cold", ...}      every category's v2 + the legacy JSON of LEGACY_CATEGORIES
    {"phase": "refresh", ...}   the same again with force_refresh / redownload: upstream has
                                no change detection, so a refresh after the TTL is exactly this
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _rss_kib() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _emit(phase: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"phase": phase, **fields, **_rss_kib()}) + "\n")
    sys.stdout.flush()


def _wait_for_go() -> None:
    if not sys.stdin.readline():
        raise SystemExit(0)  # the parent went away


def main(argv: list[str]) -> int:
    """Create the REPLICA manager, then time a cold fetch and a full refresh."""
    url, cache, legacy_names = argv[1], argv[2], argv[3]
    os.environ.update(
        AIWORKER_CACHE_HOME=cache,
        LOGS_FOLDER=str(Path(cache) / "logs"),
        HAIDRA_USE_DEFAULT_ENV_FILES="0",
        HORDE_MODEL_REFERENCE_AUDIT__ENABLED="false",
        HORDE_MODEL_REFERENCE_REPLICATE_MODE="REPLICA",
        HORDE_MODEL_REFERENCE_PRIMARY_API_URL=url,
        HORDE_MODEL_REFERENCE_ENABLE_GITHUB_FALLBACK="false",
    )
    started = time.perf_counter()
    from loguru import logger  # type: ignore[import-not-found]  # the peer venv has it

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    from horde_model_reference import (  # type: ignore[import-not-found]  # the peer venv
        MODEL_REFERENCE_CATEGORY,
        ModelReferenceManager,
    )

    manager = ModelReferenceManager()
    backend: Any = manager.backend
    legacy = [MODEL_REFERENCE_CATEGORY(name) for name in legacy_names.split(",") if name]
    _emit(
        "ready",
        backend=type(backend).__name__,
        seconds=time.perf_counter() - started,
        cpu_seconds=_cpu(),
    )

    for phase, force in (("cold", False), ("refresh", True)):
        _wait_for_go()
        cpu, wall = _cpu(), time.perf_counter()
        v2 = backend.fetch_all_categories(force_refresh=force)
        v2_seconds = time.perf_counter() - wall
        texts = {c.value: backend.get_legacy_json_string(c, redownload=force) for c in legacy}
        _emit(
            phase,
            seconds=time.perf_counter() - wall,
            v2_seconds=v2_seconds,
            cpu_seconds=_cpu() - cpu,
            v2_loaded=sum(1 for data in v2.values() if data is not None),
            legacy_loaded=sum(1 for text in texts.values() if text is not None),
            legacy_bytes=sum(len(text.encode()) for text in texts.values() if text is not None),
        )
    _wait_for_go()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
