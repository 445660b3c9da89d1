#!/usr/bin/env bash
# `make demo`, fully offline: the real upstream PRIMARY (horde-model-reference 8.6.2, from
# ../shared/peer) on 127.0.0.1, one `sync --once` into a worker's cache home, `status`, then
# the daemon itself until Ctrl-C (DEMO_SECONDS=N: SIGTERM after N s). Everything lives in
# DEMO_DIR (default: a new /tmp/hrs-demo.XXXX), left for you to look at.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${HRS_SHARED_DIR:-../shared}
BIN=${BIN:-.venv/bin}
DEMO_DIR=${DEMO_DIR:-$(mktemp -d /tmp/hrs-demo.XXXX)}
free_port() { "$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
echo "== the upstream PRIMARY 8.6.2 on 127.0.0.1:$port (data in $DEMO_DIR/primary)"
pid=$(PEER_DATA_DIR="$DEMO_DIR/primary" "$SHARED/peer/start_primary.sh" "$port" 2>/dev/null)
trap '"$SHARED/peer/stop_primary.sh" "$pid" >/dev/null 2>&1 || true' EXIT

# The daemon's settings: the PRIMARY above, no GitHub (offline), the replica in a worker's
# cache home, metrics on a free port. Nothing else: no config file is read.
export AIWORKER_CACHE_HOME="$DEMO_DIR/worker-cache"
export HORDE_REPLICA_PRIMARY_URL="http://127.0.0.1:$port/api"
export HORDE_REPLICA_GITHUB_FALLBACK=false
export HORDE_REPLICA_CONFIG=/dev/null
metrics=127.0.0.1:$(free_port)
export HORDE_REPLICA_METRICS_ADDR=$metrics

echo "== horde-replica-sync sync --once"
"$BIN/horde-replica-sync" sync --once 2>&1 | grep -v '^{' || true
echo "== horde-replica-sync status"
"$BIN/horde-replica-sync" status | cut -c1-110
echo "== workers read it with:"
echo "   AIWORKER_CACHE_HOME=$AIWORKER_CACHE_HOME HORDE_MODEL_REFERENCE_OFFLINE=true HORDE_MODEL_REFERENCE_AUDIT__ENABLED=false"
echo "== horde-replica-sync run (metrics: http://$metrics/metrics; Ctrl-C stops it)"
if [ -n "${DEMO_SECONDS:-}" ]; then
    timeout --signal=TERM "$DEMO_SECONDS" "$BIN/horde-replica-sync" run || [ $? = 124 ]
else
    "$BIN/horde-replica-sync" run || true
fi
