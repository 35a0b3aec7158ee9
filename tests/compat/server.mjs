// Starts a real `wasmbase dev` server for the compat suite, in a fresh temp dir
// (so it gets its own private PostgreSQL, secrets and keys, and optionally the
// suite's own project migrations), and reads the dev mailbox that replaces SMTP
// in dev.

import { spawn } from 'node:child_process';
import {
  chmodSync,
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

const START_TIMEOUT_MS = 120_000;
const POLL_MS = 100;
const STOP_TIMEOUT_MS = 30_000;

/** The server binary: $WASMBASE_BIN, else $CARGO_TARGET_DIR/debug/wasmbase. */
export function binaryPath() {
  if (process.env.WASMBASE_BIN) return process.env.WASMBASE_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(homedir(), '.cache', 'wasmbase-target');
  return join(target, 'debug', 'wasmbase');
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
 * Starts `wasmbase dev` and resolves once `.wasmbase/env` is written and
 * `/ready` answers 200. Returns the URL, the keys and `stop()`.
 *
 * `migrations` maps file names to SQL; they are written to `db/migrations/`
 * before the server starts, which applies them (in name order, as the database
 * owner) before `/ready` is 200.
 *
 * @param {{ migrations?: Record<string, string> }} [options]
 */
export async function startServer({ migrations = {} } = {}) {
  for (const name of Object.keys(migrations)) {
    if (basename(name) !== name || !name.endsWith('.sql')) {
      throw new Error(`migration name must be a plain *.sql file name: ${name}`);
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'wasmbase-compat-'));
  // mkdtemp makes the dir 0700. When run as root, the embedded PostgreSQL runs as
  // an unprivileged user; if it cannot reach ./.wasmbase/pg the cluster goes to
  // /var/lib/wasmbase/clusters/<hash> instead, outside what cleanup removes.
  chmodSync(dir, 0o755);
  const names = Object.keys(migrations);
  if (names.length > 0) {
    try {
      const migrationsDir = join(dir, 'db', 'migrations');
      mkdirSync(migrationsDir, { recursive: true });
      for (const name of names) writeFileSync(join(migrationsDir, name), migrations[name]);
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
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
  });

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
    /** The dev mailbox for `to`, newest first. */
    mailbox: (to) => mailbox(server, to),
  };
  return server;
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
