// Supabase Storage compatibility of Wasmbase's /storage/v1, driven through the
// real @supabase/supabase-js (`supabase.storage`) against a real `wasmbase dev`
// server that applied the migration below. Each test pins one user-visible
// behaviour an app built on supabase-js relies on: buckets, uploads (Blob as
// multipart, raw bytes), upsert, downloads, list, public and signed URLs,
// signed upload URLs, move/copy/remove, row-level security on storage.objects,
// and the per-bucket size and MIME limits.
//
// Set-up is what a Supabase project does: the migration (a project migration,
// applied after the platform ones that create the `storage` schema) writes
// policies on storage.objects that give each signed-in user their own folder
// `avatars/<uid>/…`, with no policy on storage.buckets (Supabase needs none for
// object access), and inserts one bucket straight into storage.buckets. The
// `avatars` bucket itself is created once with the secret (service) key in
// before(); every other bucket is made by the test that uses it, under a unique
// name, and users are fresh per test, so the tests do not depend on each other.
//
// Errors: storage-js turns an error body `{statusCode, code, error, message}`
// into a StorageApiError with `statusCode` (the body's string, e.g. '404'),
// `code` (e.g. 'NoSuchKey'), `message` and `status` (the HTTP status). Supabase
// answers nearly every client error with HTTP 400 and the real status in the
// body's `statusCode`; these tests accept either 400 or that status over HTTP,
// and pin `statusCode` and `code`.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { deflateSync } from 'node:zlib';
import { makeClient, unique, signedIn as signedInAs } from './clients.mjs';
import { startServer } from './server.mjs';

// ---------------------------------------------------------------- schema

const OWN_FOLDER = `bucket_id = 'avatars' AND (storage.foldername(name))[1] = auth.uid()::text`;

const SCHEMA = `
-- Each signed-in user may read, write, change and delete objects under
-- avatars/<their uid>/ and nothing else; anon gets no policy at all.
CREATE POLICY "own folder select" ON storage.objects FOR SELECT TO authenticated
  USING (${OWN_FOLDER});
CREATE POLICY "own folder insert" ON storage.objects FOR INSERT TO authenticated
  WITH CHECK (${OWN_FOLDER});
CREATE POLICY "own folder update" ON storage.objects FOR UPDATE TO authenticated
  USING (${OWN_FOLDER}) WITH CHECK (${OWN_FOLDER});
CREATE POLICY "own folder delete" ON storage.objects FOR DELETE TO authenticated
  USING (${OWN_FOLDER});

-- A bucket made the way Supabase's starter migrations make one.
INSERT INTO storage.buckets (id, name, public) VALUES ('seeded', 'seeded', false);
`;

// ---------------------------------------------------------------- setup

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
/** A client with the secret key (role service_role: bypasses RLS). */
let service;
/** A client with the publishable key and no session (role anon). */
let anon;

before(async () => {
  server = await startServer({ migrations: { '0001_storage_policies.sql': SCHEMA } });
  service = client(server.SECRET_KEY);
  anon = client();
  const created = await service.storage.createBucket('avatars', { public: false });
  assert.equal(created.error, null, `createBucket avatars: ${JSON.stringify(created.error)}`);
});

after(async () => {
  await server?.stop();
});

// ---------------------------------------------------------------- helpers




/** A supabase-js client of this suite's server. */
function client(key = server.PUBLISHABLE_KEY) {
  return makeClient(server, key);
}

/** A client signed in as a fresh user; { c, user }. */
function signedIn(name) {
  return signedInAs(server, name);
}

/** The server's URL without a trailing slash (as supabase-js builds its URLs). */
function base() {
  return server.url.replace(/\/+$/, '');
}

/** Asserts a successful storage-js result and returns its data. */
function ok(res) {
  assert.equal(res.error, null, `unexpected error: ${JSON.stringify(res.error)}`);
  return res.data;
}

/**
 * Asserts a failed storage-js result: a StorageApiError whose `statusCode` (the
 * body's, a string) is `statusCode` and, if given, whose `code` is `code`; the
 * HTTP status is 400 (as Supabase sends) or the same status. Returns the error.
 */
function failed(res, { statusCode, code }) {
  const { error } = res;
  assert.ok(error, `expected an error, got data ${JSON.stringify(res.data)}`);
  const shown = JSON.stringify(error);
  assert.equal(error.name, 'StorageApiError', shown);
  assert.equal(error.statusCode, statusCode, shown);
  if (code !== undefined) assert.equal(error.code, code, shown);
  assert.ok(
    error.status === 400 || error.status === Number(statusCode),
    `HTTP status 400 or ${statusCode}: ${shown}`,
  );
  assert.equal(typeof error.message, 'string');
  assert.ok(error.message.length > 0, shown);
  assert.equal(res.data, null);
  return error;
}

