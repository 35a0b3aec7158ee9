// Load client of bench/realtime.sh: insert → postgres_changes event latency
// with many subscribed sockets, next to its floor measured in the same run —
// a bare LISTEN client receiving a NOTIFY sent by the inserting statement.
//
// Env: URL, KEY (publishable), PGURL (owner), USERS (file: one "id token" per
// line), PER_USER (sockets per user), RATE (inserts/s), SECONDS.
// Prints one line per figure: "name count p50_ms p99_ms".
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import pg from 'pg';

const { URL, KEY, PGURL } = process.env;
const PER_USER = Number(process.env.PER_USER || 10);
const RATE = Number(process.env.RATE || 200);
const SECONDS = Number(process.env.SECONDS || 10);
const users = readFileSync(process.env.USERS, 'utf8')
  .trim()
  .split('\n')
  .map((l) => l.split(' '));

const now = () => Number(process.hrtime.bigint()) / 1e6;
const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor((xs.length - 1) * p))];
function report(name, xs) {
  xs.sort((a, b) => a - b);
  console.log(`${name} ${xs.length} ${pct(xs, 0.5).toFixed(2)} ${pct(xs, 0.99).toFixed(2)}`);
}

// When each insert was sent, by its seq (the row's `seq`).
const sent = new Map();
const latencies = [];

function socket(token, topic) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${URL.replace('http', 'ws')}/realtime/v1/websocket?apikey=${KEY}&vsn=2.0.0`);
    ws.on('error', reject);
    ws.on('open', () => {
      ws.send(
        JSON.stringify([
          '1',
          '1',
          topic,
          'phx_join',
          {
            config: { postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'items' }] },
            access_token: token,
          },
        ]),
      );
    });
    ws.on('message', (data, binary) => {
      if (binary) return;
      const [, , , event, payload] = JSON.parse(data.toString());
      if (event === 'system' && payload.extension === 'postgres_changes') {
        if (payload.status === 'ok') resolve(ws);
        else reject(new Error(payload.message));
      } else if (event === 'postgres_changes') {
        const t0 = sent.get(payload.data.record.seq);
        if (t0 !== undefined) latencies.push(now() - t0);
      }
    });
    // realtime-js's heartbeat, so a long run is not closed as silent.
    const hb = setInterval(() => ws.readyState === 1 && ws.send(JSON.stringify([null, 'hb', 'phoenix', 'heartbeat', {}])), 25_000);
    ws.on('close', () => clearInterval(hb));
  });
}

/** Sends `make(i)` at RATE per second for SECONDS; resolves when all answered. */
async function paced(make) {
  const total = RATE * SECONDS;
  const start = now();
  const pending = [];
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / RATE;
    const wait = due - now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    pending.push(make(i));
  }
  await Promise.all(pending);
}

const settle = () => new Promise((r) => setTimeout(r, 1000));

// The floor: LISTEN, and a NOTIFY from the inserting statement (skipped with
// SKIP_FLOOR=1, for the throughput steps).
{
  const listener = new pg.Client({ connectionString: PGURL });
  await listener.connect();
  await listener.query('LISTEN bench_floor');
  const floor = [];
  const sentFloor = new Map();
  listener.on('notification', (n) => {
    const t0 = sentFloor.get(Number(n.payload));
    if (t0 !== undefined) floor.push(now() - t0);
  });
  const writers = await Promise.all(
    Array.from({ length: 4 }, async () => {
      const c = new pg.Client({ connectionString: PGURL });
      await c.connect();
      return c;
    }),
  );
  if (!process.env.SKIP_FLOOR) await paced((i) => {
    sentFloor.set(i, now());
    return writers[i % writers.length].query(
      "WITH r AS (INSERT INTO public.floor_items (owner, seq) VALUES ($1, $2) RETURNING seq) SELECT pg_notify('bench_floor', seq::text) FROM r",
      [users[i % users.length][0], i],
    );
  });
  await settle();
  if (floor.length) report('floor', floor);
  await listener.end();

  // Realtime: every user's PER_USER sockets subscribed, each insert visible to
  // its owner's sockets only.
  const sockets = [];
  for (const [id, token] of users) {
    for (let k = 0; k < PER_USER; k++) sockets.push(socket(token, `realtime:${id}-${k}`));
  }
  const open = await Promise.all(sockets);
  // Seqs above the floor's, so rows never collide with a run before.
  const base = Number(process.env.SEQ_BASE || 0);
  await paced((i) => {
    sent.set(base + i, now());
    return writers[i % writers.length].query('INSERT INTO public.items (owner, seq) VALUES ($1, $2)', [
      users[i % users.length][0],
      base + i,
    ]);
  });
  await settle();
  if (latencies.length) report('realtime', latencies);
  else console.log('realtime 0 0 0');
  console.log(`expected ${RATE * SECONDS * PER_USER}`);
  for (const w of writers) await w.end();
  for (const ws of open) ws.terminate();
}
