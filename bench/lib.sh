# Shared by bench scripts: build, start servers, run wrk, print figures.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbase-target}"
# WASMBASE_BIN: measure that binary instead of building this checkout (A/B runs).
BIN="${WASMBASE_BIN:-$CARGO_TARGET_DIR/release/wasmbase}"
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-64}"

need_wrk() {
  command -v wrk >/dev/null && return
  [ "$(id -u)" = 0 ] || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
}

# need_rust (the wasm32-wasip2 target for the guests), die, say, apt_install.
source "$ROOT/scripts/lib.sh"

build() {
  need_rust
  [ -n "${WASMBASE_BIN:-}" ] && return
  (cd "$ROOT" && cargo build --release --locked -p wasmbase >&2)
}

need_h2load() {
  command -v h2load >/dev/null && return
  apt_install nghttp2-client
}

# http_rps URL [header...] -> prints "req/s p50 p99" (latencies as "1.23ms").
# h2load (HTTP/1.1, one thread, CONNS connections) with its per-request log:
# the percentiles are of every request's own time. (wrk's were not: at 8
# connections its mean latency times its rate came to ~37 requests in flight,
# which 8 connections without pipelining cannot have; see docs/PERFORMANCE.md.)
# POST_BODY=file makes each request a POST of that file.
http_rps() {
  local url=$1; shift
  local args=() log out
  for h in "$@"; do args+=(-H "$h"); done
  [ -z "${POST_BODY:-}" ] || args+=(-d "$POST_BODY")
  log=$(mktemp)
  out=$(h2load --h1 -t1 -c"$CONNS" -D"${DURATION%s}" --log-file="$log" "${args[@]}" "$url" 2>&1) ||
    { echo "$out" >&2; rm -f "$log"; exit 1; }
  local rps bad
  rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  # Non-2xx answers, failed and errored requests: none allowed.
  bad=$(awk '$1 == "status" && $2 == "codes:" {s += $5 + $7 + $9}
             $1 == "requests:" {s += $12 + $14} END {print s + 0}' <<<"$out")
  [ "${bad:-0}" = 0 ] || { echo "h2load saw non-2xx answers on $url: $(grep 'status codes' <<<"$out")" >&2; rm -f "$log"; exit 1; }
  # Third field: the request's time in microseconds.
  awk '{print $3}' "$log" | sort -n | awk -v rps="$rps" '
    { v[NR] = $1 }
    END { p50 = v[int((NR - 1) * 0.50) + 1]; p99 = v[int((NR - 1) * 0.99) + 1]
          printf "%s %.2fms %.2fms\n", rps, p50 / 1000, p99 / 1000 }'
  rm -f "$log"
}

# wait_http URL: until it answers 200 (bounded)
wait_http() {
  for _ in $(seq 1 600); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2; exit 1
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", 100 * a / b }'; }

# pgb SCRIPT [pgbench args] -> "tps p50_ms p99_ms" against $PGURL with $PGBENCH,
# $CLIENTS clients for $DURATION, temp files under $work (latencies from a per-transaction
# log, `pgbench -l`, of the same run; pgbench's errors are shown, not swallowed)
# The server's role-and-claims statement (host-api `db::SET_PRINCIPAL`), for
# pgbench scripts of the same work (variables role, claims, timeout).
SET_PRINCIPAL_SQL="SELECT set_config('role', :role, true), set_config('request.jwt.claims', :claims, true), set_config('request.jwt.claim.sub', coalesce((:claims)::json ->> 'sub', ''), true), set_config('request.jwt.claim.role', coalesce((:claims)::json ->> 'role', ''), true), set_config('statement_timeout', :timeout, true);"

pgb() {
  local script=$1 out logs; shift
  logs=$(mktemp -d "$work/pgblog.XXXXXX")
  out=$(cd "$logs" && "$PGBENCH" -n -M prepared -c "$CLIENTS" -j 1 -T "${DURATION%s}" -l --log-prefix="$logs/log" "$@" -f "$script" "$PGURL" 2>&1) || { echo "$out" >&2; return 1; }
  local tps
  tps=$(awk '/^tps/ {print $3; exit}' <<<"$out")
  # Third field of each log line: the transaction's latency in microseconds.
  cat "$logs"/log* | awk '{print $3}' | sort -n | awk -v tps="$tps" '
    { v[NR] = $1 }
    END { if (NR == 0) { print tps, "?", "?"; exit }
          p50 = v[int((NR - 1) * 0.50) + 1]; p99 = v[int((NR - 1) * 0.99) + 1]
          printf "%s %.2fms %.2fms\n", tps, p50 / 1000, p99 / 1000 }'
}

# dev_workdir: a temp dir $work (reachable by the cluster user, so the cluster
# lives and dies in it), removed with the server on exit; $ON_EXIT (if set) runs
# first, for helpers a script started.
dev_workdir() {
  work=$(mktemp -d)
  chmod 755 "$work"
  trap 'eval "${ON_EXIT:-}"; if [ -n "${DEV:-}" ]; then kill -TERM "$DEV" 2>/dev/null && wait "$DEV" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
}

# start_dev: `wasmbase dev` in $work (project migrations from $work/db/migrations),
# no auth rate limits; sources its .wasmbase/env, waits for /ready, sets DEV,
# PGURL and PGBENCH.
start_dev() {
  (cd "$work" && WASMBASE_SERVER_LISTEN=127.0.0.1:0 WASMBASE_LOG_LEVEL=warn \
    WASMBASE_AUTH_RATE_LIMIT_IP_PER_MINUTE=0 WASMBASE_AUTH_RATE_LIMIT_EMAIL_PER_MINUTE=0 \
    exec "$BIN" dev >/dev/null 2>"$work/dev.log") &
  DEV=$!
  for _ in $(seq 1 600); do [ -s "$work/.wasmbase/env" ] && break; sleep 0.1; done
  set -a; source "$work/.wasmbase/env"; set +a
  wait_http "$WASMBASE_URL/ready"
  PGURL="$DATABASE_URL"
  PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | tail -1)
}

json() { python3 -c "import sys,json; print(json.load(sys.stdin)$1)"; }
api() { curl -fsS -H "apikey: $PUBLISHABLE_KEY" -H "content-type: application/json" "$@"; }

# bench_user: signs up (or in) bench@example.com; sets ACCESS, USER_ID, CLAIMS (the
# token's payload, as the server sends request.jwt.claims) and AUTH (the headers).
bench_user() {
  api "$WASMBASE_URL/auth/v1/signup" -d '{"email":"bench@example.com","password":"bench-password"}' >"$work/session.json"
  if ! json "['access_token']" <"$work/session.json" >/dev/null 2>&1; then
    api "$WASMBASE_URL/auth/v1/token?grant_type=password" -d '{"email":"bench@example.com","password":"bench-password"}' >"$work/session.json"
  fi
  ACCESS=$(json "['access_token']" <"$work/session.json")
  USER_ID=$(json "['user']['id']" <"$work/session.json")
  CLAIMS=$(python3 -c "import sys,json,base64; p=sys.argv[1].split('.')[1]; p+='='*(-len(p)%4); print(json.dumps(json.loads(base64.urlsafe_b64decode(p)), separators=(',', ':')))" "$ACCESS")
  AUTH=("apikey: $PUBLISHABLE_KEY" "Authorization: Bearer $ACCESS")
}

# now: seconds since the epoch, with nanoseconds; mbps T0 T1: $SIZE_MB over the span.
now() { date +%s.%N; }
mbps() { awk -v mb="$SIZE_MB" -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", mb / (b - a) }'; }

# refresh_lua FILE: a wrk script rotating one refresh token per thread (the
# tokens are the lines of $TOKENS), each answer's new token used next.
refresh_lua() {
  cat >"$1" <<'LUA'
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local counter = 0
function setup(thread) counter = counter + 1; thread:set("token", tokens[counter]) end
function init(args) end
function request()
  return wrk.format("POST", "/auth/v1/token?grant_type=refresh_token",
    { ["apikey"] = os.getenv("PUBLISHABLE_KEY"), ["content-type"] = "application/json" },
    '{"refresh_token":"' .. token .. '"}')
end
function response(status, headers, body)
  if status == 200 then token = string.match(body, '"refresh_token":"([0-9a-f]+)"') or token end
end
LUA
}
