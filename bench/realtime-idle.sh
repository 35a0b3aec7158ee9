#!/usr/bin/env bash
# Memory per idle realtime connection: raises `ulimit -n` to the hard limit,
# connects N = min(10,000, (hard - 200) / 2) sockets with one joined channel
# each, and prints the server's RSS slope from 1,000 sockets to N (target
# <= 10 KB per connection).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_node
build
ulimit -n "$(ulimit -Hn)"
hard=$(ulimit -Hn)
N=$(( (hard - 200) / 2 ))
[ "$N" -le 10000 ] || N=10000
[ "$N" -gt 1000 ] || { echo "the hard open-files limit ($hard) leaves room for only $N sockets; need more than 1,000" >&2; exit 1; }
(cd "$ROOT/bench" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
dev_workdir
start_dev
read -r at1000 atN < <(URL="$WASMBASE_URL" KEY="$PUBLISHABLE_KEY" PID="$DEV" N="$N" node "$ROOT/bench/realtime-idle.mjs")
echo "idle sockets, one channel each: RSS $((at1000 / 1024)) MB at 1,000, $((atN / 1024)) MB at $N"
awk -v a="$at1000" -v b="$atN" -v n="$N" 'BEGIN { printf "  per connection: %.1f KB (target <= 10 KB)\n", (b - a) / (n - 1000) }'
