#!/usr/bin/env bash
# Image transformations, each figure next to a baseline from the same run:
#  1. a 2500x2500 JPEG -> 400x400 WebP through GET /storage/v1/render/image
#     (uncached: every request asks another quality, so another cache entry),
#     median and p99 of RUNS requests, against the same transformation by the
#     same code in a plain loop (`wasmbase bench-render`): the HTTP path's cost;
#  2. cache hits (req/s, h2load) against an uncached public download of an
#     object as large as the cached result.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_h2load
build
RUNS="${RUNS:-20}"
dev_workdir
start_dev

"$BIN" bench-render "$work/src.jpg" --make 2500
curl -fsS -H "apikey: $SECRET_KEY" -H 'content-type: application/json' \
  "$WASMBASE_URL/storage/v1/bucket" -d '{"name":"pics","public":true}' >/dev/null
put() { # NAME FILE MIME
  curl -fsS -H "apikey: $SECRET_KEY" -H "content-type: $3" \
    --data-binary @"$2" "$WASMBASE_URL/storage/v1/object/pics/$1" >/dev/null
}
put src.jpg "$work/src.jpg" image/jpeg
RENDER="$WASMBASE_URL/storage/v1/render/image/public/pics/src.jpg"

# 1. uncached transformations over HTTP, then the plain loop
times=()
for i in $(seq 1 "$RUNS"); do
  q=$((19 + i))
  t=$(curl -fsS -o /dev/null -w '%{time_total}' -H 'accept: image/webp' "$RENDER?width=400&height=400&quality=$q")
  times+=("$(awk -v t="$t" 'BEGIN { printf "%.2f", t * 1000 }')")
done
pct() { printf '%s\n' "${@:2}" | sort -g | awk -v p="$1" '{a[NR]=$1} END {i=int((NR-1)*p+0.5)+1; print a[i]}'; }
http_p50=$(pct 0.5 "${times[@]}"); http_p99=$(pct 0.99 "${times[@]}")
loop=$("$BIN" bench-render "$work/src.jpg" --query 'width=400&height=400' --webp --runs "$RUNS")
loop_p50=$(awk '$1=="median_ms" {print $2}' <<<"$loop"); loop_p99=$(awk '$1=="p99_ms" {print $2}' <<<"$loop")

# 2. cache hits against a download of the same size
curl -fsS -o "$work/out.webp" -H 'accept: image/webp' "$RENDER?width=400&height=400"
head -c "$(stat -c %s "$work/out.webp")" /dev/urandom >"$work/same.bin"
put same.bin "$work/same.bin" application/octet-stream
read -r hit_rps hit_p50 hit_p99 < <(http_rps "$RENDER?width=400&height=400" "accept: image/webp")
read -r dl_rps dl_p50 dl_p99 < <(http_rps "$WASMBASE_URL/storage/v1/object/public/pics/same.bin")

echo "2500x2500 JPEG -> 400x400 WebP, $RUNS runs (result $(stat -c %s "$work/out.webp") bytes)"
echo "over HTTP, uncached      : median ${http_p50} ms, p99 ${http_p99} ms"
echo "plain loop, same code    : median ${loop_p50} ms, p99 ${loop_p99} ms"
echo "  loop / HTTP (median)   : $(ratio "$loop_p50" "$http_p50")"
echo "cached hits, $CONNS conns : $hit_rps req/s (p50 $hit_p50, p99 $hit_p99)"
echo "public download same size: $dl_rps req/s (p50 $dl_p50, p99 $dl_p99)"
echo "  hits / download        : $(ratio "$hit_rps" "$dl_rps")"
