#!/usr/bin/env bash
# /health through the full pipeline (CORS, request id, security headers, metrics,
# timeout) vs a raw hyper hello served by the same binary, same run, same h2load
# settings (-t1 -c64 -d10s). Also prints idle RSS of `wasmbase dev` (PostgreSQL's
# processes excluded).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_h2load
build
work=$(mktemp -d)
chmod 755 "$work" # reachable by the cluster user, so the cluster lives (and dies) in it
cleanup() {
  [ -n "${DEV:-}" ] && kill -TERM "$DEV" 2>/dev/null && wait "$DEV" 2>/dev/null || true
  [ -n "${HELLO:-}" ] && kill "$HELLO" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$work" && WASMBASE_SERVER_LISTEN=127.0.0.1:0 WASMBASE_LOG_LEVEL=warn exec "$BIN" dev >/dev/null 2>"$work/dev.log") &
DEV=$!
for _ in $(seq 1 600); do [ -s "$work/.wasmbase/env" ] && break; sleep 0.1; done
url=$(sed -n 's/^WASMBASE_URL=//p' "$work/.wasmbase/env")
wait_http "$url/ready"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" bench-hello --listen "127.0.0.1:$port" 2>/dev/null &
HELLO=$!
wait_http "http://127.0.0.1:$port/"

sleep 2
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$DEV/status")

read -r base_rps base_p50 base_p99 < <(http_rps "http://127.0.0.1:$port/")
read -r rps p50 p99 < <(http_rps "$url/health")

echo "raw hyper hello : $base_rps req/s  p50 $base_p50  p99 $base_p99"
echo "wasmbase /health: $rps req/s  p50 $p50  p99 $p99"
echo "ratio           : $(ratio "$rps" "$base_rps") of raw hyper (target >= 70%)"
echo "idle RSS of wasmbase dev: $((rss_kb / 1024)) MB (target <= 40 MB, PostgreSQL excluded)"
