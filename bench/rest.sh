#!/usr/bin/env bash
# /rest/v1 speed, each figure next to baselines measured in the same run, at the same
# concurrency, against the same PostgreSQL:
#  1. GET /rest/v1/items?select=*&limit=10&id=gt.5000 as a signed-in user vs pgbench
#     -M prepared on (a) the same work: BEGIN; set_config(role, claims, timeout);
#     the json_agg statement the server runs; COMMIT — and (b) the bare statement
#     run as the owner.
#  2. A one-level one-to-many embed (items?select=id,name,tags(label)), same baselines.
#  3. A single-row POST /rest/v1/items (Prefer: return=minimal), same baselines.
# wrk runs one thread (-t1 -cN) to leave the cores to the server; pgbench -j 1 -cN.
# The role and claims go to pgbench as variables (-D), so in prepared mode they are
# bind parameters, as the server sends them, and pgbench never parses the claims text.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_wrk
build
CLIENTS="${CLIENTS:-8}"
GT=5000 # id=gt.$GT: a fixed page past the start of the table
dev_workdir

# The project's schema, applied by the server at start as the owner.
mkdir -p "$work/db/migrations"
cat >"$work/db/migrations/0001_bench.sql" <<'SQL'
CREATE TABLE public.items (
  id bigint PRIMARY KEY,
  name text NOT NULL,
  price numeric NOT NULL,
  owner uuid
);
ALTER TABLE public.items ENABLE ROW LEVEL SECURITY;
CREATE POLICY items_read ON public.items FOR SELECT TO authenticated USING (true);
CREATE POLICY items_write ON public.items FOR INSERT TO authenticated WITH CHECK (true);

CREATE TABLE public.tags (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  item_id bigint NOT NULL REFERENCES public.items (id),
  label text NOT NULL
);
CREATE INDEX tags_item_id ON public.tags (item_id);
ALTER TABLE public.tags ENABLE ROW LEVEL SECURITY;
CREATE POLICY tags_read ON public.tags FOR SELECT TO authenticated USING (true);

-- Ids for pgbench's insert baseline, far above the ones wrk posts (1,000,000 + ...).
CREATE SEQUENCE public.bench_seq START 100000000;
GRANT USAGE ON SEQUENCE public.bench_seq TO authenticated;

INSERT INTO public.items (id, name, price, owner)
  SELECT i, 'item ' || i, (i % 1000) + 0.99, md5(i::text)::uuid FROM generate_series(1, 10000) i;
INSERT INTO public.tags (item_id, label)
  SELECT i, 'tag ' || j FROM generate_series(1, 1000) i, generate_series(1, 2) j;
ANALYZE public.items;
ANALYZE public.tags;
SQL

start_dev
bench_user

# pgbench as the signed-in user: the server's role, claims and timeout, as parameters.
pgb_user() { pgb "$1" -D role=authenticated -D "claims=$CLAIMS" -D timeout=8000; }
# same_work BEGIN-LINE STATEMENT: the server's transaction around one statement.
same_work() {
  printf '%s;\n%s\n%s;\nCOMMIT;\n' "$1" \
    "SELECT set_config('role', :role, true), set_config('request.jwt.claims', :claims, true), set_config('statement_timeout', :timeout, true);" \
    "$2"
}

# 1. GET items, limit 10
list_sql="SELECT coalesce(json_agg(_r.j), '[]')::text, count(*) FROM (SELECT json_build_object('id',\"_0\".\"id\",'name',\"_0\".\"name\",'price',\"_0\".\"price\",'owner',\"_0\".\"owner\") AS j FROM \"public\".\"items\" \"_0\" WHERE \"_0\".\"id\" > $GT LIMIT 10 OFFSET 0) _r"
same_work "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY" "$list_sql" >"$work/list.sql"
echo "$list_sql;" >"$work/list_bare.sql"
list_url="$WASMBASE_URL/rest/v1/items?select=*&limit=10&id=gt.$GT"

# 2. one-level embed: 10 items with 2 tags each
embed_sql="SELECT coalesce(json_agg(_r.j), '[]')::text, count(*) FROM (SELECT json_build_object('id',\"_0\".\"id\",'name',\"_0\".\"name\",'tags',(SELECT coalesce(json_agg(_e.j), '[]') FROM (SELECT json_build_object('label',\"_1\".\"label\") AS j FROM \"public\".\"tags\" \"_1\" WHERE \"_1\".\"item_id\" = \"_0\".\"id\") _e)) AS j FROM \"public\".\"items\" \"_0\" WHERE \"_0\".\"id\" <= 500 LIMIT 10 OFFSET 0) _r"
same_work "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY" "$embed_sql" >"$work/embed.sql"
echo "$embed_sql;" >"$work/embed_bare.sql"
embed_url="$WASMBASE_URL/rest/v1/items?select=id,name,tags(label)&limit=10&id=lte.500"

# 3. single-row insert (ids from a sequence: pgbench has no per-transaction counter)
insert_sql="INSERT INTO \"public\".\"items\" (\"id\", \"name\", \"price\") VALUES (nextval('public.bench_seq'), 'x', 1)"
same_work "BEGIN ISOLATION LEVEL READ COMMITTED" "$insert_sql" >"$work/insert.sql"
echo "$insert_sql;" >"$work/insert_bare.sql"
# Each wrk thread posts its own id range: 1,000,000 + thread * 10,000,000 upwards.
cat >"$work/insert.lua" <<'LUA'
local threads = 0
function setup(thread)
  thread:set("first_id", 1000000 + threads * 10000000)
  threads = threads + 1
