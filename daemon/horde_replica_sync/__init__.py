"""horde-replica-sync: keeps a local replica of the AI Horde model reference fresh."""

from __future__ import annotations

# The one place the version lives: hatch reads it for the wheel ([tool.hatch.version]),
# image/build.sh for the image's labels, CHANGELOG.md's newest release must match it
# (tests/deploy/test_install.py). A literal: no importlib.metadata cost before `early` runs.
__version__ = "0.2.0"
