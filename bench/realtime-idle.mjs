// Load client of bench/realtime-idle.sh: opens N idle sockets with one joined
// channel each and reads the server's RSS at 1,000 sockets and at N.
// Env: URL, KEY (publishable), PID (the server's), N.
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';

const { URL, KEY, PID } = process.env;
const N = Number(process.env.N);
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${PID}/status`, 'utf8'))[1]);

function socket(i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${URL.replace('http', 'ws')}/realtime/v1/websocket?apikey=${KEY}&vsn=2.0.0`);
    ws.on('error', reject);
    ws.on('open', () => ws.send(JSON.stringify(['1', '1', `realtime:idle-${i}`, 'phx_join', { config: {} }])));
    ws.on('message', (data) => {
      const [, ref, , event, payload] = JSON.parse(data.toString());
      if (event === 'phx_reply' && ref === '1') {
        if (payload.status === 'ok') resolve(ws);
        else reject(new Error(JSON.stringify(payload)));
      }
    });
  });
}

const open = [];
async function upTo(n) {
  // In batches, so the accept queue never overflows.
  while (open.length < n) {
    const batch = [];
    for (let i = open.length; i < Math.min(n, open.length + 200); i++) batch.push(socket(i));
    open.push(...(await Promise.all(batch)));
  }
  await new Promise((r) => setTimeout(r, 2000)); // let the server's allocator settle before reading
}
await upTo(1000);
const at1000 = rss();
await upTo(N);
const atN = rss();
console.log(`${at1000} ${atN}`);
for (const ws of open) ws.terminate();
