#!/usr/bin/env bash
# /realtime/v1 postgres_changes, next to its floor measured in the same run:
# insert → event latency with USERS × PER_USER subscribed sockets (default
# 100 × 10 = 1,000; signed-in users, an owner RLS policy, so each insert is
# visible to its owner's 10 sockets), inserts paced at RATE per second for
# DURATION, against a bare LISTEN client receiving a NOTIFY sent by the
# inserting statement on a table of the same shape (the floor). Prints p50 and
# p99 of each, and the events delivered against those expected. Then the
# throughput: pgbench's insert rate on the same table (trigger in place,
# CLIENTS=8), and the insert rate raised by half from 2 x RATE until the events' p99
# passes 100 ms or some go missing, then the gap to the last rate that held
# halved until it is within 5%; the highest rate that held is the figure.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_node
build
USERS="${USERS:-100}"
PER_USER="${PER_USER:-10}"
RATE="${RATE:-200}"
DURATION="${DURATION:-10s}"
(cd "$ROOT/bench" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
dev_workdir

mkdir -p "$work/db/migrations"
cat >"$work/db/migrations/0001_bench.sql" <<'SQL'
CREATE TABLE public.items (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  owner uuid NOT NULL,
  seq bigint NOT NULL
);
ALTER TABLE public.items ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON public.items FOR SELECT TO authenticated USING (owner = auth.uid());
GRANT SELECT ON public.items TO authenticated;
ALTER PUBLICATION supabase_realtime ADD TABLE public.items;
CREATE TABLE public.floor_items (LIKE public.items INCLUDING ALL);
SQL

start_dev
# Users and their tokens: "id token" per line.
for i in $(seq 1 "$USERS"); do
  api "$WASMBASE_URL/auth/v1/signup" -d "{\"email\":\"rt$i@example.com\",\"password\":\"bench-password\"}" |
    python3 -c 'import sys,json; s=json.load(sys.stdin); print(s["user"]["id"], s["access_token"])'
done >"$work/users"
out=$(URL="$WASMBASE_URL" KEY="$PUBLISHABLE_KEY" PGURL="$PGURL" USERS="$work/users" PER_USER="$PER_USER" \
  RATE="$RATE" SECONDS="${DURATION%s}" node "$ROOT/bench/realtime.mjs")
read -r _ floor_n floor_p50 floor_p99 < <(grep '^floor ' <<<"$out")
read -r _ rt_n rt_p50 rt_p99 < <(grep '^realtime ' <<<"$out")
expected=$(awk '/^expected/ {print $2}' <<<"$out")
rls=$(curl -fsS -H "apikey: $SECRET_KEY" "$WASMBASE_URL/metrics" | awk '/^wasmbase_realtime_rls_queries_total/ {print $2}')

# Throughput.
CLIENTS="${CLIENTS:-8}"
owner1=$(head -1 "$work/users" | cut -d' ' -f1)
echo "INSERT INTO public.items (owner, seq) VALUES ('$owner1', -1);" >"$work/insert.sql"
read -r pg_tps _ _ < <(pgb "$work/insert.sql")
held=0; held_p99=0; rate=$((RATE * 2)); base=10000000; failed=0
# step RATE: whether every event arrived with p99 <= 100 ms at that rate.
step() {
  local out n p99 want
  out=$(URL="$WASMBASE_URL" KEY="$PUBLISHABLE_KEY" PGURL="$PGURL" USERS="$work/users" PER_USER="$PER_USER" \
    RATE="$1" SECONDS="${DURATION%s}" SKIP_FLOOR=1 SEQ_BASE="$base" node "$ROOT/bench/realtime.mjs")
  base=$((base + 10000000))
  read -r _ n _ p99 < <(grep '^realtime ' <<<"$out")
  want=$(awk '/^expected/ {print $2}' <<<"$out")
  echo "  $1 inserts/s: $n of $want events, p99 $p99 ms" >&2
  if [ "$n" -lt "$want" ] || awk -v p="$p99" 'BEGIN { exit !(p > 100) }'; then return 1; fi
  held=$1; held_p99=$p99
}
while [ "$rate" -le 100000 ]; do
  step "$rate" || { failed=$rate; break; }
  rate=$((rate * 3 / 2))
done
# Then halves the gap between the last rate that held and the first that did
# not, while it is wider than a twentieth of the rate that held.
while [ "$failed" -gt 0 ] && [ $((failed - held)) -gt $((held / 20)) ]; do
  rate=$(((held + failed) / 2))
  step "$rate" || failed=$rate
done
echo "sockets $((USERS * PER_USER)) ($USERS users x $PER_USER), $RATE inserts/s for $DURATION"
echo "insert -> event       : p50 ${rt_p50} ms, p99 ${rt_p99} ms ($rt_n of $expected events delivered; goal p50 <= 5 ms, p99 <= 50 ms)"
echo "floor (LISTEN/NOTIFY) : p50 ${floor_p50} ms, p99 ${floor_p99} ms ($floor_n notifications)"
echo "RLS queries           : $rls for $((RATE * ${DURATION%s})) inserts (at most one per change)"
echo "throughput            : $held inserts/s delivered to all subscribers with p99 ${held_p99} ms vs pgbench $pg_tps inserts/s on the same table: $(ratio "$held" "$pg_tps") (target >= 90%)"
