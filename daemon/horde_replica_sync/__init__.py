"""horde-replica-sync: keeps a local replica of the AI Horde model reference fresh."""

from __future__ import annotations

import functools

# Looked up on first use: importlib.metadata costs ~60 ms, and the console script's first line
# (`early`, which imports this package) must come before it so start-up signals are held.
__version__: str


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _installed_version()
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


@functools.cache
def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # see above

    try:
        return version("horde-replica-sync")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"
