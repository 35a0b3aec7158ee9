// Load client of bench/realtime-db-broadcast.sh: one insert reaches the same
// sockets twice — as a postgres_changes event and as a broadcast sent by the
// table's trigger through realtime.send — and each path's insert → receipt
// latency is measured on the same inserts.
//
// Env: URL, KEY (publishable), PGURL (owner), SOCKETS, RATE (inserts/s),
// SECONDS. Prints "changes n p50 p99", "broadcast n p50 p99", "expected n".
import WebSocket from 'ws';
import pg from 'pg';

const { URL, KEY, PGURL } = process.env;
const SOCKETS = Number(process.env.SOCKETS || 100);
const RATE = Number(process.env.RATE || 200);
const SECONDS = Number(process.env.SECONDS || 10);
const now = () => Number(process.hrtime.bigint()) / 1e6;
const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor((xs.length - 1) * p))];
function report(name, xs) {
  xs.sort((a, b) => a - b);
  console.log(`${name} ${xs.length} ${(xs.length ? pct(xs, 0.5) : 0).toFixed(2)} ${(xs.length ? pct(xs, 0.99) : 0).toFixed(2)}`);
}

const sent = new Map();
const changes = [];
const broadcasts = [];

/** Decodes a kind-4 frame (the server's user broadcast) to its JSON payload. */
function kind4(buf) {
  if (buf[0] !== 4) return null;
  const [t, e, m, enc] = [buf[1], buf[2], buf[3], buf[4]];
  if (enc !== 1) return null;
  return JSON.parse(buf.subarray(5 + t + e + m).toString());
}

function socket(i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${URL.replace('http', 'ws')}/realtime/v1/websocket?apikey=${KEY}&vsn=2.0.0`);
    ws.on('error', reject);
    ws.on('open', () => {
      ws.send(JSON.stringify(['1', '1', 'realtime:feed', 'phx_join', {
        config: { postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'items' }] },
      }]));
    });
    ws.on('message', (data, binary) => {
      const t = now();
      if (binary) {
        const p = kind4(data);
        const t0 = p && sent.get(p.seq);
        if (t0 !== undefined && t0 !== null) broadcasts.push(t - t0);
        return;
      }
      const [, , , event, payload] = JSON.parse(data.toString());
      if (event === 'system' && payload.extension === 'postgres_changes') {
        if (payload.status === 'ok') resolve(ws);
        else reject(new Error(payload.message));
      } else if (event === 'postgres_changes') {
        const t0 = sent.get(payload.data.record.seq);
        if (t0 !== undefined) changes.push(t - t0);
      } else if (event === 'broadcast') {
        const t0 = sent.get(payload.payload?.seq);
        if (t0 !== undefined) broadcasts.push(t - t0);
      }
    });
  });
}

const open = await Promise.all(Array.from({ length: SOCKETS }, (_, i) => socket(i)));
const writers = await Promise.all(Array.from({ length: 4 }, async () => {
  const c = new pg.Client({ connectionString: PGURL });
  await c.connect();
  return c;
}));
const total = RATE * SECONDS;
const start = now();
const pending = [];
for (let i = 0; i < total; i++) {
  const wait = start + (i * 1000) / RATE - now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  sent.set(i, now());
  pending.push(writers[i % writers.length].query('INSERT INTO public.items (seq) VALUES ($1)', [i]));
}
await Promise.all(pending);
await new Promise((r) => setTimeout(r, 1500));
report('changes', changes);
report('broadcast', broadcasts);
console.log(`expected ${total * SOCKETS}`);
for (const w of writers) await w.end();
for (const ws of open) ws.terminate();