/** The bytes of a Blob. */
async function bytesOf(blob) {
  return Buffer.from(await blob.arrayBuffer());
}

/** Downloads `path` through `bucketApi` (a `storage.from(...)`) and returns its bytes. */
async function downloaded(bucketApi, path) {
  return bytesOf(ok(await bucketApi.download(path)));
}

/** A plain fetch() with no key or token at all; { status, headers, body: Buffer }. */
async function rawGet(url) {
  const res = await fetch(url);
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

/** `n` bytes of a repeating non-text pattern (every byte value occurs). */
function binary(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i += 1) b[i] = (i * 7 + 3) % 256;
  return b;
}

/** The names a list() returned, in its order. */
function names(entries) {
  return entries.map((e) => e.name);
}

/** Creates a bucket with the service client (asserting success); returns its id. */
async function newBucket(name, options = { public: false }) {
  const id = unique(name);
  const data = ok(await service.storage.createBucket(id, options));
  assert.equal(data.name, id);
  return id;
}

/** `signedUrl` with one character in the middle of its token changed. */
function tamperToken(signedUrl) {
  const u = new URL(signedUrl);
  const token = u.searchParams.get('token');
  assert.ok(token, `signed URL has a token: ${signedUrl}`);
  let i = Math.floor(token.length / 2);
  while (token[i] === '.') i += 1;
  const swapped = token[i] === 'A' ? 'B' : 'A';
  u.searchParams.set('token', token.slice(0, i) + swapped + token.slice(i + 1));
  return u.toString();
}

/** Polls `check` (an async predicate) until it is true or `timeoutMs` passes. */
async function eventually(check, what, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(100);
  }
  assert.fail(`not within ${timeoutMs / 1000}s: ${what}`);
}

// ---------------------------------------------------------------- tests

// 1. Buckets: create (data is {name}), get (id, name, public, limits; no limits
//    is null), list, update, a duplicate id is 409, an unknown bucket 404, a
//    non-empty bucket cannot be deleted (409) until emptied; anon can neither
//    create buckets nor see private ones.
test('buckets: create, get, list, update, empty, delete', async () => {
  const plain = await newBucket('plain');
  const limited = await newBucket('limited', {
    public: false,
    fileSizeLimit: 1024,
    allowedMimeTypes: ['image/*'],
  });

  const got = ok(await service.storage.getBucket(plain));
  assert.equal(got.id, plain);
  assert.equal(got.name, plain);
  assert.equal(got.public, false);
  assert.equal(got.file_size_limit, null);
  assert.equal(got.allowed_mime_types, null);

  const gotLimited = ok(await service.storage.getBucket(limited));
  assert.equal(gotLimited.public, false);
  assert.equal(gotLimited.file_size_limit, 1024);
  assert.deepStrictEqual(gotLimited.allowed_mime_types, ['image/*']);

  failed(await service.storage.createBucket(plain, { public: true }), {
    statusCode: '409',
    code: 'BucketAlreadyExists',
  });
  assert.equal(
    ok(await service.storage.getBucket(plain)).public,
    false,
    'duplicate changed nothing',
  );

  failed(await service.storage.getBucket(unique('no-such-bucket')), {
    statusCode: '404',
    code: 'NoSuchBucket',
  });

  const listed = ok(await service.storage.listBuckets());
  assert.ok(Array.isArray(listed));
  const byId = new Map(listed.map((b) => [b.id, b]));
  for (const id of [plain, limited, 'avatars', 'seeded']) assert.ok(byId.has(id), `lists ${id}`);
  assert.equal(byId.get(plain).public, false);
  assert.equal(byId.get(limited).file_size_limit, 1024);

  ok(
    await service.storage.updateBucket(plain, {
      public: true,
      fileSizeLimit: 2048,
      allowedMimeTypes: ['text/plain'],
    }),
  );
  const updated = ok(await service.storage.getBucket(plain));
  assert.equal(updated.public, true);
  assert.equal(updated.file_size_limit, 2048);
  assert.deepStrictEqual(updated.allowed_mime_types, ['text/plain']);

  // No policy on storage.buckets: anon sees no bucket and may create none.
  const anonList = ok(await anon.storage.listBuckets());
  assert.ok(!anonList.some((b) => b.id === limited), 'anon does not see a private bucket');
  const anonBucket = unique('anon-bucket');
  failed(await anon.storage.createBucket(anonBucket), { statusCode: '403' });
  failed(await service.storage.getBucket(anonBucket), { statusCode: '404' });

  // A non-empty bucket is not deleted; emptied, it is.
  const files = service.storage.from(plain);
  ok(await files.upload('a.txt', Buffer.from('a'), { contentType: 'text/plain' }));
  ok(await files.upload('dir/b.txt', Buffer.from('b'), { contentType: 'text/plain' }));
  const notEmpty = failed(await service.storage.deleteBucket(plain), { statusCode: '409' });
  assert.match(notEmpty.message, /not empty/i);
  assert.equal(ok(await service.storage.getBucket(plain)).id, plain);
  assert.deepStrictEqual(await downloaded(files, 'a.txt'), Buffer.from('a'));

  ok(await service.storage.emptyBucket(plain));
  await eventually(
    async () => ok(await files.list('', { limit: 10 })).length === 0,
    'emptyBucket removes every object',
  );
  failed(await files.download('a.txt'), { statusCode: '404' });
  ok(await service.storage.deleteBucket(plain));
  failed(await service.storage.getBucket(plain), { statusCode: '404', code: 'NoSuchBucket' });
  assert.ok(!ok(await service.storage.listBuckets()).some((b) => b.id === plain));

  // An empty bucket is deleted at once.
  ok(await service.storage.deleteBucket(limited));
  failed(await service.storage.getBucket(limited), { statusCode: '404' });
});