end
wrk.method = "POST"
wrk.headers["apikey"] = os.getenv("PUBLISHABLE_KEY")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("ACCESS")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Prefer"] = "return=minimal"
local id
function init(args) id = first_id end
function request()
  id = id + 1
  return wrk.format(nil, nil, nil, string.format('{"id":%d,"name":"x","price":1}', id))
end
LUA

# A 200 with [] (policies or grants missing) would be fast and meaningless: check first.
rows=$(curl -fsS -H "${AUTH[0]}" -H "${AUTH[1]}" "$list_url" | python3 -c "import sys,json; print(len(json.load(sys.stdin)))")
[ "$rows" = 10 ] || { echo "GET $list_url returned $rows rows, expected 10" >&2; exit 1; }
tags=$(curl -fsS -H "${AUTH[0]}" -H "${AUTH[1]}" "$embed_url" | python3 -c "import sys,json; r=json.load(sys.stdin); print(len(r), sum(len(i['tags']) for i in r))")
[ "$tags" = "10 20" ] || { echo "GET $embed_url returned (items, tags) $tags, expected 10 20" >&2; exit 1; }
status=$(curl -sS -o /dev/null -w '%{http_code}' -H "${AUTH[0]}" -H "${AUTH[1]}" -H "Content-Type: application/json" \
  -H "Prefer: return=minimal" -d '{"id":999999,"name":"x","price":1}' "$WASMBASE_URL/rest/v1/items")
[ "$status" = 201 ] || { echo "POST /rest/v1/items answered $status, expected 201" >&2; exit 1; }

CONNS=$CLIENTS
read -r list_rps list_p50 list_p99 < <(wrk_rps "$list_url" "${AUTH[@]}")
read -r list_tps list_pg50 list_pg99 < <(pgb_user "$work/list.sql")
read -r list_bare_tps _ _ < <(pgb "$work/list_bare.sql")

read -r embed_rps embed_p50 embed_p99 < <(wrk_rps "$embed_url" "${AUTH[@]}")
read -r embed_tps embed_pg50 embed_pg99 < <(pgb_user "$work/embed.sql")
read -r embed_bare_tps _ _ < <(pgb "$work/embed_bare.sql")

# Last: the inserts grow items (above every id the reads look at).
insert_out=$(ACCESS="$ACCESS" wrk -t1 -c"$CLIENTS" -d"$DURATION" --latency -s "$work/insert.lua" "$WASMBASE_URL/rest/v1/items")
insert_rps=$(awk '/Requests\/sec/ {print $2}' <<<"$insert_out")
insert_p50=$(awk '$1=="50%" {print $2}' <<<"$insert_out")
insert_p99=$(awk '$1=="99%" {print $2}' <<<"$insert_out")
insert_bad=$(awk '/Non-2xx/ {print $5}' <<<"$insert_out")
read -r insert_tps insert_pg50 insert_pg99 < <(pgb_user "$work/insert.sql")
read -r insert_bare_tps _ _ < <(pgb "$work/insert_bare.sql")

# to_ms 1.23ms|456.00us|1.02s -> milliseconds; tail P50 P99 PG50 PG99 -> the two
# p99/p50 spreads and how Wasmbase's compares with pgbench's (target <= 2x).
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }
tail_ratio() {
  awk -v a="$(to_ms "$1")" -v b="$(to_ms "$2")" -v c="$(to_ms "$3")" -v d="$(to_ms "$4")" \
    'BEGIN { w = b / a; p = d / c; printf "p99/p50 %.1f vs pgbench %.1f: %.1fx (target <= 2x)", w, p, w / p }'
}

echo "concurrency $CLIENTS, $DURATION each"
echo "GET items limit 10     : $list_rps req/s (p50 $list_p50, p99 $list_p99)"
echo "pgbench same work      : $list_tps tps (p50 $list_pg50, p99 $list_pg99; BEGIN; set_config; the query; COMMIT)"
echo "  tail                 : $(tail_ratio "$list_p50" "$list_p99" "$list_pg50" "$list_pg99")"
echo "  ratio                : $(ratio "$list_rps" "$list_tps") (target >= 60%, aim 80%)"
echo "pgbench bare query     : $list_bare_tps tps (as the owner)"
echo "  ratio                : $(ratio "$list_rps" "$list_bare_tps")"
echo "GET items + tags embed : $embed_rps req/s (p50 $embed_p50, p99 $embed_p99)"
echo "pgbench same work      : $embed_tps tps (p50 $embed_pg50, p99 $embed_pg99)"
echo "  tail                 : $(tail_ratio "$embed_p50" "$embed_p99" "$embed_pg50" "$embed_pg99")"
echo "  ratio                : $(ratio "$embed_rps" "$embed_tps")"
echo "pgbench bare query     : $embed_bare_tps tps"
echo "  ratio                : $(ratio "$embed_rps" "$embed_bare_tps")"
echo "POST items (1 row)     : $insert_rps req/s (p50 $insert_p50, p99 $insert_p99; non-2xx: ${insert_bad:-0})"
echo "pgbench same work      : $insert_tps tps (p50 $insert_pg50, p99 $insert_pg99)"
echo "  tail                 : $(tail_ratio "$insert_p50" "$insert_p99" "$insert_pg50" "$insert_pg99")"
echo "  ratio                : $(ratio "$insert_rps" "$insert_tps")"
echo "pgbench bare insert    : $insert_bare_tps tps"
echo "  ratio                : $(ratio "$insert_rps" "$insert_bare_tps")"
