#!/usr/bin/env bash
# Broadcast from the database: SOCKETS (100) sockets on one public topic, each
# also subscribed to postgres_changes of the table; inserts paced at RATE (200)
# per second for DURATION (10 s); the table's trigger sends every row with
# realtime.send. Prints insert → broadcast received p50/p99 next to insert →
# postgres_changes event p50/p99 for the same inserts, same run, and the ratio
# of the p50s.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_node
build
SOCKETS="${SOCKETS:-100}"
RATE="${RATE:-200}"
(cd "$ROOT/bench" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
dev_workdir
mkdir -p "$work/db/migrations"
cat >"$work/db/migrations/0001_bench.sql" <<'SQL'
CREATE TABLE public.items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, seq bigint NOT NULL);
GRANT SELECT ON public.items TO anon;
CREATE POLICY everyone_reads ON public.items FOR SELECT TO anon USING (true);
ALTER PUBLICATION supabase_realtime ADD TABLE public.items;
CREATE FUNCTION public.items_broadcast() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  PERFORM realtime.send(jsonb_build_object('seq', NEW.seq), 'item', 'feed', false);
  RETURN NULL;
END $$;
CREATE TRIGGER items_broadcast AFTER INSERT ON public.items
  FOR EACH ROW EXECUTE FUNCTION public.items_broadcast();
SQL
start_dev
out=$(URL="$WASMBASE_URL" KEY="$PUBLISHABLE_KEY" PGURL="$PGURL" SOCKETS="$SOCKETS" RATE="$RATE" \
  SECONDS="${DURATION%s}" node "$ROOT/bench/realtime-db-broadcast.mjs")
read -r _ ch_n ch_p50 ch_p99 < <(grep '^changes ' <<<"$out")
read -r _ bc_n bc_p50 bc_p99 < <(grep '^broadcast ' <<<"$out")
want=$(awk '/^expected/ {print $2}' <<<"$out")
echo "$SOCKETS sockets, $RATE inserts/s for $DURATION"
echo "  insert -> realtime.send broadcast : p50 $bc_p50 ms, p99 $bc_p99 ms ($bc_n of $want)"
echo "  insert -> postgres_changes event  : p50 $ch_p50 ms, p99 $ch_p99 ms ($ch_n of $want)"
echo "  p50 ratio (broadcast / changes)   : $(ratio "$bc_p50" "$ch_p50")"