// 2. Uploads by a signed-in user into their own folder: a Blob (sent as
//    multipart/form-data, content type from the Blob), raw bytes (Uint8Array
//    and Buffer, content type from `contentType`); the same bytes come back.
//    A second upload to the same path is refused (409 KeyAlreadyExists, "The
//    resource already exists") and changes nothing; `upsert: true` and
//    `update()` replace the object.
test('upload: Blob, raw bytes, duplicate refused, upsert and update replace', async () => {
  const A = await signedIn('upload-a');
  const avatars = A.c.storage.from('avatars');
  const note = `${A.user.id}/note.txt`;

  const up = ok(await avatars.upload(note, new Blob(['hello blob'], { type: 'text/plain' })));
  assert.equal(up.path, note);
  assert.equal(up.fullPath, `avatars/${note}`);
  assert.deepStrictEqual(await downloaded(avatars, note), Buffer.from('hello blob'));

  const bin = `${A.user.id}/bytes.bin`;
  const payload = binary(300);
  ok(
    await avatars.upload(bin, new Uint8Array(payload), { contentType: 'application/octet-stream' }),
  );
  const binBlob = ok(await avatars.download(bin));
  assert.deepStrictEqual(await bytesOf(binBlob), payload);
  assert.equal(binBlob.type, 'application/octet-stream');

  const png = `${A.user.id}/image.png`;
  const pngBytes = binary(64);
  ok(await avatars.upload(png, pngBytes, { contentType: 'image/png' }));
  const pngBlob = ok(await avatars.download(png));
  assert.deepStrictEqual(await bytesOf(pngBlob), pngBytes);
  assert.equal(pngBlob.type, 'image/png');

  // Without upsert, an existing path is refused and keeps its bytes.
  const dup = failed(await avatars.upload(note, new Blob(['again'], { type: 'text/plain' })), {
    statusCode: '409',
    code: 'KeyAlreadyExists',
  });
  assert.match(dup.message, /already exists/);
  failed(await avatars.upload(note, Buffer.from('again'), { contentType: 'text/plain' }), {
    statusCode: '409',
  });
  assert.deepStrictEqual(await downloaded(avatars, note), Buffer.from('hello blob'));

  // upsert: true overwrites (Blob and raw).
  ok(await avatars.upload(note, new Blob(['replaced'], { type: 'text/plain' }), { upsert: true }));
  assert.deepStrictEqual(await downloaded(avatars, note), Buffer.from('replaced'));
  ok(
    await avatars.upload(bin, Buffer.from('raw again'), {
      upsert: true,
      contentType: 'text/plain',
    }),
  );
  assert.deepStrictEqual(await downloaded(avatars, bin), Buffer.from('raw again'));

  // update() (PUT) replaces an existing object.
  ok(await avatars.update(note, new Blob(['updated'], { type: 'text/plain' })));
  assert.deepStrictEqual(await downloaded(avatars, note), Buffer.from('updated'));

  // The folder holds exactly the three objects, with their sizes.
  const listed = ok(await avatars.list(A.user.id));
  assert.deepStrictEqual(names(listed), ['bytes.bin', 'image.png', 'note.txt']);
  const png64 = listed.find((e) => e.name === 'image.png');
  assert.equal(png64.metadata.size, 64);
  assert.equal(png64.metadata.mimetype, 'image/png');
});

// 3. Downloads: a missing object, in an existing or a missing bucket, is an
//    error (404; NoSuchKey for the object), not an empty Blob.
test('download: missing object or bucket is an error', async () => {
  const bucket = await newBucket('dl');
  const files = service.storage.from(bucket);
  ok(await files.upload('here.txt', Buffer.from('here'), { contentType: 'text/plain' }));
  assert.deepStrictEqual(await downloaded(files, 'here.txt'), Buffer.from('here'));

  failed(await files.download('not-here.txt'), { statusCode: '404', code: 'NoSuchKey' });
  failed(await files.download('dir/not-here.txt'), { statusCode: '404', code: 'NoSuchKey' });
  const noBucket = await service.storage.from(unique('no-such-bucket')).download('here.txt');
  failed(noBucket, { statusCode: '404' });
});

