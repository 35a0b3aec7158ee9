# Shared by scripts/dev and scripts/test: install what the project needs on a
# fresh machine (Debian/Ubuntu, as root or with sudo), idempotently.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbase-target}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run: $*"; fi
}

apt_install() {
  command -v apt-get >/dev/null || die "please install: $* (no apt-get on this machine)"
  say "installing $* (apt-get)"
  as_root apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

need_rust() {
  command -v cargo >/dev/null || die "Rust is not installed: see https://rustup.rs (needs 1.95+)"
  if command -v rustup >/dev/null; then
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
      say "adding the wasm32-wasip2 target (for functions)"
      rustup target add wasm32-wasip2 >/dev/null 2>&1 ||
        die "could not install the wasm32-wasip2 target: run 'rustup target add wasm32-wasip2' and check its output"
    fi
  fi
}

need_postgres() {
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then return; fi
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then return; fi
  apt_install postgresql
}

# need_postgis: PostGIS for the PostgreSQL the tests run (the data API's
# `application/geo+json` output is tested against it).
need_postgis() {
  local major
  major=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sed 's|/usr/lib/postgresql/\([0-9]*\)/bin|\1|' | sort -n | tail -1)
  [ -n "$major" ] || return 0
  [ -f "/usr/share/postgresql/$major/extension/postgis.control" ] && return 0
  apt_install --no-install-recommends "postgresql-$major-postgis-3"
}

# need_s3s: a real S3-compatible server that checks signatures, for the S3
# backend's tests (s3s-fs 0.14.1; 0.15+ needs a newer rustc). Installed once
# under $CARGO_TARGET_DIR/tools; exports WASMBASE_TEST_S3S_FS.
need_s3s() {
  local root="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbase-target}/tools"
  if [ ! -x "$root/bin/s3s-fs" ]; then
    say "installing s3s-fs 0.14.1 (the S3 server the tests start)"
    cargo install s3s-fs --version 0.14.1 --locked --features binary --root "$root" --quiet ||
      die "could not install s3s-fs: run 'cargo install s3s-fs --version 0.14.1 --locked --features binary' and check its output"
  fi
  export WASMBASE_TEST_S3S_FS="$root/bin/s3s-fs"
}

need_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || die "Node.js 20+ is needed for the supabase-js compatibility tests (found $(node --version))"
}
