"""Run a REAL downstream consumer of the replica, exactly as a worker would, and report.

Runs in the consumer's own venv (the peer venv for upstream's reader, the horde-sdk venv for
horde-sdk), never in ours, and sets NO environment of its own: the test hands it exactly the
environment the README tells workers to set, inside an empty network namespace, over a
read-only bind mount of the replica.

    python consumer_probe.py upstream PORT     every category through ModelReferenceManager()
    python consumer_probe.py sdk PORT          horde-sdk's ImageModelLoadResolver

PORT is the real PRIMARY's port on the host: the probe shows it cannot reach it (nor anything).
Prints one JSON object on stdout and exits 0; the test judges it:
    {"interfaces": [names], "primary_reachable": bool, "backend": str, "base_path": str,
     "replica_writable": bool, "loaded": {...}, "written": [paths under AIWORKER_CACHE_HOME]}
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

NETWORK_ERRORS = (errno.ENETUNREACH, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL)


def _reachable(port: int) -> bool:
    """Whether 127.0.0.1:port (the host's PRIMARY) answers a TCP connect from here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno in NETWORK_ERRORS or isinstance(exc, TimeoutError):
                return False
            raise
        return True


def _writable(directory: Path) -> bool:
    """Whether a file can be created in `directory` (it is removed again)."""
    probe = directory / ".consumer-probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _upstream(manager: Any, categories: Any) -> dict[str, Any]:
    """Record names per category, as upstream loads them (None: did not load)."""
    loaded: dict[str, Any] = {}
    for category in categories:
        ref = manager.get_model_reference_or_none(category)
        loaded[category.value] = None if ref is None else sorted(ref)
    return loaded


def _sdk(manager: Any) -> dict[str, Any]:
    """What horde-sdk's worker-side resolver makes of the reference."""
    model_meta = importlib.import_module("horde_sdk.worker.model_meta")
    clients = importlib.import_module("horde_sdk.ai_horde_api.ai_horde_clients")
    resolver = model_meta.ImageModelLoadResolver(manager)
    client = clients.AIHordeAPIManualClient()  # needed by the signature; only TOP/BOTTOM use it
    baselines = (
        "stable_diffusion_1",
        "stable_diffusion_2_512",
        "stable_diffusion_2_768",
        "stable_diffusion_xl",
        "stable_cascade",
        "flux_1",
    )
    instructions = (
        "all sd15",
        "all sd21",
        "all sdxl",
        "all sfw",
        "all nsfw",
        "all inpainting",
        "all models",
    )
    return {
        "all": sorted(resolver.resolve_all_model_names()),
        "sfw": sorted(resolver.resolve_all_sfw_model_names()),
        "nsfw": sorted(resolver.resolve_all_nsfw_model_names()),
        "inpainting": sorted(resolver.resolve_all_inpainting_models()),
        "baselines": {b: sorted(resolver.resolve_all_models_of_baseline(b)) for b in baselines},
        "meta": {
            i: sorted(resolver.resolve_meta_instructions([i], client, load_large_models=True))
            for i in instructions
        },
        "newest_3": resolver.resolve_newest_n_model_names(3),
    }


def main(argv: list[str]) -> int:
    """Run the consumer named by argv[1]; argv[2] is the host PRIMARY's port."""
    mode, port = argv[1], int(argv[2])
    cache_home = Path(os.environ["AIWORKER_CACHE_HOME"])
    replica = cache_home / "horde_model_reference"
    before = _files(cache_home)

    if mode == "sdk":
        importlib.import_module("horde_sdk")  # what a worker imports first (it loads .env)
    loguru = importlib.import_module("loguru")
    loguru.logger.remove()
    loguru.logger.add(sys.stderr, level="WARNING")
    hmr = importlib.import_module("horde_model_reference")

    manager = hmr.ModelReferenceManager()  # built from the environment alone, like a worker's
    result: dict[str, Any] = {
        "interfaces": sorted(name for _, name in socket.if_nameindex()),
        "primary_reachable": _reachable(port),
        "backend": type(manager.backend).__name__,
        "base_path": str(Path(manager.backend.base_path).resolve())
        if hasattr(manager.backend, "base_path")
        else None,
        "replica_writable": _writable(replica),
    }
    if mode == "upstream":
        result["loaded"] = _upstream(manager, hmr.MODEL_REFERENCE_CATEGORY)
    elif mode == "sdk":
        result["loaded"] = _sdk(manager)
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    result["written"] = sorted(_files(cache_home) - before)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