// 4. list(): one folder level at a time, names relative to the prefix (with or
//    without a trailing slash), sub-folders as entries with a null id, files
//    with their metadata; `search` matches names starting with it (files and
//    folders); limit/offset page; sortBy name desc; an unknown folder is [].
test('list: prefix, folders, search, limit/offset, sort', async () => {
  const bucket = await newBucket('list');
  const files = service.storage.from(bucket);
  const paths = [
    'docs/a.txt',
    'docs/b.txt',
    'docs/sub/c.txt',
    'docs/sub/deeper/d.txt',
    'top.txt',
    'report-2024.txt',
    'report-2025.txt',
  ];
  for (const p of paths) {
    ok(await files.upload(p, Buffer.from(`content of ${p}`), { contentType: 'text/plain' }));
  }

  const root = ok(await files.list());
  assert.deepStrictEqual(names(root), ['docs', 'report-2024.txt', 'report-2025.txt', 'top.txt']);
  const docsEntry = root.find((e) => e.name === 'docs');
  assert.equal(docsEntry.id, null, 'a folder has a null id');
  const top = root.find((e) => e.name === 'top.txt');
  assert.equal(typeof top.id, 'string');
  assert.equal(top.metadata.size, Buffer.byteLength('content of top.txt'));
  assert.equal(top.metadata.mimetype, 'text/plain');

  const docs = ok(await files.list('docs'));
  assert.deepStrictEqual(names(docs), ['a.txt', 'b.txt', 'sub']);
  assert.equal(docs.find((e) => e.name === 'sub').id, null);
  assert.equal(typeof docs.find((e) => e.name === 'a.txt').id, 'string');
  assert.deepStrictEqual(names(ok(await files.list('docs/'))), ['a.txt', 'b.txt', 'sub']);
  assert.deepStrictEqual(names(ok(await files.list('docs/sub'))), ['c.txt', 'deeper']);
  assert.deepStrictEqual(names(ok(await files.list('docs/sub/deeper'))), ['d.txt']);

  assert.deepStrictEqual(names(ok(await files.list('', { search: 'report' }))), [
    'report-2024.txt',
    'report-2025.txt',
  ]);
  assert.deepStrictEqual(names(ok(await files.list('', { search: 'report-2025' }))), [
    'report-2025.txt',
  ]);
  assert.deepStrictEqual(names(ok(await files.list('docs', { search: 'b' }))), ['b.txt']);
  assert.deepStrictEqual(names(ok(await files.list('docs', { search: 's' }))), ['sub']);
  assert.deepStrictEqual(names(ok(await files.list('docs', { search: 'zzz' }))), []);

  assert.deepStrictEqual(names(ok(await files.list('', { limit: 2, offset: 1 }))), [
    'report-2024.txt',
    'report-2025.txt',
  ]);
  assert.deepStrictEqual(
    names(ok(await files.list('', { sortBy: { column: 'name', order: 'desc' } }))),
    ['top.txt', 'report-2025.txt', 'report-2024.txt', 'docs'],
  );

  assert.deepStrictEqual(ok(await files.list('no-such-folder')), []);
});

