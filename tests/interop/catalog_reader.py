"""What upstream's REAL offline reader makes of a replica's side catalogs (peer venv only).

`$PEER_VENV/bin/python catalog_reader.py DIR CACHE_HOME` builds
`ModelReferenceManager(offline=True, base_path=DIR)` (environment as upstream_reader.py sets
it: offline, nothing reachable) and prints one JSON object:

    {"baselines": manager.image_baseline_store.export(),
     "text_guidance": manager.text_guidance_store.export(),
     "licensing": {"metadata": ..., "licenses": [definitions], "assets": [non-model assets]}}

each as upstream dumps it (`model_dump(mode="json")`). Where DIR lacks a catalog, upstream
silently reads the copy packaged in its wheel: that is what the test must rule out.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a sibling script, not a package
_prepare_env = importlib.import_module("upstream_reader")._prepare_env


def main(argv: list[str]) -> int:
    """Read the catalogs of the replica at argv[1] (cache home argv[2]) and print them."""
    replica, cache_home = Path(argv[1]).resolve(), Path(argv[2]).resolve()
    cache_home.mkdir(parents=True, exist_ok=True)
    _prepare_env(cache_home)
    loguru = importlib.import_module("loguru")
    loguru.logger.remove()
    loguru.logger.add(sys.stderr, level="WARNING")
    hmr = importlib.import_module("horde_model_reference")
    manager = hmr.ModelReferenceManager(offline=True, base_path=str(replica))
    licensing = manager.licensing_store
    print(
        json.dumps(
            {
                "baselines": manager.image_baseline_store.export().model_dump(mode="json"),
                "text_guidance": manager.text_guidance_store.export().model_dump(mode="json"),
                "licensing": {
                    "metadata": licensing.metadata().model_dump(mode="json"),
                    "licenses": [d.model_dump(mode="json") for d in licensing.list_definitions()],
                    "assets": [a.model_dump(mode="json") for a in licensing.list_assets()],
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
