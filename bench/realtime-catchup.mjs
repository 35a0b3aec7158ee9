// Load client of bench/realtime-catchup.sh. Each round: the socket leaves,
// MISSED rows are inserted (one transaction each, 8 connections), the socket
// rejoins with the position of the last change it saw and the time until the
// last missed change arrives is taken; then the same rows are read with one
// SELECT through /rest/v1 and one straight from PostgreSQL.
//
// Env: URL, KEY (publishable), PGURL (owner), MISSED, REPS.
// Prints "catchup p50 p99 rate", "rest p50 p99 rate", "select p50 p99 rate"
// (ms; rate = rows per second at p50).
import WebSocket from 'ws';
import pg from 'pg';

const { URL, KEY, PGURL } = process.env;
const MISSED = Number(process.env.MISSED || 10000);
const REPS = Number(process.env.REPS || 5);
const now = () => Number(process.hrtime.bigint()) / 1e6;
const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor((xs.length - 1) * p))];
function report(name, xs) {
  xs.sort((a, b) => a - b);
  const p50 = pct(xs, 0.5);
  console.log(`${name} ${p50.toFixed(1)} ${pct(xs, 0.99).toFixed(1)} ${Math.round((MISSED * 1000) / p50)}`);
}

/** Joins with `position` (or none); resolves with the socket and a reader of events. */
function join(position) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${URL.replace('http', 'ws')}/realtime/v1/websocket?apikey=${KEY}&vsn=2.0.0`);
    const state = { ws, events: 0, last: null, position, subscribed: null, onEvent: () => {} };
    ws.on('error', reject);
    ws.on('open', () => {
      const config = { postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'items' }] };
      if (position) config.postgres_changes_options = { position };
      state.sentAt = now();
      ws.send(JSON.stringify(['1', '1', 'realtime:items', 'phx_join', { config }]));
    });
    ws.on('message', (data) => {
      const [, ref, , event, payload] = JSON.parse(data.toString());
      if (event === 'system' && payload.extension === 'postgres_changes') {
        if (payload.status !== 'ok') return reject(new Error(payload.message));
        state.position = payload.position;
        if (!state.subscribed) {
          state.subscribed = now();
          resolve(state);
        }
      } else if (event === 'postgres_changes') {
        state.events += 1;
        state.last = payload.data.record.id;
        state.position = ref;
        state.onEvent();
      }
    });
  });
}

const writers = await Promise.all(Array.from({ length: 8 }, async () => {
  const c = new pg.Client({ connectionString: PGURL });
  await c.connect();
  return c;
}));
const reader = writers[0];
const catchups = [];
const rests = [];
const selects = [];
let s = await join(null);
let seq = 0;
for (let rep = 0; rep < REPS; rep++) {
  const position = s.position;
  s.ws.terminate();
  const { rows } = await reader.query('SELECT coalesce(max(id), 0)::bigint AS id FROM public.items');
  const before = Number(rows[0].id);
  // The missed changes: one transaction each.
  let next = 0;
  await Promise.all(writers.map(async (w) => {
    while (next < MISSED) {
      next += 1;
      seq += 1;
      await w.query("INSERT INTO public.items (seq, body) VALUES ($1, 'a missed change of some length')", [seq]);
    }
  }));
  // Rejoin with the position: time until the last missed change arrives.
  const t0 = now();
  s = await new Promise((resolve, reject) => {
    join(position).then((st) => {
      const done = () => {
        if (st.events >= MISSED) {
          catchups.push(now() - t0);
          resolve(st);
        }
      };
      st.onEvent = done;
      done();
    }, reject);
  });
  if (s.events !== MISSED) throw new Error(`caught up on ${s.events} of ${MISSED}`);
  // The same rows, read with one SELECT.
  let t = now();
  const r = await fetch(`${URL}/rest/v1/items?id=gt.${before}&order=id`, { headers: { apikey: KEY } });
  const got = await r.json();
  rests.push(now() - t);
  if (got.length !== MISSED) throw new Error(`REST read ${got.length}`);
  t = now();
  const q = await reader.query('SELECT * FROM public.items WHERE id > $1 ORDER BY id', [before]);
  selects.push(now() - t);
  if (q.rows.length !== MISSED) throw new Error(`SELECT read ${q.rows.length}`);
}
report('catchup', catchups);
report('rest', rests);
report('select', selects);
s.ws.terminate();
for (const w of writers) await w.end();