// 5. Public URLs: getPublicUrl on a public bucket, fetched with no key at all,
//    gives the bytes with the stored Content-Type and Cache-Control (from
//    `cacheControl`); names with spaces work; `download` asks for an
//    attachment. The same URL shape on a private bucket, or for a missing
//    object, gives no bytes. A bucket made public by updateBucket serves too.
test('getPublicUrl: public bucket served without a key, private refused', async () => {
  const pub = await newBucket('public-files', { public: true });
  const files = service.storage.from(pub);
  const logo = binary(200);
  ok(await files.upload('img/logo.png', logo, { contentType: 'image/png', cacheControl: '120' }));

  const { data } = files.getPublicUrl('img/logo.png');
  assert.equal(data.publicUrl, `${base()}/storage/v1/object/public/${pub}/img/logo.png`);
  const got = await rawGet(data.publicUrl);
  assert.equal(got.status, 200);
  assert.deepStrictEqual(got.body, logo);
  assert.equal(got.headers.get('content-type'), 'image/png');
  assert.equal(got.headers.get('cache-control'), 'max-age=120');

  // A Blob upload: its cacheControl travels as a form field.
  ok(
    await files.upload('docs/hello world.txt', new Blob(['spaced'], { type: 'text/plain' }), {
      cacheControl: '60',
    }),
  );
  const spaced = await rawGet(files.getPublicUrl('docs/hello world.txt').data.publicUrl);
  assert.equal(spaced.status, 200);
  assert.equal(spaced.body.toString(), 'spaced');
  assert.equal(spaced.headers.get('cache-control'), 'max-age=60');

  const asFile = await rawGet(
    files.getPublicUrl('img/logo.png', { download: 'my-logo.png' }).data.publicUrl,
  );
  assert.equal(asFile.status, 200);
  assert.deepStrictEqual(asFile.body, logo);
  assert.match(asFile.headers.get('content-disposition') ?? '', /^attachment/);
  assert.match(asFile.headers.get('content-disposition') ?? '', /my-logo\.png/);

  const missing = await rawGet(files.getPublicUrl('img/nope.png').data.publicUrl);
  assert.ok(missing.status === 400 || missing.status === 404, `missing: ${missing.status}`);

  // A private bucket: same URL shape, no bytes.
  const priv = await newBucket('private-files');
  const privFiles = service.storage.from(priv);
  ok(await privFiles.upload('img/logo.png', logo, { contentType: 'image/png' }));
  const refused = await rawGet(privFiles.getPublicUrl('img/logo.png').data.publicUrl);
  assert.ok(refused.status >= 400 && refused.status < 500, `private: ${refused.status}`);
  assert.ok(!refused.body.equals(logo));

  // Made public, it serves.
  ok(await service.storage.updateBucket(priv, { public: true }));
  const nowPublic = await rawGet(privFiles.getPublicUrl('img/logo.png').data.publicUrl);
  assert.equal(nowPublic.status, 200);
  assert.deepStrictEqual(nowPublic.body, logo);
});

// 6. Signed URLs on a private bucket: fetched with no key they give the bytes;
//    a tampered token, a token for another object, and an expired token give
//    none; signing a missing object is 404; createSignedUrls signs a batch in
//    order, with a per-path error (and null signedUrl) for a missing one.
test('createSignedUrl / createSignedUrls', async () => {
  const bucket = await newBucket('signed');
  const files = service.storage.from(bucket);
  ok(await files.upload('secret.txt', Buffer.from('top secret'), { contentType: 'text/plain' }));
  ok(await files.upload('dir/other.txt', Buffer.from('other'), { contentType: 'text/plain' }));

  const { signedUrl } = ok(await files.createSignedUrl('secret.txt', 60));
  assert.ok(signedUrl.startsWith(`${base()}/storage/v1/object/sign/${bucket}/secret.txt?`));
  const got = await rawGet(signedUrl);
  assert.equal(got.status, 200);
  assert.equal(got.body.toString(), 'top secret');

  const tampered = await rawGet(tamperToken(signedUrl));
  assert.ok(tampered.status >= 400 && tampered.status < 500, `tampered: ${tampered.status}`);
  assert.ok(!tampered.body.toString().includes('top secret'));

  // secret.txt's token does not open dir/other.txt.
  const { signedUrl: otherUrl } = ok(await files.createSignedUrl('dir/other.txt', 60));
  const swapped = new URL(otherUrl);
  swapped.searchParams.set('token', new URL(signedUrl).searchParams.get('token'));
  const wrongObject = await rawGet(swapped.toString());
  assert.ok(
    wrongObject.status >= 400 && wrongObject.status < 500,
    `swapped: ${wrongObject.status}`,
  );
  assert.ok(!wrongObject.body.toString().includes('top secret'));
  assert.equal((await rawGet(otherUrl)).body.toString(), 'other');

  failed(await files.createSignedUrl('missing.txt', 60), { statusCode: '404' });

  const batch = ok(
    await files.createSignedUrls(['dir/other.txt', 'missing.txt', 'secret.txt'], 60),
  );
  assert.deepStrictEqual(
    batch.map((b) => b.path),
    ['dir/other.txt', 'missing.txt', 'secret.txt'],
  );
  assert.equal(batch[0].error, null);
  assert.equal(batch[2].error, null);
  assert.equal((await rawGet(batch[0].signedUrl)).body.toString(), 'other');
  assert.equal((await rawGet(batch[2].signedUrl)).body.toString(), 'top secret');
  assert.equal(typeof batch[1].error, 'string');
  assert.ok(batch[1].error.length > 0);
  assert.equal(batch[1].signedUrl, null);

  // Expiry: a 1-second URL no longer works 2.5 s later.
  const { signedUrl: shortUrl } = ok(await files.createSignedUrl('secret.txt', 1));
  await sleep(2_500);
  const expired = await rawGet(shortUrl);
  assert.ok(expired.status >= 400 && expired.status < 500, `expired: ${expired.status}`);
  assert.ok(!expired.body.toString().includes('top secret'));
});

