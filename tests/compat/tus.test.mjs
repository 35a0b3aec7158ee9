// Resumable uploads with the real tus-js-client, configured exactly as
// Supabase's guide configures it for `/storage/v1/upload/resumable` (6 MiB
// chunks, data sent with the creation request, the user's token and the
// publishable key as headers, Supabase's metadata keys), against a real
// `wasmbase dev` server. The bytes read back through supabase-js must be the
// bytes sent; an upload stopped after one chunk resumes from its URL; the
// signed variant takes a createSignedUploadUrl token as `x-signature`.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tus from 'tus-js-client';
import { signedIn as signedInAs } from './clients.mjs';
import { startServer } from './server.mjs';

const OWN_FOLDER = `bucket_id = 'videos' AND (storage.foldername(name))[1] = auth.uid()::text`;

const SCHEMA = `
CREATE POLICY "own folder select" ON storage.objects FOR SELECT TO authenticated
  USING (${OWN_FOLDER});
CREATE POLICY "own folder insert" ON storage.objects FOR INSERT TO authenticated
  WITH CHECK (${OWN_FOLDER});
CREATE POLICY "own folder update" ON storage.objects FOR UPDATE TO authenticated
  USING (${OWN_FOLDER}) WITH CHECK (${OWN_FOLDER});
INSERT INTO storage.buckets (id, name, public) VALUES ('videos', 'videos', false);
`;

const MIB = 1024 * 1024;
const CHUNK = 6 * MIB;

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;

before(async () => {
  server = await startServer({ migrations: { '0001_videos.sql': SCHEMA } });
});

after(async () => {
  await server?.stop();
});

/** `n` bytes of a pattern in which every byte value occurs. */
function binary(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i += 1) b[i] = (i * 31 + 7) % 251;
  return b;
}

/** A signed-in user with their access token; { c, user, token }. */
async function user(name) {
  const u = await signedInAs(server, name);
  const { data } = await u.c.auth.getSession();
  return { ...u, token: data.session.access_token };
}

/** The options Supabase's resumable-upload guide passes to tus-js-client. */
function supabaseOptions({ token, objectName, endpoint, headers = {}, hooks = {} }) {
  return {
    endpoint: endpoint ?? `${server.url.replace(/\/+$/, '')}/storage/v1/upload/resumable`,
    retryDelays: [0, 200, 500, 1000],
    headers: {
      apikey: server.PUBLISHABLE_KEY,
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      'x-upsert': 'true',
      ...headers,
    },
    uploadDataDuringCreation: true,
    removeFingerprintOnSuccess: true,
    metadata: {
      bucketName: 'videos',
      objectName,
      contentType: 'application/octet-stream',
      cacheControl: '3600',
    },
    chunkSize: CHUNK,
    ...hooks,
  };
}

/** Runs an upload to its end; resolves with the Upload, rejects with its error. */
function run(data, options) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      ...options,
      onError: reject,
      onSuccess: () => resolve(upload),
    });
    upload.start();
  });
}

test('tus-js-client uploads 20 MiB in 6 MiB chunks and the bytes read back equal', async () => {
  const A = await user('tus-a');
  const body = binary(20 * MIB);
  const objectName = `${A.user.id}/clip.bin`;
  const patches = [];
  await run(
    body,
    supabaseOptions({
      token: A.token,
      objectName,
      hooks: { onChunkComplete: (size, sent) => patches.push(sent) },
    }),
  );
  assert.deepEqual(patches, [CHUNK, 2 * CHUNK, 3 * CHUNK, 20 * MIB]);
  const { data, error } = await A.c.storage.from('videos').download(objectName);
  assert.equal(error, null);
  assert.ok(Buffer.from(await data.arrayBuffer()).equals(body), 'the downloaded bytes differ');
  const listed = await A.c.storage.from('videos').list(A.user.id);
  assert.equal(listed.error, null);
  assert.deepEqual(
    listed.data.map((o) => [o.name, o.metadata.size, o.metadata.cacheControl]),
    [['clip.bin', 20 * MIB, 'max-age=3600']],
  );
});

test('an upload stopped after one chunk resumes from its URL', async () => {
  const A = await user('tus-resume');
  const body = binary(13 * MIB);
  const objectName = `${A.user.id}/resumed.bin`;
  let url;
  await new Promise((resolve, reject) => {
    const upload = new tus.Upload(body, {
      ...supabaseOptions({ token: A.token, objectName }),
      onError: reject,
      onSuccess: () => reject(new Error('the first run should have been stopped')),
      onChunkComplete: () => {
        url = upload.url;
        upload.abort().then(resolve, reject);
      },
    });
    upload.start();
  });
  assert.match(url, /\/storage\/v1\/upload\/resumable\/[0-9a-f]{32}$/);
  // Nothing is visible yet.
  const early = await A.c.storage.from('videos').download(objectName);
  assert.ok(early.error, 'a partial upload is not an object');
  const offsets = [];
  await run(body, {
    ...supabaseOptions({ token: A.token, objectName }),
    uploadUrl: url,
    onProgress: (sent) => offsets.push(sent),
  });
  assert.ok(offsets[0] >= CHUNK, `resumed from ${offsets[0]}, not from the start`);
  const { data } = await A.c.storage.from('videos').download(objectName);
  assert.ok(Buffer.from(await data.arrayBuffer()).equals(body));
});

test('RLS refuses another folder at creation; a signed upload URL token works as x-signature', async () => {
  const A = await user('tus-rls-a');
  const B = await user('tus-rls-b');
  await assert.rejects(
    run(binary(1000), supabaseOptions({ token: B.token, objectName: `${A.user.id}/from-b.bin` })),
    (err) => {
      assert.equal(err.originalResponse?.getStatus(), 403, String(err));
      assert.match(err.originalResponse.getBody(), /AccessDenied/);
      return true;
    },
  );
  const signed = await A.c.storage.from('videos').createSignedUploadUrl(`${A.user.id}/signed.bin`);
  assert.equal(signed.error, null);
  const body = binary(7 * MIB);
  await run(
    body,
    supabaseOptions({
      objectName: `${A.user.id}/signed.bin`,
      endpoint: `${server.url.replace(/\/+$/, '')}/storage/v1/upload/resumable/sign`,
      headers: { 'x-signature': signed.data.token },
    }),
  );
  const { data, error } = await A.c.storage.from('videos').download(`${A.user.id}/signed.bin`);
  assert.equal(error, null);
  assert.ok(Buffer.from(await data.arrayBuffer()).equals(body));
});
