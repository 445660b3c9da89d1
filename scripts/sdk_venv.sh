#!/usr/bin/env bash
# Provision the venv of the real horde-sdk consumer the interop tests drive:
# horde-sdk 0.33.3 with upstream horde-model-reference 8.6.2 (the two install together;
# horde-sdk needs an upstream ModelReferenceManager, >=8.4,<9). Needs Python >= 3.12, so it
# lives in its own venv, cached like the peer's, outside the checkout. scripts/reader_venv.sh
# builds it, like every reader's.
#
# Usage: scripts/sdk_venv.sh            prints the venv's python on stdout (only that)
# Environment: SDK_VENV   (default ${XDG_CACHE_HOME:-$HOME/.cache}/horde-sdk-consumer/venv)
#              SDK_PYTHON (a Python >= 3.12; default: python3.12, python3.13, a pyenv one)
# Exits non-zero, saying why on stderr, when the venv cannot be created.
set -euo pipefail

READER_VENV="${SDK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/horde-sdk-consumer/venv}" \
READER_PYTHON="${SDK_PYTHON:-}" \
    exec bash "$(dirname "$0")/reader_venv.sh" horde-sdk-0.33.3
