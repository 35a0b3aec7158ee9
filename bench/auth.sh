#!/usr/bin/env bash
# Auth API speed, each figure next to a baseline measured in the same run against
# the same PostgreSQL:
#  1. GET /auth/v1/user (JWT verify + session lookup + user JSON) vs pgbench -M
#     prepared doing a single-row primary-key SELECT on auth.users.
#  2. Token refresh (a write transaction: lock, revoke, insert child, update
#     session, audit) vs pgbench running the same statements in one transaction.
#     One refresh-token chain per wrk thread (-tN -cN), one session per pgbench client.
#  3. Password sign-ins/s (argon2id-bound) and /health p99 while they saturate.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_wrk
need_h2load
build
CLIENTS="${CLIENTS:-8}"
dev_workdir
start_dev

# One user, one session per client.
api "$WASMBASE_URL/auth/v1/signup" -d '{"email":"bench@example.com","password":"bench-password"}' >/dev/null
: >"$work/tokens"
for i in $(seq 1 "$CLIENTS"); do
  api "$WASMBASE_URL/auth/v1/token?grant_type=password" -d '{"email":"bench@example.com","password":"bench-password"}' >"$work/s$i.json"
  json "['refresh_token']" <"$work/s$i.json" >>"$work/tokens"
done
ACCESS=$(json "['access_token']" <"$work/s1.json")
USER_ID=$(json "['user']['id']" <"$work/s1.json")

pgb() { # pgbench SCRIPT -> tps (pgbench's errors are shown, not swallowed)
  local out
  out=$("$PGBENCH" -n -M prepared -c "$CLIENTS" -j 1 -T "${DURATION%s}" -f "$1" "$PGURL" 2>&1) || { echo "$out" >&2; return 1; }
  awk '/^tps/ {print $3; exit}' <<<"$out"
}

# 1. GET /user vs PK select
cat >"$work/pk.sql" <<SQL
SELECT id FROM auth.users WHERE id = '$USER_ID';
SQL
# The statement GET /user runs on every call (on the auth pool, role pinned per
# connection): session, user and ban check plus the row version; the rendered user
# object comes from the per-node cache while that version is unchanged.
SESSION_ID=$(python3 -c "import sys,json,base64; p=sys.argv[1].split('.')[1]; p+='='*(-len(p)%4); print(json.loads(base64.urlsafe_b64decode(p))['session_id'])" "$ACCESS")
cat >"$work/user.sql" <<SQL
SELECT (u.xmin::text)::bigint, '$SESSION_ID'::uuid IS NULL OR EXISTS (SELECT 1 FROM auth.sessions s WHERE s.id = '$SESSION_ID' AND s.user_id = u.id AND (s.not_after IS NULL OR s.not_after > now())), coalesce(u.banned_until > now(), false) FROM auth.users u WHERE u.id = '$USER_ID' AND u.deleted_at IS NULL;
SQL
CONNS=$CLIENTS
# This shared machine's speed drifts between seconds, so the wrk and pgbench runs
# alternate for ROUNDS rounds and the median of each round's ratio is reported.
ROUNDS="${ROUNDS:-3}"
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
user_runs=(); pk_runs=(); user_ratios=(); user_p50s=(); user_p99s=()
for _ in $(seq 1 "$ROUNDS"); do
  read -r rps p50 p99 < <(http_rps "$WASMBASE_URL/auth/v1/user" "apikey: $PUBLISHABLE_KEY" "Authorization: Bearer $ACCESS")
  pk=$(pgb "$work/pk.sql")
  user_runs+=("$rps"); pk_runs+=("$pk"); user_p50s+=("$p50"); user_p99s+=("$p99")
  user_ratios+=("$(awk -v a="$rps" -v b="$pk" 'BEGIN { printf "%.1f", 100 * a / b }')")
done
user_rps=$(median "${user_runs[@]}"); pk_tps=$(median "${pk_runs[@]}")
user_sql_tps=$(pgb "$work/user.sql")

