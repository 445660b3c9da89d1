"""The engine is pure of HTTP: its modules import neither httpx nor tenacity."""

from __future__ import annotations

import subprocess
import sys

ENGINE = ("chain", "evidence", "ports", "catalog_sync", "sync")
HTTP_LIBRARIES = ("httpx", "httpcore", "tenacity")


def test_the_engine_imports_no_http_library() -> None:
    """A fresh interpreter importing the engine's modules holds no HTTP client or retry library.

    The engine's data types live in `ports.py`; only `sources/` and the composition root
    (`runtime.py`) speak HTTP, so the engine runs over fakes without them.
    """
    imports = "; ".join(f"import horde_replica_sync.{module}" for module in ENGINE)
    check = f"import sys; loaded = sorted(m for m in {HTTP_LIBRARIES!r} if m in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", f"{imports}; {check}; print(loaded); assert not loaded, loaded"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
