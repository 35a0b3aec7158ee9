#!/usr/bin/env bash
# /storage/v1 on the S3 backend: upload then download 256 MiB through Wasmbase
# (curl → wasmbase → s3s-fs, a real S3 server that checks signatures) against the
# same transfer done directly against the same S3 server with aws-sdk-s3
# (`wasmbase bench-s3`: the backend's client code, no API, no database), in the
# same run. Target: each direction >= 50%.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build
need_s3s
SIZE_MB="${SIZE_MB:-256}"
dev_workdir
mkdir -p "$work/s3data" "$work/db/migrations"
echo "INSERT INTO storage.buckets (id, name) VALUES ('bench', 'bench');" >"$work/db/migrations/0001_bench.sql"
RUST_LOG=s3s_fs=info "$WASMBASE_TEST_S3S_FS" --host 127.0.0.1 --port 0 --access-key AK --secret-key SK "$work/s3data" >"$work/s3s.log" 2>&1 &
S3S=$!
ON_EXIT='kill "$S3S" 2>/dev/null || true'
for _ in $(seq 1 300); do grep -q "server is running at" "$work/s3s.log" 2>/dev/null && break; sleep 0.1; done
S3_URL=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/s3s.log" | head -1)
export WASMBASE_STORAGE_BACKEND=s3 WASMBASE_STORAGE_S3_ENDPOINT="$S3_URL" WASMBASE_STORAGE_S3_BUCKET=wasmbase \
  WASMBASE_STORAGE_S3_ACCESS_KEY_ID=AK WASMBASE_STORAGE_S3_SECRET_ACCESS_KEY=SK
start_dev

dd if=/dev/urandom of="$work/big" bs=1M count="$SIZE_MB" status=none
read -r direct_up direct_down < <("$BIN" bench-s3 "$work/big")
t0=$(now)
curl -fsS -o /dev/null -X POST -H "apikey: $SECRET_KEY" -H "content-type: application/octet-stream" \
  -T "$work/big" "$WASMBASE_URL/storage/v1/object/bench/big.bin"
t1=$(now)
up=$(mbps "$t0" "$t1")
t0=$(now)
curl -fsS -H "apikey: $SECRET_KEY" -o /dev/null "$WASMBASE_URL/storage/v1/object/bench/big.bin"
t1=$(now)
down=$(mbps "$t0" "$t1")
got=$(curl -fsS -H "apikey: $SECRET_KEY" "$WASMBASE_URL/storage/v1/object/bench/big.bin" | sha256sum)
[ "$got" = "$(sha256sum <"$work/big")" ] || { echo "downloaded bytes differ" >&2; exit 1; }
d_up=$(awk -v mb="$SIZE_MB" -v s="$direct_up" 'BEGIN { printf "%.0f", mb / s }')
d_down=$(awk -v mb="$SIZE_MB" -v s="$direct_down" 'BEGIN { printf "%.0f", mb / s }')
echo "S3 (s3s-fs), $SIZE_MB MiB"
echo "upload   : $up MB/s through /storage/v1 vs $d_up MB/s direct with aws-sdk-s3: $(ratio "$up" "$d_up") (target >= 50%)"
echo "download : $down MB/s through /storage/v1 vs $d_down MB/s direct with aws-sdk-s3: $(ratio "$down" "$d_down") (target >= 50%)"
