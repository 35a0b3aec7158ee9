#!/usr/bin/env bash
# Cron (docs/CRON.md): three cron nodes on one database (in one process,
# `wasmbase bench-cron`; the `dev` server that owns the database runs no
# scheduler), each figure with its baseline from the same run:
#  1. tick precision: 100 jobs on a 1-second schedule for SECS seconds; the
#     delay from each tick to its attempt's start, p50 and p99, against the
#     lateness of a plain tokio timer aiming at the same whole seconds in the
#     same process (goal: p99 within 20 ms of the timer's);
#  2. claim throughput: 10,000 jobs due on one tick, claimed by the three
#     nodes; ticks claimed per second, against pgbench inserting the same rows
#     (INSERT … ON CONFLICT DO NOTHING into a copy of cron_runs, batches of
#     1,000, 3 clients) for DURATION (goal: at least 50%);
#  3. idle cost with 10,000 jobs registered: the process's CPU % and the
#     database's transactions/s, against the same with no jobs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build
SECS="${SECS:-20}"
DURATION="${DURATION:-10s}"
dev_workdir
export WASMBASE_CRON_ENABLED=false
start_dev
devpw() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/.wasmbase/dev.json" "$1"; }
out=$(cd "$work" && DATABASE_URL="$DATABASE_URL" WASMBASE_AUTH_JWT_SECRET="$JWT_SECRET" WASMBASE_AUTH_DEV_MAILBOX=true \
  WASMBASE_DATABASE_AUTHENTICATOR_PASSWORD="$(devpw authenticator_password)" \
  WASMBASE_DATABASE_AUTH_PASSWORD="$(devpw auth_password)" \
  WASMBASE_DATABASE_FUNCTIONS_PASSWORD="$(devpw functions_password)" \
  WASMBASE_LOG_LEVEL=warn "$BIN" bench-cron --secs "$SECS" 2>"$work/bench.log") ||
  { cat "$work/bench.log" >&2; exit 1; }
read -r _ n_cron cron_p50 cron_p99 < <(grep '^precision_cron ' <<<"$out")
read -r _ n_timer timer_p50 timer_p99 < <(grep '^precision_timer ' <<<"$out")
read -r _ claimed span claims_s first_ms < <(grep '^claims ' <<<"$out")
read -r _ cpu0 tps0 < <(grep '^idle_none ' <<<"$out")
read -r _ cpu1 tps1 < <(grep '^idle_10k ' <<<"$out")

# Baseline for claims: the same insert by pgbench, 1,000 fresh ticks a transaction.
psql -q "$PGURL" -c "DROP TABLE IF EXISTS public.bench_claims; CREATE TABLE public.bench_claims (LIKE wasmbase.cron_runs INCLUDING ALL)" >/dev/null
cat >"$work/claim.sql" <<'SQL'
\set b random(1, 1000000000)
INSERT INTO public.bench_claims (job_id, job_name, scheduled_for, attempt, status, trigger, due_at, node, started_at, lease_until)
SELECT g, 'bench', to_timestamp(:b), 1, 'running', 'schedule', to_timestamp(:b), gen_random_uuid(), clock_timestamp(), now() + interval '30 s'
  FROM generate_series(1, 1000) g
ON CONFLICT (job_id, scheduled_for, attempt) DO NOTHING;
SQL
CLIENTS=3
read -r pg_tps _ _ < <(pgb "$work/claim.sql")
pg_rows=$(awk -v t="$pg_tps" 'BEGIN { printf "%.0f", t * 1000 }')
psql -q "$PGURL" -c "DROP TABLE public.bench_claims" >/dev/null

echo "tick precision, 3 nodes x 100 jobs on '1 second' for ${SECS}s ($n_cron attempts):"
echo "  cron tick -> attempt start: p50 ${cron_p50} ms  p99 ${cron_p99} ms"
echo "  tokio timer lateness      : p50 ${timer_p50} ms  p99 ${timer_p99} ms  ($n_timer ticks)"
echo "  p99 difference            : $(awk -v a="$cron_p99" -v b="$timer_p99" 'BEGIN { printf "%.2f", a - b }') ms (goal <= 20 ms)"
echo "claims, 10,000 jobs due on one tick, 3 nodes: $claimed claimed in ${span}s = ${claims_s}/s (first after ${first_ms} ms)"
echo "  pgbench, same insert, 3 clients x 1,000 rows: ${pg_rows} rows/s"
echo "  ratio: $(ratio "$claims_s" "$pg_rows") (goal >= 50%)"
echo "idle, whole process of 3 nodes (10 s): no jobs ${cpu0}% CPU ${tps0} xact/s; 10,000 jobs ${cpu1}% CPU ${tps1} xact/s"
