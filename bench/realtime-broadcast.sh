#!/usr/bin/env bash
# Realtime broadcast fan-out: messages delivered per second to 1,000 sockets
# (CHANNELS=10 channels x PER=100 sockets; one sender per channel, MESSAGES=500
# each, every socket receiving every message of its channel) through
# /realtime/v1, against a minimal fan-out WebSocket server built with the same
# library in the same binary (`wasmbase bench-fanout`), same run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_node
build
ulimit -n "$(ulimit -Hn)"
(cd "$ROOT/bench" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
dev_workdir
# One sender per channel sends as fast as it can: lift the per-socket message
# rate limit (100/s by default), which would close its channel.
export WASMBASE_REALTIME_MAX_EVENTS_PER_SECOND=1000000
start_dev
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" bench-fanout --listen "127.0.0.1:$port" 2>/dev/null &
FANOUT=$!
ON_EXIT="kill $FANOUT 2>/dev/null || true"
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
run() { MODE=$1 URL=$2 KEY="$PUBLISHABLE_KEY" node "$ROOT/bench/realtime-broadcast.mjs"; }
read -r base_rate base_n want < <(run minimal "http://127.0.0.1:$port")
read -r rt_rate rt_n _ < <(run realtime "$WASMBASE_URL")
echo "broadcast to $((${CHANNELS:-10} * ${PER:-100})) sockets (${CHANNELS:-10} channels x ${PER:-100})"
echo "  /realtime/v1       : $rt_rate deliveries/s ($rt_n of $want)"
echo "  minimal fan-out    : $base_rate deliveries/s ($base_n of $want)"
echo "  ratio              : $(ratio "$rt_rate" "$base_rate") (target >= 70%)"
