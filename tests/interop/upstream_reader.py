"""Load a replica directory with the REAL upstream reader, every category in one process.

Runs in the peer venv (`$PEER_VENV/bin/python upstream_reader.py DIR CACHE_HOME`), never in
ours (CACHE_HOME: an empty scratch folder for upstream's own cache home):

* v2: `ModelReferenceManager(offline=True, base_path=DIR)` (upstream's LocalReadOnlyBackend)
  reads each category; upstream re-keys records by their `name`, so the names are what it
  loaded.
* legacy: every file under DIR/legacy is strictly validated record by record with upstream's
  own legacy pydantic models.

Upstream builds its settings from the environment at import time, so the environment is set
first: offline, audit off, the PRIMARY URL pointed at a dead local port, GitHub fallback off,
and every proxy pointed at a dead local port as well, so nothing can reach the network.

Prints one JSON object on stdout:
    {"backend": str,
     "v2": {category: sorted record names | null},
     "legacy": {category: {"count": int, "invalid": [record keys]} | null},
     "cache_files": [files upstream wrote under its own cache home]}
and exits 0 (a category that fails to load shows up as null, for the test to judge).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

DEAD_URL = "http://127.0.0.1:9"  # discard port: nothing listens there
LEGACY_FILES = {"image_generation": "stable_diffusion.json", "text_generation": "db.json"}


def _prepare_env(cache_home: Path) -> None:
    os.environ.update(
        AIWORKER_CACHE_HOME=str(cache_home),
        LOGS_FOLDER=str(cache_home / "logs"),
        HAIDRA_USE_DEFAULT_ENV_FILES="0",
        HORDE_MODEL_REFERENCE_OFFLINE="true",
        HORDE_MODEL_REFERENCE_REPLICATE_MODE="REPLICA",
        HORDE_MODEL_REFERENCE_AUDIT__ENABLED="false",
        HORDE_MODEL_REFERENCE_PRIMARY_API_URL=f"{DEAD_URL}/api",
        HORDE_MODEL_REFERENCE_ENABLE_GITHUB_FALLBACK="false",
        HORDE_MODEL_REFERENCE_GITHUB_SEED_ENABLED="false",
        HTTP_PROXY=DEAD_URL,
        HTTPS_PROXY=DEAD_URL,
        ALL_PROXY=DEAD_URL,
        NO_PROXY="",
    )


def _legacy_report(replica: Path, category: Any, pydantic: Any, legacy_type: Any) -> Any:
    path = replica / "legacy" / LEGACY_FILES.get(category.value, f"{category.value}.json")
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    invalid = []
    for key, record in data.items():
        try:
            legacy_type(category).model_validate(record)
        except pydantic.ValidationError:
            invalid.append(key)
    return {"count": len(data), "invalid": invalid}


def main(argv: list[str]) -> int:
    """Read the replica at argv[1] (cache home argv[2]) and print what upstream makes of it."""
    replica = Path(argv[1]).resolve()
    cache_home = Path(argv[2]).resolve()
    cache_home.mkdir(parents=True, exist_ok=True)
    _prepare_env(cache_home)

    loguru = importlib.import_module("loguru")
    loguru.logger.remove()
    loguru.logger.add(sys.stderr, level="WARNING")
    pydantic = importlib.import_module("pydantic")
    hmr = importlib.import_module("horde_model_reference")
    legacy_models = importlib.import_module("horde_model_reference.legacy.classes.legacy_models")

    manager = hmr.ModelReferenceManager(offline=True, base_path=str(replica))
    v2: dict[str, list[str] | None] = {}
    legacy: dict[str, Any] = {}
    for category in hmr.MODEL_REFERENCE_CATEGORY:
        ref = manager.get_model_reference_or_none(category)
        v2[category.value] = None if ref is None else sorted(ref)
        legacy[category.value] = _legacy_report(
            replica, category, pydantic, legacy_models.get_legacy_model_type
        )
    result = {
        "backend": type(manager.backend).__name__,
        "v2": v2,
        "legacy": legacy,
        "cache_files": sorted(str(p.relative_to(cache_home)) for p in cache_home.rglob("*")),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
