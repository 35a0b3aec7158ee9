#!/usr/bin/env bash
# OAuth sign-in speed, with the provider out of the path: the PKCE code
# exchange that ends every social sign-in (POST /auth/v1/token?grant_type=pkce:
# look up and delete the flow, check the verifier, open the sealed provider
# tokens, create the session) against a refresh-token rotation
# (grant_type=refresh_token), measured in the same run, alternating for ROUNDS
# rounds. One code (or refresh chain) per request per wrk connection; the codes
# are made by SQL beforehand, as the callback would have made them.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_wrk
build
CLIENTS="${CLIENTS:-8}"
ROUNDS="${ROUNDS:-3}"
# Codes made per wrk connection per round: more than one connection exchanges in
# a run (a connection that runs out gets 404s, which are counted and shown).
PER_CONN="${PER_CONN:-30000}"
dev_workdir
start_dev

# One user per wrk connection (sign-ins of one user would queue on its row);
# codes of connection t belong to user t, as each refresh chain to its own session.
for t in $(seq 1 "$CLIENTS"); do
  api "$WASMBASE_URL/auth/v1/signup" -d "{\"email\":\"bench$t@example.com\",\"password\":\"bench-password\"}" >/dev/null
done
# fresh_sessions: one new session per connection, whose refresh tokens go to
# $work/tokens (each round starts new chains: the last round's are rotated on).
fresh_sessions() {
  : >"$work/tokens"
  for t in $(seq 1 "$CLIENTS"); do
    api "$WASMBASE_URL/auth/v1/token?grant_type=password" -d "{\"email\":\"bench$t@example.com\",\"password\":\"bench-password\"}" |
      json "['refresh_token']" >>"$work/tokens"
  done
}
# RFC 7636's example pair: every code has this challenge, every request this verifier.
VERIFIER="dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

make_codes() { # ROUND: flows the callback would have stored (codes as their SHA-256)
  psql -q "$PGURL" -c "INSERT INTO auth.flow_state (user_id, auth_code, code_challenge, code_challenge_method,
      authentication_method, auth_code_issued_at)
    SELECT u.id, encode(sha256(convert_to('r$1-' || t || '-' || n, 'UTF8')), 'hex'),
      '$CHALLENGE', 's256', 'oauth', now()
    FROM generate_series(1, $CLIENTS) t
    JOIN auth.users u ON u.email = 'bench' || t || '@example.com', generate_series(1, $PER_CONN) n" >/dev/null
  psql -q "$PGURL" -c "VACUUM ANALYZE auth.flow_state" >/dev/null
}

cat >"$work/pkce.lua" <<'LUA'
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args) n = 0 end
function request()
  n = n + 1
  return wrk.format("POST", "/auth/v1/token?grant_type=pkce",
    { ["apikey"] = os.getenv("PUBLISHABLE_KEY"), ["content-type"] = "application/json" },
    '{"auth_code":"r' .. os.getenv("ROUND") .. '-' .. tid .. '-' .. n .. '","code_verifier":"' .. os.getenv("VERIFIER") .. '"}')
end
LUA
refresh_lua "$work/refresh.lua"

# run SCRIPT -> "req/s p50 p99 non2xx" (wrk -tN -cN: one connection per thread)
run() {
  local out
  out=$(wrk -t"$CLIENTS" -c"$CLIENTS" -d"$DURATION" --latency -s "$1" "$WASMBASE_URL")
  awk '/Requests\/sec/ {r=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2} /Non-2xx/ {bad=$5}
       END {printf "%s %s %s %d\n", r, p50, p99, bad}' <<<"$out"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratios=()
echo "concurrency $CLIENTS, $DURATION each, $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
  make_codes "$r"
  fresh_sessions
  read -r prps pp50 pp99 pbad < <(ROUND=$r VERIFIER=$VERIFIER run "$work/pkce.lua")
  read -r rrps rp50 rp99 rbad < <(TOKENS="$work/tokens" run "$work/refresh.lua")
  ratios+=("$(awk -v a="$prps" -v b="$rrps" 'BEGIN { printf "%.0f", 100 * a / b }')")
  echo "round $r: pkce exchange $prps req/s (p50 $pp50, p99 $pp99, non-2xx $pbad) | refresh $rrps req/s (p50 $rp50, p99 $rp99, non-2xx $rbad) | ratio ${ratios[-1]}%"
done
echo "pkce exchange / refresh: median $(median "${ratios[@]}")% of rounds ${ratios[*]}"
