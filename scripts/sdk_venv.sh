#!/usr/bin/env bash
# Provision the venv of the real horde-sdk consumer the interop tests drive:
# horde-sdk 0.33.3 with upstream horde-model-reference 8.6.2 (the two install together;
# horde-sdk needs an upstream ModelReferenceManager, >=8.4,<9). Needs Python >= 3.12, so it
# lives in its own venv, cached like the peer's, outside the checkout.
#
# Usage: scripts/sdk_venv.sh            prints the venv's python on stdout (only that)
# Environment: SDK_VENV   (default ${XDG_CACHE_HOME:-$HOME/.cache}/horde-sdk-consumer/venv)
#              SDK_PYTHON (a Python >= 3.12; default: python3.12, python3.13, a pyenv one)
# Exits non-zero, saying why on stderr, when the venv cannot be created.
set -euo pipefail

SDK_VERSION=0.33.3
HMR_VERSION=8.6.2
VENV="${SDK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/horde-sdk-consumer/venv}"
STAMP="$VENV/.installed-horde-sdk-$SDK_VERSION-hmr-$HMR_VERSION"

log() { printf '[sdk_venv] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ -f "$STAMP" ] && "$VENV/bin/python" -c 'import horde_sdk.worker.model_meta' 2>/dev/null; then
    printf '%s\n' "$VENV/bin/python"
    exit 0
fi

PY="${SDK_PYTHON:-}"
if [ -z "$PY" ]; then
    PYENV_ROOT_DIR="$(pyenv root 2>/dev/null || printf '%s' "${PYENV_ROOT:-$HOME/.pyenv}")"
    for cand in python3.12 python3.13 "$PYENV_ROOT_DIR"/versions/3.12*/bin/python3 \
                "$PYENV_ROOT_DIR"/versions/3.13*/bin/python3 python3; do
        if command -v "$cand" >/dev/null 2>&1 &&
           "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
            PY="$cand"; break
        fi
    done
fi
[ -n "$PY" ] || die "no Python >= 3.12 found (set SDK_PYTHON)"

log "creating $VENV with $PY: horde-sdk==$SDK_VERSION horde-model-reference==$HMR_VERSION"
started=$(date +%s)
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV" || die "$PY -m venv $VENV failed"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "horde-sdk==$SDK_VERSION" "horde-model-reference==$HMR_VERSION" >&2 \
    || die "pip install horde-sdk==$SDK_VERSION horde-model-reference==$HMR_VERSION failed"
"$VENV/bin/python" -c 'import horde_sdk.worker.model_meta' >&2 \
    || die "horde_sdk.worker.model_meta does not import in $VENV"
touch "$STAMP"
log "ready in $(( $(date +%s) - started )) s"
printf '%s\n' "$VENV/bin/python"