// 7. move, copy and remove by a signed-in user in their own folder: move
//    leaves nothing at the source, copy keeps both (its data.path is
//    `<bucket>/<dest>`), copying onto an existing object is 409, remove returns
//    the removed objects (a missing path is skipped, not an error).
test('move, copy, remove', async () => {
  const A = await signedIn('move-a');
  const avatars = A.c.storage.from('avatars');
  const dir = A.user.id;

  ok(await avatars.upload(`${dir}/from.txt`, new Blob(['moving'], { type: 'text/plain' })));
  ok(await avatars.move(`${dir}/from.txt`, `${dir}/to.txt`));
  failed(await avatars.download(`${dir}/from.txt`), { statusCode: '404', code: 'NoSuchKey' });
  assert.deepStrictEqual(await downloaded(avatars, `${dir}/to.txt`), Buffer.from('moving'));

  const copied = ok(await avatars.copy(`${dir}/to.txt`, `${dir}/sub/copy.txt`));
  assert.equal(copied.path, `avatars/${dir}/sub/copy.txt`);
  assert.deepStrictEqual(await downloaded(avatars, `${dir}/to.txt`), Buffer.from('moving'));
  assert.deepStrictEqual(await downloaded(avatars, `${dir}/sub/copy.txt`), Buffer.from('moving'));
  failed(await avatars.copy(`${dir}/to.txt`, `${dir}/sub/copy.txt`), { statusCode: '409' });

  const removed = ok(
    await avatars.remove([`${dir}/to.txt`, `${dir}/sub/copy.txt`, `${dir}/never-existed.txt`]),
  );
  assert.ok(Array.isArray(removed));
  assert.deepStrictEqual(names(removed).sort(), [`${dir}/sub/copy.txt`, `${dir}/to.txt`]);
  failed(await avatars.download(`${dir}/to.txt`), { statusCode: '404' });
  failed(await avatars.download(`${dir}/sub/copy.txt`), { statusCode: '404' });
  assert.deepStrictEqual(ok(await avatars.list(dir)), []);

  assert.deepStrictEqual(ok(await avatars.remove([`${dir}/never-existed.txt`])), []);
});

// 8. Signed upload URLs: the owner asks for one (checked against their INSERT
//    policy), anyone holding the token uploads with no session, the object is
//    the owner's to read. The token is for that path only, uploads once
//    (without upsert a second upload is 409), and a download token is not an
//    upload token. Another user cannot get one for the owner's folder.
test('createSignedUploadUrl + uploadToSignedUrl', async () => {
  const A = await signedIn('signup-a');
  const B = await signedIn('signup-b');
  const mine = A.c.storage.from('avatars');
  const path = `${A.user.id}/via-token.txt`;

  const signed = ok(await mine.createSignedUploadUrl(path));
  assert.equal(signed.path, path);
  assert.equal(typeof signed.token, 'string');
  assert.ok(signed.token.length > 0);
  assert.ok(
    signed.signedUrl.startsWith(`${base()}/storage/v1/object/upload/sign/avatars/${path}?`),
    signed.signedUrl,
  );

  // An anonymous client (publishable key, no session) uploads with the token.
  const stranger = client().storage.from('avatars');
  const up = ok(
    await stranger.uploadToSignedUrl(
      path,
      signed.token,
      new Blob(['sent with a token'], { type: 'text/plain' }),
    ),
  );
  assert.equal(up.path, path);
  assert.equal(up.fullPath, `avatars/${path}`);
  assert.deepStrictEqual(await downloaded(mine, path), Buffer.from('sent with a token'));

  // Once: the token carries no upsert, so the path is now taken.
  failed(
    await stranger.uploadToSignedUrl(path, signed.token, Buffer.from('twice'), {
      contentType: 'text/plain',
    }),
    { statusCode: '409' },
  );
  assert.deepStrictEqual(await downloaded(mine, path), Buffer.from('sent with a token'));

  // The token is for its own path only.
  const fresh = ok(await mine.createSignedUploadUrl(`${A.user.id}/raw.bin`));
  const elsewhere = await stranger.uploadToSignedUrl(
    `${A.user.id}/elsewhere.bin`,
    fresh.token,
    binary(10),
    { contentType: 'application/octet-stream' },
  );
  assert.ok(elsewhere.error, 'a token does not upload to another path');
  failed(await mine.download(`${A.user.id}/elsewhere.bin`), { statusCode: '404' });
  // …where raw bytes work too.
  ok(
    await stranger.uploadToSignedUrl(`${A.user.id}/raw.bin`, fresh.token, binary(10), {
      contentType: 'application/octet-stream',
    }),
  );
  assert.deepStrictEqual(await downloaded(mine, `${A.user.id}/raw.bin`), binary(10));

  // A download token is not an upload token: sign raw.bin for download, remove
  // it, and the token still cannot put anything back at that path.
  const dl = ok(await mine.createSignedUrl(`${A.user.id}/raw.bin`, 60));
  const dlToken = new URL(dl.signedUrl).searchParams.get('token');
  ok(await mine.remove([`${A.user.id}/raw.bin`]));
  const misuse = await stranger.uploadToSignedUrl(`${A.user.id}/raw.bin`, dlToken, binary(5), {
    contentType: 'application/octet-stream',
  });
  assert.ok(misuse.error, 'a download token does not upload');
  failed(await mine.download(`${A.user.id}/raw.bin`), { statusCode: '404' });

  // B may not get an upload URL for A's folder (A's INSERT policy only).
  failed(await B.c.storage.from('avatars').createSignedUploadUrl(`${A.user.id}/from-b.txt`), {
    statusCode: '403',
  });
});

