// Load client of bench/realtime-broadcast.sh: CHANNELS channels × PER sockets;
// one socket of each channel sends MESSAGES broadcasts as fast as the server
// takes them; every socket (the sender too) receives each one. Prints the
// deliveries per second, from the first send to the last delivery.
// Env: MODE (realtime | minimal), URL, KEY (realtime), CHANNELS, PER, MESSAGES.
import WebSocket from 'ws';

const { MODE, URL, KEY } = process.env;
const CHANNELS = Number(process.env.CHANNELS || 10);
const PER = Number(process.env.PER || 100);
const MESSAGES = Number(process.env.MESSAGES || 500);
const expected = CHANNELS * PER * MESSAGES;
let delivered = 0;
let done;
const finished = new Promise((r) => (done = r));

function open(c) {
  return new Promise((resolve, reject) => {
    const topic = `bench-${c}`;
    const url =
      MODE === 'realtime'
        ? `${URL.replace('http', 'ws')}/realtime/v1/websocket?apikey=${KEY}&vsn=2.0.0`
        : `${URL.replace('http', 'ws')}/ws?topic=${topic}`;
    const ws = new WebSocket(url);
    ws.on('error', reject);
    ws.on('open', () => {
      if (MODE !== 'realtime') return resolve(ws);
      ws.send(JSON.stringify(['1', '1', `realtime:${topic}`, 'phx_join', { config: { broadcast: { self: true } } }]));
    });
    ws.on('message', (data, binary) => {
      if (MODE === 'realtime' && !binary) {
        const [, ref, , event] = JSON.parse(data.toString());
        if (event === 'phx_reply' && ref === '1') resolve(ws);
        if (event !== 'broadcast') return;
      }
      delivered += 1;
      if (delivered === expected) done();
    });
  });
}

const sockets = [];
for (let c = 0; c < CHANNELS; c++) {
  const batch = [];
  for (let k = 0; k < PER; k++) batch.push(open(c));
  sockets.push(await Promise.all(batch));
}
const payload = JSON.stringify({ x: 1, text: 'hello' });
const t0 = performance.now();
for (let m = 0; m < MESSAGES; m++) {
  for (let c = 0; c < CHANNELS; c++) {
    const ws = sockets[c][0];
    if (MODE === 'realtime') {
      ws.send(JSON.stringify(['1', null, `realtime:bench-${c}`, 'broadcast', { type: 'broadcast', event: 'm', payload: { x: 1, text: 'hello' } }]));
    } else {
      ws.send(payload);
    }
  }
  // Let the server drain a little: no client-side pile-up of 5,000 frames.
  if (m % 50 === 49) await new Promise((r) => setImmediate(r));
}
const timeout = setTimeout(() => done(), 60_000);
await finished;
clearTimeout(timeout);
const secs = (performance.now() - t0) / 1000;
console.log(`${Math.round(delivered / secs)} ${delivered} ${expected}`);
for (const s of sockets.flat()) s.terminate();
