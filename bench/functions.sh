#!/usr/bin/env bash
# Functions speed, each figure next to a baseline from the same run:
#  1. h2load on POST /fn/hello (the Rust example, full pipeline: key check, admission,
#     fresh Store + instance per request, request and response through the SDK's
#     buffered-handler export) vs the raw hyper
#     hello of the same binary (`wasmbase bench-hello`), same h2load settings.
#     Also POST /fn/hello-warm: the same component with `reuse = 1000` (warm
#     instances, opt-in), same settings.
#  2. Per-request instantiation time (median and p99 over 2000 instantiations of
#     hello from its cached InstancePre), printed by `wasmbase bench-instantiate`.
#  3. Deploy → serving on a second node (two servers, one database): time from
#     the upload's answer to the other node serving the new version.
#  4. Idle RSS of a server with 10 Rust functions loaded.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_h2load
build
work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  for p in ${DEV:-} ${NODE2:-} ${HELLO:-}; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

GUESTS="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbase-target}/guests"
mkdir -p "$work/functions"
# hello, eight copies of it under other names and hello-warm: ten functions (for the RSS figure).
cp -r "$ROOT/functions/hello" "$work/functions/hello"
for i in $(seq 1 8); do
  mkdir -p "$work/functions/hello$i"
  sed "s/^name = \"hello\"/name = \"hello$i\"/" "$ROOT/functions/hello/function.toml" >"$work/functions/hello$i/function.toml"
done
(cd "$ROOT/functions/hello" && CARGO_TARGET_DIR="$GUESTS" cargo build --target wasm32-wasip2 --release --quiet --locked)
for i in $(seq 1 8); do cp "$GUESTS/wasm32-wasip2/release/hello.wasm" "$work/functions/hello$i/hello$i.wasm"; done
rm -f "$work/functions/hello/Cargo.toml"
cp "$GUESTS/wasm32-wasip2/release/hello.wasm" "$work/functions/hello/hello.wasm"
mkdir -p "$work/functions/hello-warm"
printf 'name = "hello-warm"\nreuse = 1000\n' >"$work/functions/hello-warm/function.toml"
cp "$GUESTS/wasm32-wasip2/release/hello.wasm" "$work/functions/hello-warm/hello-warm.wasm"

(cd "$work" && WASMBASE_SERVER_LISTEN=127.0.0.1:0 WASMBASE_LOG_LEVEL=warn \
  WASMBASE_FUNCTIONS_BUILD=false WASMBASE_FUNCTIONS_WATCH=false \
  exec "$BIN" dev >/dev/null 2>"$work/dev.log") &
DEV=$!
for _ in $(seq 1 600); do [ -s "$work/.wasmbase/env" ] && break; sleep 0.1; done
set -a; source "$work/.wasmbase/env"; set +a
wait_http "$WASMBASE_URL/ready"
# wait_fn NAME: until POST /fn/NAME answers 200 (bounded).
wait_fn() {
  local code
  for _ in $(seq 1 600); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "apikey: $PUBLISHABLE_KEY" -X POST -d '{}' "$WASMBASE_URL/fn/$1")
    [ "$code" = 200 ] && return
    sleep 0.1
  done
  cat "$work/dev.log" >&2
  die "$1 never served (status $code)"
}
wait_fn hello8
wait_fn hello-warm

sleep 2
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$DEV/status")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" bench-hello --listen "127.0.0.1:$port" 2>/dev/null &
HELLO=$!
wait_http "http://127.0.0.1:$port/"

echo '{"a":1}' >"$work/post.json"
read -r base_rps base_p50 base_p99 < <(http_rps "http://127.0.0.1:$port/")
read -r rps p50 p99 < <(POST_BODY="$work/post.json" http_rps "$WASMBASE_URL/fn/hello" \
  "apikey: $PUBLISHABLE_KEY" "Content-Type: application/json")
read -r wrps wp50 wp99 < <(POST_BODY="$work/post.json" http_rps "$WASMBASE_URL/fn/hello-warm" \
  "apikey: $PUBLISHABLE_KEY" "Content-Type: application/json")

inst=$("$BIN" bench-instantiate "$work/functions/hello/hello.wasm")

# Deploy → serving on a second node of the same database.
port2=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/node2"
# The login roles' passwords `dev` generated (each role has its own).
devpw() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/.wasmbase/dev.json" "$1"; }
(cd "$work/node2" && DATABASE_URL="$DATABASE_URL" WASMBASE_SERVER_LISTEN="127.0.0.1:$port2" \
  WASMBASE_AUTH_JWT_SECRET="$JWT_SECRET" WASMBASE_AUTH_DEV_MAILBOX=true WASMBASE_LOG_LEVEL=warn \
  WASMBASE_DATABASE_AUTHENTICATOR_PASSWORD="$(devpw authenticator_password)" \
  WASMBASE_DATABASE_AUTH_PASSWORD="$(devpw auth_password)" \
  WASMBASE_DATABASE_FUNCTIONS_PASSWORD="$(devpw functions_password)" \
  exec "$BIN" serve >/dev/null 2>"$work/node2.log") &
NODE2=$!
wait_http "http://127.0.0.1:$port2/ready"
python3 - "$work/functions/hello/hello.wasm" "$WASMBASE_URL" "$SECRET_KEY" "http://127.0.0.1:$port2" "$PUBLISHABLE_KEY" >"$work/deploy.txt" <<'PY'
import base64, json, sys, time, urllib.request
wasm, url, key, url2, anon = sys.argv[1:]
manifest = 'name = "fresh"\n'
body = json.dumps({"manifest": manifest, "component": base64.b64encode(open(wasm, "rb").read()).decode()}).encode()
req = urllib.request.Request(f"{url}/admin/v1/functions/fresh", data=body, method="POST",
                             headers={"apikey": key, "content-type": "application/json"})
urllib.request.urlopen(req).read()
t0 = time.monotonic()
while True:
    try:
        r = urllib.request.urlopen(urllib.request.Request(f"{url2}/fn/fresh", data=b"{}", method="POST", headers={"apikey": anon}))
        if r.status == 200:
            break
    except Exception:
        pass
    if time.monotonic() - t0 > 30:
        print("timeout"); sys.exit(0)
    time.sleep(0.005)
print(f"{(time.monotonic() - t0) * 1000:.0f}")
PY
deploy_ms=$(cat "$work/deploy.txt")

echo "concurrency $CONNS, $DURATION, h2load -t1"
echo "raw hyper hello      : $base_rps req/s  p50 $base_p50  p99 $base_p99"
echo "POST /fn/hello (Rust): $rps req/s  p50 $p50  p99 $p99"
echo "  ratio              : $(ratio "$rps" "$base_rps") of raw hyper (target >= 25%, aim 50%)"
echo "POST /fn/hello-warm  : $wrps req/s  p50 $wp50  p99 $wp99  (reuse = 1000)"
echo "  ratio              : $(ratio "$wrps" "$base_rps") of raw hyper"
echo "instantiation        : $inst (target median <= 10 us)"
echo "deploy -> serving on a 2nd node: ${deploy_ms} ms (target <= 1000 ms)"
echo "idle RSS, 10 functions loaded: $((rss_kb / 1024)) MB (target <= 60 MB)"
