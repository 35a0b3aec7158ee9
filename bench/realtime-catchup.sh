#!/usr/bin/env bash
# postgres_changes catch-up: one socket subscribed to a table's inserts
# disconnects; MISSED (10,000) rows are inserted, one transaction each; the
# socket rejoins with its position (config.postgres_changes_options.position)
# and receives them all. Repeated REPS (5) times. Prints the catch-up time
# (join sent → last missed change received) p50/p99 and changes/s, next to
# reading the same rows with one SELECT through the data API (GET
# /rest/v1/items?id=gt.N, the reload an app would do instead) and straight
# from PostgreSQL, same run, and the ratio of the p50s.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_node
build
MISSED="${MISSED:-10000}"
REPS="${REPS:-5}"
(cd "$ROOT/bench" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
dev_workdir
mkdir -p "$work/db/migrations"
cat >"$work/db/migrations/0001_bench.sql" <<'SQL'
CREATE TABLE public.items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, seq bigint NOT NULL, body text NOT NULL);
GRANT SELECT ON public.items TO anon;
CREATE POLICY everyone_reads ON public.items FOR SELECT TO anon USING (true);
ALTER PUBLICATION supabase_realtime ADD TABLE public.items;
SQL
# The baseline reads all the missed rows in one response (the default cap is 1,000).
export WASMBASE_DATABASE_MAX_ROWS=$((MISSED * 2))
start_dev
out=$(URL="$WASMBASE_URL" KEY="$PUBLISHABLE_KEY" PGURL="$PGURL" MISSED="$MISSED" REPS="$REPS" \
  node "$ROOT/bench/realtime-catchup.mjs")
read -r _ cu_p50 cu_p99 cu_rate < <(grep '^catchup ' <<<"$out")
read -r _ rest_p50 rest_p99 rest_rate < <(grep '^rest ' <<<"$out")
read -r _ pg_p50 pg_p99 pg_rate < <(grep '^select ' <<<"$out")
echo "$MISSED missed inserts (one transaction each), $REPS rounds, one socket"
echo "  catch-up (rejoin -> last change)  : p50 $cu_p50 ms, p99 $cu_p99 ms ($cu_rate changes/s at p50)"
echo "  one SELECT via /rest/v1 (baseline): p50 $rest_p50 ms, p99 $rest_p99 ms ($rest_rate rows/s at p50)"
echo "  one SELECT in PostgreSQL          : p50 $pg_p50 ms, p99 $pg_p99 ms ($pg_rate rows/s at p50)"
echo "  p50 ratio (catch-up / REST SELECT): $(ratio "$cu_p50" "$rest_p50")"
