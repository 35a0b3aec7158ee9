// Starts a real `wasmbase dev` server for the compat suite, in a fresh temp dir
// (so it gets its own private PostgreSQL, secrets and keys, and optionally the
// suite's own project migrations), and reads the dev mailbox that replaces SMTP
// in dev.

import { spawn } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const START_TIMEOUT_MS = 120_000;
const POLL_MS = 100;
const STOP_TIMEOUT_MS = 30_000;
// A cold guest build (cargo, wasm32-wasip2 --release) on a small machine.
const FUNCTION_TIMEOUT_MS = 180_000;

/** The repository root (this file is tests/compat/server.mjs). */
const REPO = fileURLToPath(new URL('../..', import.meta.url));

/** The shared cargo target dir: $CARGO_TARGET_DIR, else ~/.cache/wasmbase-target. */
function cargoTargetDir() {
  return process.env.CARGO_TARGET_DIR || join(homedir(), '.cache', 'wasmbase-target');
}

/** The server binary: $WASMBASE_BIN, else $CARGO_TARGET_DIR/debug/wasmbase. */
export function binaryPath() {
  if (process.env.WASMBASE_BIN) return process.env.WASMBASE_BIN;
  return join(cargoTargetDir(), 'debug', 'wasmbase');
}

/** Parses KEY=VALUE lines (blank lines and # comments ignored). */
export function parseEnvFile(text) {
  const out = {};
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim() || line.trimStart().startsWith('#')) continue;
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

