#!/usr/bin/env bash
# JS functions speed, each figure next to a baseline from the same run:
#  1. h2load on POST /fn/hello-ts (functions/hello-ts, built by the server
#     itself: a fresh instance of its snapshot per request) vs workerd serving
#     the equivalent Worker (bench/workerd/hello.js), same h2load settings.
#  2. The same on POST /fn/hello-ts-warm: a copy of hello-ts with `reuse = 1000`.
#  3. POST /fn/hello (the Rust example) in the same run, for the JS/Rust ratio.
#  4. Instantiation and whole-call time without HTTP (`wasmbase bench-instantiate`
#     on hello-ts's directory, and on hello.wasm), when the binary's
#     bench-instantiate can build a JS function; the component's size with it.
#  5. Idle RSS of a server with 10 JS functions loaded vs one with none.
#  6. A JS function moved into the watched functions directory of a running
#     `dev` → its first 200.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_h2load
build
command -v npm >/dev/null || apt_install nodejs npm
(cd "$ROOT/bench/workerd" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
# The platform's native binary itself (not a Node wrapper around it, whose pid
# would be the one stopped).
WORKERD=$(cd "$ROOT/bench/workerd" && node -p 'require("workerd").default')
# Bound on the wait for a server's functions to answer (JS builds run one at a time).
WAIT_SECS="${WAIT_SECS:-300}"

work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  for p in ${DEV:-} ${WD:-} ${NODE2:-}; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# dev_in DIR [VAR=VALUE...]: `wasmbase dev` in DIR (its own embedded PostgreSQL,
# functions from DIR/functions, no cargo builds; JS functions are built by the
# server); sets DEV (its pid), URL, KEY (publishable) and SECRET once /ready.
dev_in() {
  local dir=$1; shift
  (cd "$dir" && exec env WASMBASE_SERVER_LISTEN=127.0.0.1:0 WASMBASE_LOG_LEVEL=warn \
    WASMBASE_FUNCTIONS_BUILD=false "$@" "$BIN" dev >/dev/null 2>"$dir/dev.log") &
  DEV=$!
  for _ in $(seq 1 600); do [ -s "$dir/.wasmbase/env" ] && break; sleep 0.1; done
  # shellcheck disable=SC1091
  read -r URL KEY SECRET < <(set -a; source "$dir/.wasmbase/env"; echo "$WASMBASE_URL $PUBLISHABLE_KEY $SECRET_KEY")
  wait_http "$URL/ready"
}
# stop_dev: stops the server dev_in started.
stop_dev() {
  kill -TERM "$DEV" 2>/dev/null || true
  wait "$DEV" 2>/dev/null || true
  DEV=
}
# wait_fn NAME: until POST /fn/NAME answers 200 (bounded by WAIT_SECS).
wait_fn() {
  local code err end=$((SECONDS + WAIT_SECS))
  while [ $SECONDS -lt $end ]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "apikey: $KEY" -H "Content-Type: application/json" \
      -X POST -d '{"a":1}' "$URL/fn/$1")
    [ "$code" = 200 ] && return
    # 404 once loading is over: the function failed to build or load (say why).
    if [ "$code" = 404 ]; then
      err=$(curl -fsS -H "apikey: $SECRET" "$URL/admin/v1/functions" | python3 -c '
import sys, json
for f in json.load(sys.stdin)["functions"]:
    if f["name"] == sys.argv[1] and not f.get("serving") and f.get("error"):
        print(f["error"])' "$1") || err=
      [ -z "$err" ] || die "$1 was not loaded: $err"
    fi
    sleep 0.1
  done
  cat "$work"/*/dev.log >&2
  die "$1 never served (status $code)"
}
# js_copy DEST NAME [LINE]: functions/hello-ts as function NAME in DEST, with
# LINE (a top-level key) added to its function.toml before any [table].
js_copy() {
  mkdir -p "$1"
  cp "$ROOT/functions/hello-ts/index.ts" "$1/"
  sed "s/^name = \"hello-ts\"/name = \"$2\"/" "$ROOT/functions/hello-ts/function.toml" |
    awk -v line="${3:-}" 'line != "" && !done && /^\[/ { print line; done = 1 } { print }
                          END { if (line != "" && !done) print line }' >"$1/function.toml"
  # The load is $CONNS connections at once; a function admits 32 calls at a
  # time by default and answers 503 function_busy past that (a fresh JS call
  # yields to the others at every epoch tick, so under load more than 32 can be
  # in flight). The cap is raised to the load so that the figure is
  # throughput, not admission.
  printf '\n[limits]\nmax_concurrency = %s\n' "$CONNS" >>"$1/function.toml"
}
# first_200 URL [FROM TO]: milliseconds until POST URL answers 200 (polled
# every 5 ms), counted from now, or from renaming FROM to TO when given;
# "timeout" after WAIT_SECS.
first_200() {
  python3 - "$1" "$KEY" "$WAIT_SECS" "${2:-}" "${3:-}" <<'PY'
import os, sys, time, urllib.request
url, key, wait, src, dst = sys.argv[1:]
t0 = time.monotonic()
if src:
    os.rename(src, dst)
while True:
    try:
        r = urllib.request.urlopen(urllib.request.Request(url, data=b'{"a":1}', method="POST",
                                   headers={"apikey": key, "content-type": "application/json"}))
        if r.status == 200:
            break
    except Exception:
        pass
    if time.monotonic() - t0 > float(wait):
        print("timeout"); sys.exit(0)
    time.sleep(0.005)
print(f"{(time.monotonic() - t0) * 1000:.0f}")
PY
}
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

# --- Throughput: hello-ts, hello-ts-warm, Rust hello; workerd ---
GUESTS="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbase-target}/guests"
(cd "$ROOT/functions/hello" && CARGO_TARGET_DIR="$GUESTS" cargo build --target wasm32-wasip2 --release --quiet --locked)
mkdir -p "$work/a/functions/hello"
cp "$ROOT/functions/hello/function.toml" "$work/a/functions/hello/"
cp "$GUESTS/wasm32-wasip2/release/hello.wasm" "$work/a/functions/hello/hello.wasm"
js_copy "$work/a/functions/hello-ts" hello-ts
js_copy "$work/a/functions/hello-ts-warm" hello-ts-warm "reuse = 1000"
dev_in "$work/a" WASMBASE_FUNCTIONS_WATCH=false
wait_fn hello
wait_fn hello-ts
wait_fn hello-ts-warm
# hello-ts's answer, to compare with the Worker's (no user: only the publishable key is sent).
got=$(curl -fsS -H "apikey: $KEY" -H "Content-Type: application/json" -d '{"a":1}' "$URL/fn/hello-ts")

port=$(free_port)
(cd "$ROOT/bench/workerd" && exec "$WORKERD" serve config.capnp --socket-addr "http=127.0.0.1:$port" \
  >"$work/workerd.log" 2>&1) &
WD=$!
wd_url="http://127.0.0.1:$port/"
for _ in $(seq 1 300); do curl -fs -o /dev/null -X POST -d '{}' "$wd_url" && break; sleep 0.1; done
wd_got=$(curl -fsS -H "Content-Type: application/json" -d '{"a":1}' "$wd_url") ||
  { cat "$work/workerd.log" >&2; die "workerd did not answer"; }
norm() { python3 -c 'import sys,json; print(json.dumps(json.load(sys.stdin), separators=(",", ":"), sort_keys=True))'; }
[ "$(norm <<<"$got")" = "$(norm <<<"$wd_got")" ] ||
  die "hello-ts and the Worker answer differently: $got vs $wd_got"

echo '{"a":1}' >"$work/post.json"
post() { POST_BODY="$work/post.json" http_rps "$@" "Content-Type: application/json"; }
read -r wd_rps wd_p50 wd_p99 < <(post "$wd_url")
read -r rs_rps rs_p50 rs_p99 < <(post "$URL/fn/hello" "apikey: $KEY")
read -r js_rps js_p50 js_p99 < <(post "$URL/fn/hello-ts" "apikey: $KEY")
read -r jw_rps jw_p50 jw_p99 < <(post "$URL/fn/hello-ts-warm" "apikey: $KEY")
kill -TERM "$WD" 2>/dev/null || true
wait "$WD" 2>/dev/null || true
WD=

# Component size: the admin list, if it ever carries one (it lists name,
# source, versions and serving today).
size=$(curl -fsS -H "apikey: $SECRET" "$URL/admin/v1/functions" | python3 -c '
import sys, json
for f in json.load(sys.stdin)["functions"]:
    if f["name"] == "hello-ts":
        for k in ("size", "size_bytes", "component_size", "bytes"):
            if f.get(k) is not None:
                print(f"{f[k]} bytes (GET /admin/v1/functions)")
                break
' || true)

# --- Deploy → serving on a second node of the same database: `wasmbase
# deploy` builds a copy of hello-ts and uploads it to the first node; the
# time runs from the upload's answer to the second node's first 200. ---
ENVF="$work/a/.wasmbase/env"
DBURL=$(set -a; source "$ENVF"; echo "$DATABASE_URL")
JWTS=$(set -a; source "$ENVF"; echo "$JWT_SECRET")
devpw() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/a/.wasmbase/dev.json" "$1"; }
port2=$(free_port)
mkdir -p "$work/node2"
(cd "$work/node2" && DATABASE_URL="$DBURL" WASMBASE_SERVER_LISTEN="127.0.0.1:$port2" \
  WASMBASE_AUTH_JWT_SECRET="$JWTS" WASMBASE_AUTH_DEV_MAILBOX=true WASMBASE_LOG_LEVEL=warn \
  WASMBASE_DATABASE_AUTHENTICATOR_PASSWORD="$(devpw authenticator_password)" \
  WASMBASE_DATABASE_AUTH_PASSWORD="$(devpw auth_password)" \
  WASMBASE_DATABASE_FUNCTIONS_PASSWORD="$(devpw functions_password)" \
  exec "$BIN" serve >/dev/null 2>"$work/node2.log") &
NODE2=$!
for _ in $(seq 1 600); do curl -fs -o /dev/null "http://127.0.0.1:$port2/ready" && break; sleep 0.1; done
curl -fs -o /dev/null "http://127.0.0.1:$port2/ready" || { cat "$work/node2.log" >&2; die "the second node did not start"; }
js_copy "$work/d/functions/fresh-js" fresh-js
(cd "$work/d" && "$BIN" deploy fresh-js --url "$URL" --key "$SECRET" >"$work/deploy.out" 2>&1) ||
  { cat "$work/deploy.out" >&2; die "wasmbase deploy failed"; }
deploy_ms=$(first_200 "http://127.0.0.1:$port2/fn/fresh-js")
kill -TERM "$NODE2" 2>/dev/null || true
wait "$NODE2" 2>/dev/null || true
NODE2=
stop_dev

# --- Without HTTP: bench-instantiate (hello.wasm; hello-ts's directory when
# this binary can build a JS function there) ---
inst_rs=$("$BIN" bench-instantiate "$work/a/functions/hello/hello.wasm" 2>"$work/inst-rs.err")
if inst_js=$("$BIN" bench-instantiate "$work/a/functions/hello-ts" 2>"$work/inst-js.err"); then
  [ -n "$size" ] || size=$(grep -o 'component [0-9]* KiB' <<<"$inst_js" | awk '{print $2 " KiB (bench-instantiate)"}')
else
  inst_js=
fi

# --- Idle RSS: no functions vs 10 copies of hello-ts (js1 … js10) ---
mkdir -p "$work/b/functions"
dev_in "$work/b" WASMBASE_FUNCTIONS_WATCH=true
sleep 5
rss0=$(rss_mb "$DEV")
stop_dev
for i in $(seq 1 10); do js_copy "$work/c/functions/js$i" "js$i"; done
dev_in "$work/c" WASMBASE_FUNCTIONS_WATCH=true
for i in $(seq 1 10); do wait_fn "js$i"; done
sleep 5
rss10=$(rss_mb "$DEV")

# --- A JS function moved into the watched directory → first 200 (same server) ---
js_copy "$work/c/late" late
# The function appears whole, as a copy finished elsewhere and moved in.
late_ms=$(first_200 "$URL/fn/late" "$work/c/late" "$work/c/functions/late")
stop_dev

echo "concurrency $CONNS, $DURATION, h2load --h1 -t1, POST {\"a\":1}"
echo "workerd (bench/workerd)  : $wd_rps req/s  p50 $wd_p50  p99 $wd_p99"
echo "POST /fn/hello (Rust)    : $rs_rps req/s  p50 $rs_p50  p99 $rs_p99"
echo "POST /fn/hello-ts        : $js_rps req/s  p50 $js_p50  p99 $js_p99  (fresh instance per request)"
echo "  of workerd             : $(ratio "$js_rps" "$wd_rps") (target >= 30%, goal 50%)"
echo "  of Rust hello          : $(ratio "$js_rps" "$rs_rps")"
echo "POST /fn/hello-ts-warm   : $jw_rps req/s  p50 $jw_p50  p99 $jw_p99  (reuse = 1000)"
echo "  of workerd             : $(ratio "$jw_rps" "$wd_rps") (target >= 100%)"
echo "Rust hello of workerd    : $(ratio "$rs_rps" "$wd_rps")"
echo "bench-instantiate hello (Rust):"
sed 's/^/  /' <<<"$inst_rs"
sed 's/^/  /' "$work/inst-rs.err"
if [ -n "$inst_js" ]; then
  echo "bench-instantiate hello-ts:"
  sed 's/^/  /' <<<"$inst_js"
  sed 's/^/  /' "$work/inst-js.err"
else
  echo "bench-instantiate hello-ts: skipped (this binary's bench-instantiate takes only a component file: $(tail -1 "$work/inst-js.err"))"
fi
echo "hello-ts component size  : ${size:-not reported (neither GET /admin/v1/functions nor bench-instantiate gives it)}"
echo "deploy (wasmbase deploy, JS) -> serving on a 2nd node: ${deploy_ms} ms (target <= 1000 ms)"
echo "idle RSS, 10 JS functions loaded: $rss10 MB (target <= 80 MB); no functions: $rss0 MB"
echo "JS function moved into the watched dir -> first 200: ${late_ms} ms (includes the watcher's 300 ms quiet period)"
