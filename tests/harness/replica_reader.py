"""The chaos reader: a separate process that reads every replica file in a tight loop.

It must never see a partial or mixed file; what it saw is reported by digest, so the harness
checks each content against what the server served.

    python -m tests.harness.replica_reader REPLICA_DIR OUT_JSON RELPATH,RELPATH,...
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Final

from horde_replica_sync.state import SCHEMA_VERSION, ReplicaState
from horde_replica_sync.store import STATE_FILE, sha256_hex

STATE_DIR_NAME: Final = ".horde-replica-sync"
STATE_RELPATH: Final = f"{STATE_DIR_NAME}/{STATE_FILE}"


def reader_main(replica: Path, relpaths: list[str], out: Path) -> int:
    """Read every file until SIGTERM; write what was seen (and any violation) to `out`.

    A read whose bytes equal bytes already parsed is not parsed again (same bytes, same
    result), which keeps the loop tight; every distinct content is parsed and reported by
    digest, so the parent checks each one against what the server served.
    """
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parsed: dict[str, set[str]] = {rel: set() for rel in relpaths}
    present: set[str] = set()
    violations: list[str] = []
    reads = passes = 0
    started = time.monotonic()
    while not stop.is_set():
        passes += 1
        for rel in relpaths:
            try:
                content = (replica / rel).read_bytes()
            except FileNotFoundError:
                if rel in present:
                    violations.append(f"{rel} disappeared after it had been published")
                continue
            reads += 1
            present.add(rel)
            digest = sha256_hex(content)
            if digest in parsed[rel]:
                continue
            problem = parse_problem(rel, content)
            if problem is not None:
                violations.append(problem)
                continue
            parsed[rel].add(digest)
    result = {
        "reads": reads,
        "passes": passes,
        "seconds": round(time.monotonic() - started, 3),
        "seen": {rel: sorted(digests) for rel, digests in parsed.items()},
        "violations": violations,
    }
    out.write_text(json.dumps(result))
    return 0


def parse_problem(rel: str, content: bytes) -> str | None:
    """Why `content` is not a complete file of `rel`, or None when it is."""
    where = f"{rel} ({len(content)} bytes, ends {content[-24:]!r})"
    try:
        if rel == STATE_RELPATH:
            json.loads(content)
            state = ReplicaState.model_validate_json(content)
            if state.schema_version != SCHEMA_VERSION:
                return f"{where}: state schema {state.schema_version}"
            return None
        data = json.loads(content)
    except ValueError as exc:
        return f"{where}: does not parse ({str(exc)[:120]})"
    if not isinstance(data, dict) or not all(
        isinstance(r, dict) and isinstance(r.get("name"), str) for r in data.values()
    ):
        return f"{where}: not an object of named records"
    return None


def main(argv: list[str]) -> int:
    """`REPLICA_DIR OUT_JSON RELPATHS` (comma-separated); see the module docstring."""
    replica, out, relpaths = argv
    return reader_main(Path(replica), relpaths.split(","), Path(out))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