// 9. Row-level security on storage.objects with the user's access token: a
//    user writes only under avatars/<own uid>/ (else 403 AccessDenied, "new row
//    violates row-level security policy"); another user cannot read, list,
//    sign, overwrite, move or remove it (reads look like a missing object);
//    anon (publishable key only) can neither list, download nor upload; the
//    secret key bypasses RLS.
test('RLS: own folder only; other users and anon see nothing', async () => {
  const A = await signedIn('rls-a');
  const B = await signedIn('rls-b');
  const asA = A.c.storage.from('avatars');
  const asB = B.c.storage.from('avatars');
  const asAnon = anon.storage.from('avatars');
  const aPath = `${A.user.id}/x.png`;
  const picture = binary(128);

  ok(await asA.upload(aPath, picture, { contentType: 'image/png' }));

  const denied = failed(
    await asA.upload(`${B.user.id}/x.png`, picture, { contentType: 'image/png' }),
    { statusCode: '403', code: 'AccessDenied' },
  );
  assert.match(denied.message, /row-level security/);
  failed(await asA.upload('x.png', picture, { contentType: 'image/png' }), {
    statusCode: '403',
    code: 'AccessDenied',
  });
  failed(await B.c.storage.from('avatars').download(`${B.user.id}/x.png`), { statusCode: '404' });

  // B cannot read, list or sign A's object.
  failed(await asB.download(aPath), { statusCode: '404', code: 'NoSuchKey' });
  assert.deepStrictEqual(ok(await asB.list(A.user.id)), []);
  failed(await asB.createSignedUrl(aPath, 60), { statusCode: '404' });

  // …nor overwrite, move or remove it.
  const hijack = await asB.upload(aPath, Buffer.from('hijack'), {
    upsert: true,
    contentType: 'image/png',
  });
  failed(hijack, { statusCode: '403' });
  const moved = await asB.move(aPath, `${B.user.id}/stolen.png`);
  assert.ok(moved.error, "B cannot move A's object");
  failed(await service.storage.from('avatars').download(`${B.user.id}/stolen.png`), {
    statusCode: '404',
  });
  assert.deepStrictEqual(ok(await asB.remove([aPath])), []);
  assert.deepStrictEqual(await downloaded(asA, aPath), picture);

  // A cannot move their own object into B's folder (UPDATE … WITH CHECK).
  const intoB = await asA.move(aPath, `${B.user.id}/gift.png`);
  assert.ok(intoB.error, "A cannot move into B's folder");
  assert.deepStrictEqual(await downloaded(asA, aPath), picture);
  failed(await service.storage.from('avatars').download(`${B.user.id}/gift.png`), {
    statusCode: '404',
  });

  // anon: no policy at all.
  assert.deepStrictEqual(ok(await asAnon.list(A.user.id)), []);
  assert.ok(!names(ok(await asAnon.list())).includes(A.user.id), 'anon lists no user folder');
  failed(await asAnon.download(aPath), { statusCode: '404', code: 'NoSuchKey' });
  failed(await asAnon.upload(`${A.user.id}/anon.png`, picture, { contentType: 'image/png' }), {
    statusCode: '403',
  });
  failed(await asAnon.createSignedUrl(aPath, 60), { statusCode: '404' });
  // A public URL does not open a private bucket either.
  const viaPublic = await rawGet(asAnon.getPublicUrl(aPath).data.publicUrl);
  assert.ok(viaPublic.status >= 400 && viaPublic.status < 500, `public URL: ${viaPublic.status}`);

  // The secret key bypasses RLS.
  const admin = service.storage.from('avatars');
  assert.deepStrictEqual(names(ok(await admin.list(A.user.id))), ['x.png']);
  assert.deepStrictEqual(await downloaded(admin, aPath), picture);
});

