"""What upstream's offline reader makes of each record of a replica's v2 files.

Runs in the peer venv (`$PEER_VENV/bin/python upstream_verdict.py DIR CACHE_HOME`), never in
ours, with the same offline environment as `upstream_reader.py` (imported from beside this
file). `ModelReferenceManager(offline=True, base_path=DIR)` reads every category; upstream
validates each record with its category's model and drops those that fail, re-keying the rest
by `name`.

Prints one JSON object on stdout:
    {category: {record name: number of download entries upstream sees} | null}
(null: upstream loaded nothing for the category) and exits 0.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Read the replica at argv[1] (cache home argv[2]) and print upstream's verdicts."""
    replica = Path(argv[1]).resolve()
    cache_home = Path(argv[2]).resolve()
    cache_home.mkdir(parents=True, exist_ok=True)
    importlib.import_module("upstream_reader")._prepare_env(cache_home)

    loguru = importlib.import_module("loguru")
    loguru.logger.remove()
    loguru.logger.add(sys.stderr, level="ERROR")
    hmr = importlib.import_module("horde_model_reference")

    manager = hmr.ModelReferenceManager(offline=True, base_path=str(replica))
    verdicts: dict[str, dict[str, int] | None] = {}
    for category in hmr.MODEL_REFERENCE_CATEGORY:
        ref = manager.get_model_reference_or_none(category)
        verdicts[category.value] = (
            None if ref is None else {name: record.download_count for name, record in ref.items()}
        )
    print(json.dumps(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
