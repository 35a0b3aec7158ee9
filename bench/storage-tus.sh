#!/usr/bin/env bash
# Resumable uploads on the local backend: SIZE_MB (256) MiB uploaded with
# tus-js-client in 6 MiB chunks (as Supabase's guide configures it; RLS on, a
# signed-in user) against one POST of the same bytes from the same Node
# process, ROUNDS (5) of each, alternating, same run. Prints the median and
# the worst round of each as MB/s, the ratio of the medians, and the PATCHes'
# p50 and p99.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_node
build
SIZE_MB="${SIZE_MB:-256}"
(cd "$ROOT/bench" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
dev_workdir
mkdir -p "$work/db/migrations"
cat >"$work/db/migrations/0001_bench.sql" <<'SQL'
INSERT INTO storage.buckets (id, name, public) VALUES ('bench', 'bench', false);
CREATE POLICY own_folder ON storage.objects FOR ALL TO authenticated
  USING (bucket_id = 'bench' AND (storage.foldername(name))[1] = auth.uid()::text)
  WITH CHECK (bucket_id = 'bench' AND (storage.foldername(name))[1] = auth.uid()::text);
SQL
start_dev
bench_user
{ read -r post_med post_worst; read -r tus_med tus_worst p50 p99; } < <(
  URL="$WASMBASE_URL" KEY="$PUBLISHABLE_KEY" TOKEN="$ACCESS" USER_ID="$USER_ID" SIZE_MB="$SIZE_MB" \
    node "$ROOT/bench/storage-tus.mjs")
echo "$SIZE_MB MiB upload, ${ROUNDS:-5} rounds each (median / worst round)"
echo "  TUS, 6 MiB chunks : $tus_med / $tus_worst MB/s (PATCH p50 ${p50} ms, p99 ${p99} ms)"
echo "  one POST          : $post_med / $post_worst MB/s"
echo "  ratio of medians  : $(ratio "$tus_med" "$post_med") (target >= 80%)"