# 2. refresh vs the same statements
refresh_lua "$work/refresh.lua"
refresh_out=$(TOKENS="$work/tokens" wrk -t"$CLIENTS" -c"$CLIENTS" -d"$DURATION" --latency -s "$work/refresh.lua" "$WASMBASE_URL")
refresh_rps=$(awk '/Requests\/sec/ {print $2}' <<<"$refresh_out")
refresh_bad=$(awk '/Non-2xx/ {print $5}' <<<"$refresh_out")
# (not in `public`: tables there get RLS by default)
psql -q "$PGURL" -c "CREATE SCHEMA IF NOT EXISTS bench; CREATE TABLE IF NOT EXISTS bench.sessions AS SELECT row_number() OVER () - 1 AS n, id AS sid, user_id AS uid FROM auth.sessions; GRANT USAGE ON SCHEMA bench TO wasmbase_auth; GRANT SELECT ON bench.sessions TO wasmbase_auth" >/dev/null
cat >"$work/refresh.sql" <<'SQL'
\set salt random(1, 2000000000)
BEGIN;
SELECT set_config('role', 'wasmbase_auth', true), set_config('request.jwt.claims', '{"role":"wasmbase_auth"}', true), set_config('statement_timeout', '8000', true);
SELECT rt.id, rt.revoked, rt.child_enc, rt.session_id, s.user_id FROM auth.refresh_tokens rt JOIN auth.sessions s ON s.id = rt.session_id JOIN auth.users u ON u.id = s.user_id WHERE rt.id = (SELECT max(id) FROM auth.refresh_tokens WHERE session_id = (SELECT sid FROM bench.sessions WHERE n = :client_id)) FOR UPDATE OF rt;
UPDATE auth.refresh_tokens SET revoked = true, updated_at = now(), child_enc = md5(:salt::text) WHERE id = (SELECT max(id) FROM auth.refresh_tokens WHERE session_id = (SELECT sid FROM bench.sessions WHERE n = :client_id));
INSERT INTO auth.refresh_tokens (token_hash, session_id, parent_id) VALUES (md5(:salt::text || random()::text) || md5(random()::text), (SELECT sid FROM bench.sessions WHERE n = :client_id), 0);
UPDATE auth.sessions SET refreshed_at = now(), updated_at = now(), ip = '127.0.0.1' WHERE id = (SELECT sid FROM bench.sessions WHERE n = :client_id);
INSERT INTO auth.audit_log_entries (payload, ip_address) VALUES ('{"action":"token_refreshed"}', '127.0.0.1');
SELECT auth.user_json(u) FROM auth.users u WHERE id = (SELECT uid FROM bench.sessions WHERE n = :client_id);
COMMIT;
SQL
same_tps=$(pgb "$work/refresh.sql")

# 3. sign-ins/s, and /health p99 while they saturate the hashing pool
cat >"$work/signin.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["apikey"] = os.getenv("PUBLISHABLE_KEY")
wrk.headers["content-type"] = "application/json"
wrk.body = '{"email":"bench@example.com","password":"bench-password"}'
LUA
idle_health=$(wrk -t1 -c4 -d"$(( ${DURATION%s} - 2 ))s" --latency "$WASMBASE_URL/health" | awk '$1=="99%" {print $2}')
wrk -t1 -c16 -d"$DURATION" -s "$work/signin.lua" "$WASMBASE_URL/auth/v1/token?grant_type=password" >"$work/signin.out" &
SIGNIN=$!
sleep 1
health_out=$(wrk -t1 -c4 -d"$(( ${DURATION%s} - 2 ))s" --latency "$WASMBASE_URL/health")
wait "$SIGNIN"
signin_rps=$(awk '/Requests\/sec/ {print $2}' "$work/signin.out")
signin_non2xx=$(awk '/Non-2xx/ {print $5}' "$work/signin.out")
health_p99=$(awk '$1=="99%" {print $2}' <<<"$health_out")

echo "concurrency $CLIENTS, $DURATION each"
echo "GET /auth/v1/user      : median $user_rps req/s; rounds: ${user_runs[*]} (p50 ${user_p50s[*]}; p99 ${user_p99s[*]})"
echo "pgbench PK select      : median $pk_tps tps; rounds: ${pk_runs[*]}"
echo "  ratio                : median $(median "${user_ratios[@]}")% of rounds ${user_ratios[*]} (target >= 50%)"
echo "pgbench /user's query  : $user_sql_tps tps (same statement, no HTTP)"
echo "  ratio                : $(ratio "$user_rps" "$user_sql_tps")"
echo "token refresh          : $refresh_rps req/s (non-2xx: ${refresh_bad:-0})"
echo "pgbench same statements: $same_tps tps"
echo "  ratio                : $(ratio "$refresh_rps" "$same_tps") (target >= 30%)"
echo "password sign-ins      : $signin_rps /s at 16 connections (503 busy answers: ${signin_non2xx:-0})"
echo "/health p99 meanwhile  : $health_p99 (target < 5ms; idle, same settings: $idle_health)"
