// The client side of bench/storage-tus.sh: uploads the same random bytes
// ROUNDS times each way, alternating — one POST of the whole body (fetch) and
// a TUS upload with tus-js-client in 6 MiB chunks, configured as Supabase's
// guide does — and prints one line per way: "median_MBps worst_MBps" and, for
// TUS, the PATCHes' p50 and p99 in ms.
import * as tus from 'tus-js-client';
import { randomBytes } from 'node:crypto';

const { URL: base, KEY, TOKEN, USER_ID } = process.env;
const SIZE = Number(process.env.SIZE_MB || 256) * 1024 * 1024;
const ROUNDS = Number(process.env.ROUNDS || 5);
const CHUNK = 6 * 1024 * 1024;
const body = randomBytes(SIZE);
const headers = { apikey: KEY, authorization: `Bearer ${TOKEN}` };

async function post(i) {
  const t0 = performance.now();
  const r = await fetch(`${base}/storage/v1/object/bench/${USER_ID}/post-${i}.bin`, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/octet-stream' },
    body,
  });
  if (!r.ok) throw new Error(`POST ${r.status}: ${await r.text()}`);
  return performance.now() - t0;
}

function resumable(i, patches) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let last = t0;
    const upload = new tus.Upload(body, {
      endpoint: `${base}/storage/v1/upload/resumable`,
      headers: { ...headers, 'x-upsert': 'true' },
      uploadDataDuringCreation: true,
      removeFingerprintOnSuccess: true,
      retryDelays: [],
      chunkSize: CHUNK,
      metadata: { bucketName: 'bench', objectName: `${USER_ID}/tus-${i}.bin`, contentType: 'application/octet-stream' },
      onChunkComplete: () => {
        const t = performance.now();
        patches.push(t - last);
        last = t;
      },
      onError: reject,
      onSuccess: () => resolve(performance.now() - t0),
    });
    upload.start();
  });
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length - 1) * p))];
};
const mbps = (ms) => SIZE / 1024 / 1024 / (ms / 1000);

const posts = [];
const tuses = [];
const patches = [];
for (let i = 0; i < ROUNDS; i += 1) {
  posts.push(await post(i));
  tuses.push(await resumable(i, patches));
}
console.log(`${mbps(pct(posts, 0.5)).toFixed(0)} ${mbps(Math.max(...posts)).toFixed(0)}`);
console.log(
  `${mbps(pct(tuses, 0.5)).toFixed(0)} ${mbps(Math.max(...tuses)).toFixed(0)} ` +
    `${pct(patches, 0.5).toFixed(1)} ${pct(patches, 0.99).toFixed(1)}`,
);