// 10. Bucket limits apply to every caller, the secret key included: an object
//     over file_size_limit is 413 EntityTooLarge (raw and multipart), exactly
//     the limit is fine; a MIME type outside allowed_mime_types ('image/*'
//     matches any image/…) is 415 InvalidMimeType; refused uploads store
//     nothing; raising the limit with updateBucket lets the large one in.
test('bucket limits: fileSizeLimit and allowedMimeTypes', async () => {
  const bucket = await newBucket('limits', {
    public: false,
    fileSizeLimit: 1024,
    allowedMimeTypes: ['image/*'],
  });
  const files = service.storage.from(bucket);
  const big = binary(2048);

  failed(await files.upload('big-raw.png', big, { contentType: 'image/png' }), {
    statusCode: '413',
    code: 'EntityTooLarge',
  });
  failed(await files.upload('big-blob.png', new Blob([big], { type: 'image/png' })), {
    statusCode: '413',
    code: 'EntityTooLarge',
  });

  failed(await files.upload('note.txt', new Blob(['hello'], { type: 'text/plain' })), {
    statusCode: '415',
    code: 'InvalidMimeType',
  });
  failed(await files.upload('note-raw.txt', Buffer.from('hello'), { contentType: 'text/plain' }), {
    statusCode: '415',
    code: 'InvalidMimeType',
  });

  ok(await files.upload('exact.png', binary(1024), { contentType: 'image/png' }));
  ok(await files.upload('small.jpg', new Blob([binary(100)], { type: 'image/jpeg' })));
  assert.deepStrictEqual(await downloaded(files, 'exact.png'), binary(1024));
  assert.deepStrictEqual(names(ok(await files.list())), ['exact.png', 'small.jpg']);

  ok(
    await service.storage.updateBucket(bucket, {
      public: false,
      fileSizeLimit: 4096,
      allowedMimeTypes: ['image/*'],
    }),
  );
  ok(await files.upload('big-raw.png', big, { contentType: 'image/png' }));
  assert.deepStrictEqual(await downloaded(files, 'big-raw.png'), big);
});

// 11. A bucket inserted into storage.buckets by a migration (as Supabase's
//     starter projects do) is a bucket like any other.
test('a bucket inserted by SQL is usable', async () => {
  const got = ok(await service.storage.getBucket('seeded'));
  assert.equal(got.id, 'seeded');
  assert.equal(got.public, false);
  const files = service.storage.from('seeded');
  const path = `${unique('dir')}/file.txt`;
  ok(await files.upload(path, Buffer.from('seeded bytes'), { contentType: 'text/plain' }));
  assert.deepStrictEqual(await downloaded(files, path), Buffer.from('seeded bytes'));
  ok(await files.remove([path]));
});

/** CRC-32 (PNG's chunk checksum). */
function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** A `w`×`h` RGB PNG with a gradient, encoded here (no image library needed). */
function png(w, h) {
  const rows = [];
  for (let y = 0; y < h; y += 1) {
    const row = Buffer.alloc(1 + 3 * w); // filter byte 0, then RGB
    for (let x = 0; x < w; x += 1) row.set([x % 256, y % 256, 128], 1 + 3 * x);
    rows.push(row);
  }
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** Width and height of a PNG, from its IHDR. */
function pngSize(buf) {
  assert.deepStrictEqual([...buf.subarray(1, 4)], [0x50, 0x4e, 0x47], 'a PNG');
  return [buf.readUInt32BE(16), buf.readUInt32BE(20)];
}

test('transform: download, getPublicUrl and createSignedUrl render the image', async () => {
  const pub = await newBucket('render', { public: true });
  const files = service.storage.from(pub);
  ok(await files.upload('cat.png', png(120, 80), { contentType: 'image/png' }));

  // download({ transform }) as the caller (node's fetch does not ask for WebP).
  const small = await bytesOf(
    ok(await files.download('cat.png', { transform: { width: 30, height: 30, resize: 'cover' } })),
  );
  assert.deepStrictEqual(pngSize(small), [30, 30]);
  const fitted = await bytesOf(
    ok(await files.download('cat.png', { transform: { width: 60, height: 60, resize: 'contain' } })),
  );
  assert.deepStrictEqual(pngSize(fitted), [60, 40]);

  // getPublicUrl({ transform }): a render URL that needs no key.
  const { publicUrl } = files.getPublicUrl('cat.png', { transform: { width: 24 } }).data;
  assert.match(publicUrl, /\/storage\/v1\/render\/image\/public\//);
  const viaUrl = await rawGet(publicUrl);
  assert.equal(viaUrl.status, 200);
  assert.deepStrictEqual(pngSize(viaUrl.body), [24, 16]);

  // createSignedUrl({ transform }): the token carries the transformation.
  const { signedUrl } = ok(
    await files.createSignedUrl('cat.png', 60, { transform: { width: 10, height: 10, resize: 'fill' } }),
  );
  assert.match(signedUrl, /\/storage\/v1\/render\/image\/sign\//);
  const signed = await rawGet(signedUrl);
  assert.equal(signed.status, 200);
  assert.deepStrictEqual(pngSize(signed.body), [10, 10]);

  // Out-of-range parameters are storage-api errors.
  failed(await files.download('cat.png', { transform: { width: 5000 } }), {
    statusCode: '400',
    code: 'InvalidRequest',
  });
});
