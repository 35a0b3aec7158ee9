#!/usr/bin/env bash
# /storage/v1 on the local backend, each figure next to a baseline measured in the
# same run:
#  1. Upload then download 1 GiB through /storage/v1 (curl, streamed) vs writing and
#     reading the same bytes with dd (conv=fsync) on the same filesystem; the
#     server's peak RSS growth (VmHWM) during the upload.
#  2. Authenticated download of a 1 KiB object (RLS on) under h2load vs pgbench -M
#     prepared running the server's transaction shape (BEGIN; set_config role,
#     claims, timeout; the metadata SELECT; COMMIT) at the same concurrency; and a
#     public-bucket download of the same object (reported).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_h2load
build
CLIENTS="${CLIENTS:-8}"
SIZE_MB="${SIZE_MB:-1024}"
dev_workdir

mkdir -p "$work/db/migrations"
cat >"$work/db/migrations/0001_bench.sql" <<'SQL'
INSERT INTO storage.buckets (id, name, public) VALUES ('bench', 'bench', false), ('open', 'open', true);
CREATE POLICY own_folder ON storage.objects FOR ALL TO authenticated
  USING (bucket_id = 'bench' AND (storage.foldername(name))[1] = auth.uid()::text)
  WITH CHECK (bucket_id = 'bench' AND (storage.foldername(name))[1] = auth.uid()::text);
SQL

start_dev
bench_user
hwm() { awk '/VmHWM/ {print $2}' "/proc/$DEV/status"; }
# Reads from disk, not the page cache, where the machine allows it (root).
cold() { sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi; }

# 1. 1 GiB each way.
dd if=/dev/urandom of="$work/big" bs=1M count="$SIZE_MB" status=none
t0=$(now); dd if="$work/big" of="$work/dd.copy" bs=1M conv=fsync status=none; t1=$(now)
dd_write=$(mbps "$t0" "$t1")
cold
t0=$(now); dd if="$work/dd.copy" of=/dev/null bs=1M status=none; t1=$(now)
dd_read=$(mbps "$t0" "$t1")
rm -f "$work/dd.copy"
# Peak reset to the current RSS first (Linux clear_refs "5"), so startup cannot hide growth.
echo 5 >"/proc/$DEV/clear_refs" 2>/dev/null || true
before=$(hwm)
t0=$(now)
curl -fsS -o /dev/null -X POST -H "${AUTH[0]}" -H "${AUTH[1]}" -H "content-type: application/octet-stream" \
  -T "$work/big" "$WASMBASE_URL/storage/v1/object/bench/$USER_ID/big.bin"
t1=$(now)
up=$(mbps "$t0" "$t1")
grown=$(( ($(hwm) - before) / 1024 ))
want=$(sha256sum <"$work/big")
rm -f "$work/big"
cold
t0=$(now)
curl -fsS -H "${AUTH[0]}" -H "${AUTH[1]}" -o /dev/null "$WASMBASE_URL/storage/v1/object/bench/$USER_ID/big.bin"
t1=$(now)
down=$(mbps "$t0" "$t1")
got=$(curl -fsS -H "${AUTH[0]}" -H "${AUTH[1]}" "$WASMBASE_URL/storage/v1/object/bench/$USER_ID/big.bin" | sha256sum)
[ "$got" = "$want" ] || { echo "downloaded bytes differ" >&2; exit 1; }
cache=$([ -w /proc/sys/vm/drop_caches ] && echo "page cache dropped before each read" || echo "page cache warm")
echo "1 GiB upload    : $up MB/s vs dd write (conv=fsync) $dd_write MB/s: $(ratio "$up" "$dd_write") (target >= 60%)"
echo "1 GiB download  : $down MB/s vs dd read $dd_read MB/s: $(ratio "$down" "$dd_read") (target >= 60%; $cache)"
echo "  server VmHWM growth during the upload: $grown MB (target <= 32 MB)"

# 2. 1 KiB authenticated download vs the same transaction in pgbench.
head -c 1024 /dev/urandom >"$work/small"
curl -fsS -o /dev/null -X POST -H "${AUTH[0]}" -H "${AUTH[1]}" -H "content-type: application/octet-stream" \
  --data-binary @"$work/small" "$WASMBASE_URL/storage/v1/object/bench/$USER_ID/small.bin"
curl -fsS -o /dev/null -X POST -H "apikey: $SECRET_KEY" -H "content-type: application/octet-stream" \
  --data-binary @"$work/small" "$WASMBASE_URL/storage/v1/object/open/small.bin"
cat >"$work/find.sql" <<SQL
BEGIN ISOLATION LEVEL READ COMMITTED;
$SET_PRINCIPAL_SQL
SELECT id::text, version, coalesce(metadata, '{}'), updated_at FROM storage.objects WHERE bucket_id = 'bench' AND name = '$USER_ID/small.bin';
COMMIT;
SQL
CONNS=$CLIENTS
read -r auth_rps auth_p50 auth_p99 < <(http_rps "$WASMBASE_URL/storage/v1/object/bench/$USER_ID/small.bin" "${AUTH[@]}")
read -r pg_tps pg_p50 pg_p99 < <(pgb "$work/find.sql" -D role=authenticated -D "claims=$CLAIMS" -D timeout=8000)
read -r pub_rps pub_p50 pub_p99 < <(http_rps "$WASMBASE_URL/storage/v1/object/public/open/small.bin")
echo "concurrency $CLIENTS, $DURATION each"
echo "GET 1 KiB (RLS)  : $auth_rps req/s (p50 $auth_p50, p99 $auth_p99)"
echo "pgbench same tx  : $pg_tps tps (p50 $pg_p50, p99 $pg_p99)"
echo "  ratio          : $(ratio "$auth_rps" "$pg_tps") (target >= 70%)"
echo "GET 1 KiB public : $pub_rps req/s (p50 $pub_p50, p99 $pub_p99)"
