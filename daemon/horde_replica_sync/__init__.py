"""horde-replica-sync: keeps a local replica of the AI Horde model reference fresh."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("horde-replica-sync")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