async function isReady(url) {
  try {
    const res = await fetch(`${url}/ready`, { signal: AbortSignal.timeout(2_000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

/**
 * Copies the repo's `functions/<name>` (without `target/`) for each name into
 * `<dir>/functions/<name>`, plus what their `../../sdk/rust` path dependency
 * needs: `<dir>/sdk/rust`, whose `wit -> ../../wit` symlink is replaced by a
 * real copy of the repo's `wit/`.
 */
function copyFunctions(dir, names) {
  for (const name of names) {
    const from = join(REPO, 'functions', name);
    const to = join(dir, 'functions', name);
    cpSync(from, to, { recursive: true, filter: (src) => src !== join(from, 'target') });
  }
  const sdk = join(REPO, 'sdk', 'rust');
  const sdkTo = join(dir, 'sdk', 'rust');
  cpSync(sdk, sdkTo, {
    recursive: true,
    filter: (src) => src !== join(sdk, 'target') && src !== join(sdk, 'wit'),
  });
  cpSync(join(REPO, 'wit'), join(sdkTo, 'wit'), { recursive: true });
}

/**
 * Starts `wasmbase dev` and resolves once `.wasmbase/env` is written and
 * `/ready` answers 200. Returns the URL, the keys and `stop()`.
 *
 * `migrations` maps file names to SQL; they are written to `db/migrations/`
 * before the server starts, which applies them (in name order, as the database
 * owner) before `/ready` is 200.
 *
 * `functions` names example functions of the repo's `functions/` to serve (see
 * copyFunctions); the server builds them in the background after `/ready`, into
 * the shared guest target dir `$CARGO_TARGET_DIR/guests` so builds are
 * incremental. Wait for one with `waitForFunction()`.
 *
 * `env` adds variables to the server's environment (e.g.
 * `WASMBASE_AUTH_EXTERNAL_GITHUB_ENABLED: 'true'`). It is merged last, after the
 * suite's defaults, so it can also override them.
 *
 * @param {{ migrations?: Record<string, string>, functions?: string[], env?: Record<string, string> }} [options]
 */
export async function startServer({ migrations = {}, functions = [], env: extraEnv = {} } = {}) {
  for (const name of Object.keys(migrations)) {
    if (basename(name) !== name || !name.endsWith('.sql')) {
      throw new Error(`migration name must be a plain *.sql file name: ${name}`);
    }
  }
  for (const name of functions) {
    if (basename(name) !== name || !existsSync(join(REPO, 'functions', name, 'function.toml'))) {
      throw new Error(`not a function of the repo's functions/ dir: ${name}`);
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'wasmbase-compat-'));
  // mkdtemp makes the dir 0700. When run as root, the embedded PostgreSQL runs as
  // an unprivileged user; if it cannot reach ./.wasmbase/pg the cluster goes to
  // /var/lib/wasmbase/clusters/<hash> instead, outside what cleanup removes.
  chmodSync(dir, 0o755);
  const names = Object.keys(migrations);
  try {
    if (names.length > 0) {
      const migrationsDir = join(dir, 'db', 'migrations');
      mkdirSync(migrationsDir, { recursive: true });
      for (const name of names) writeFileSync(join(migrationsDir, name), migrations[name]);
    }
    if (functions.length > 0) copyFunctions(dir, functions);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const env = { ...process.env };
  delete env.DATABASE_URL;
  // Migrations come from this run's own db/migrations/ (the default dir).
  delete env.WASMBASE_MIGRATIONS_DIR;
  Object.assign(env, {
    WASMBASE_SERVER_LISTEN: '127.0.0.1:0',
    WASMBASE_LOG_LEVEL: 'warn',
    // The whole suite comes from one IP; the per-email limit still applies.
    WASMBASE_AUTH_RATE_LIMIT_IP_PER_MINUTE: '0',
    WASMBASE_AUTH_EMAIL_MIN_INTERVAL_SECS: '0',
    WASMBASE_AUTH_REDIRECT_URLS: '["http://localhost:3000/**","http://app.test/**"]',
    // Guest builds share one target dir (as the Rust integration tests do), not
    // a fresh ./.wasmbase/target per run.
    WASMBASE_FUNCTIONS_TARGET_DIR:
      process.env.WASMBASE_FUNCTIONS_TARGET_DIR || join(cargoTargetDir(), 'guests'),
  });
  Object.assign(env, extraEnv);

  const child = spawn(binaryPath(), ['dev'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk) => {
    output = (output + chunk).slice(-20_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  // Forward server warnings/errors to the test output (log level is warn).
  child.stderr.on('data', (chunk) => process.stderr.write(chunk));
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
    child.on('error', (err) => {
      exited = { error: err };
      resolve(exited);
    });
  });

  // Removes the temp dir and, if the cluster was placed elsewhere (symlink at
  // .wasmbase/pg), that cluster too: it belongs to this run's unique dir.
  const cleanup = () => {
    try {
      const pg = join(dir, '.wasmbase', 'pg');
      if (lstatSync(pg, { throwIfNoEntry: false })?.isSymbolicLink()) {
        rmSync(readlinkSync(pg), { recursive: true, force: true });
      }
    } catch {
      // best effort
    }
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort
    }
  };

  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM');
      const timedOut = await Promise.race([
        exitPromise.then(() => false),
        // Unref'd, so a quick exit does not keep the test process alive.
        sleep(STOP_TIMEOUT_MS, true, { ref: false }),
      ]);
      if (timedOut) {
        child.kill('SIGKILL');
        await exitPromise;
      }
    }
    cleanup();
  };

  const envPath = join(dir, '.wasmbase', 'env');
  const deadline = Date.now() + START_TIMEOUT_MS;
  let vars = null;
  while (Date.now() < deadline) {
    if (exited) {
      cleanup();
      throw new Error(`wasmbase dev exited early (${JSON.stringify(exited)}):\n${output}`);
    }
    if (existsSync(envPath)) {
      const parsed = parseEnvFile(readFileSync(envPath, 'utf8'));
      if (parsed.WASMBASE_URL && (await isReady(parsed.WASMBASE_URL))) {
        vars = parsed;
        break;
      }
    }
    await sleep(POLL_MS);
  }
  if (!vars) {
    await stop();
    throw new Error(`wasmbase dev was not ready within ${START_TIMEOUT_MS / 1000}s:\n${output}`);
  }

  const server = {
    url: vars.WASMBASE_URL,
    PUBLISHABLE_KEY: vars.PUBLISHABLE_KEY,
    SECRET_KEY: vars.SECRET_KEY,
    ANON_KEY: vars.ANON_KEY,
    SERVICE_KEY: vars.SERVICE_KEY,
    DATABASE_URL: vars.DATABASE_URL,
    dir,
    stop,
    /** The last ~20 kB of the server's stdout and stderr. */
    output: () => output,
    /** How the server exited ({code, signal} or {error}), or null while it runs. */
    exited: () => exited,
    /** The dev mailbox for `to`, newest first. */
    mailbox: (to) => mailbox(server, to),
  };
  return server;
}

/**
 * Resolves once function `name` is served: polls `GET /functions/v1/<name>`
 * (with the publishable key) while it answers 503 (`function_starting`: still
 * building or compiling). Any other status ends the wait: 404 (a failed build,
 * or no such function) throws with the server's log; anything else is the
 * function answering a bare GET its own way. `server` is what startServer()
 * returned.
 */
export async function waitForFunction(server, name, timeoutMs = FUNCTION_TIMEOUT_MS) {
  const url = `${server.url}/functions/v1/${encodeURIComponent(name)}`;
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (server.exited()) {
      throw new Error(
        `wasmbase dev exited (${JSON.stringify(server.exited())}) while waiting for function ${name}:\n${server.output()}`,
      );
    }
    let status = 0;
    let text = '';
    try {
      const res = await fetch(url, {
        headers: { apikey: server.PUBLISHABLE_KEY },
        signal: AbortSignal.timeout(10_000),
      });
      status = res.status;
      text = await res.text();
    } catch (err) {
      last = String(err);
    }
    if (status !== 0 && status !== 503) {
      if (status !== 404) return;
      throw new Error(
        `function ${name} is not served: GET ${url} -> ${status} ${text}\n${server.output()}`,
      );
    }
    if (status === 503) last = `503 ${text}`;
    await sleep(POLL_MS);
  }
  throw new Error(
    `function ${name} was not served within ${timeoutMs / 1000}s (last: ${last}):\n${server.output()}`,
  );
}

/**
 * The dev mailbox for `to`, newest first: [{id, to, subject, text, created_at}].
 * `server` is what startServer() returned.
 */
export async function mailbox(server, to) {
  const q = new URLSearchParams({ to, limit: '5' });
  const res = await fetch(`${server.url}/admin/v1/mail?${q}`, {
    headers: { apikey: server.SECRET_KEY },
  });
  const body = await res.json();
  if (res.status !== 200) {
    throw new Error(`GET /admin/v1/mail: ${res.status} ${JSON.stringify(body)}`);
  }
  return body;
}
