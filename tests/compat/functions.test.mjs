// Supabase Edge Functions compatibility of Wasmbase's /functions/v1, driven
// through the real @supabase/supabase-js (`supabase.functions.invoke`) against a
// real `wasmbase dev` server serving the repo's `functions/hello` example, which
// `wasmbase dev` builds with cargo (wasm32-wasip2) on start.
//
// hello (verify_jwt = true) answers any method with
// `{"message", "received": <posted JSON or null>, "user": <JWT sub or null>}`.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { FunctionsHttpError } from '@supabase/supabase-js';
import { PASSWORD, makeClient, uniqueEmail } from './clients.mjs';
import { startServer, waitForFunction } from './server.mjs';

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;

before(async () => {
  server = await startServer({ functions: ['hello', 'hello-ts', 'supabase-hello'] });
  // The build runs in the background after /ready; 503 function_starting until then.
  await waitForFunction(server, 'hello');
  await waitForFunction(server, 'hello-ts');
  await waitForFunction(server, 'supabase-hello');
});

after(async () => {
  await server?.stop();
});

// ---------------------------------------------------------------- helpers




/** A supabase-js client of this suite's server. */
function client(key = server.PUBLISHABLE_KEY) {
  return makeClient(server, key);
}

// ---------------------------------------------------------------- tests

test('invoke posts JSON and parses the JSON answer; no session means user null', async () => {
  const { data, error } = await client().functions.invoke('hello', { body: { a: 1 } });
  assert.equal(error, null);
  assert.equal(typeof data?.message, 'string');
  assert.deepEqual(data, { message: data.message, received: { a: 1 }, user: null });
});

test("a signed-in client's invoke carries the user's JWT", async () => {
  const supabase = client();
  const { data: su, error: suErr } = await supabase.auth.signUp({
    email: uniqueEmail('fn'),
    password: PASSWORD,
  });
  assert.equal(suErr, null);
  // Autoconfirm is on in dev, so sign-up signs the client in.
  assert.ok(su.session, 'signUp returned a session');
  const userId = su.user.id;

  const { data, error } = await supabase.functions.invoke('hello', { body: { b: 2 } });
  assert.equal(error, null);
  assert.equal(data.user, userId);
  assert.deepEqual(data.received, { b: 2 });
});

test('a missing function is a FunctionsHttpError with status 404', async () => {
  const { data, error } = await client().functions.invoke('nope', { body: { a: 1 } });
  assert.equal(data, null);
  assert.ok(error instanceof FunctionsHttpError, `expected FunctionsHttpError, got ${error}`);
  assert.equal(error.context.status, 404);
  const body = await error.context.json();
  assert.equal(body.code, 'function_not_found');
  assert.equal(typeof body.message, 'string');
});

test("method: 'GET' sends no body, so received is null", async () => {
  const { data, error } = await client().functions.invoke('hello', { method: 'GET' });
  assert.equal(error, null);
  assert.equal(data.received, null);
  assert.equal(data.user, null);
});

test('verify_jwt: without an API key or token the call is 401 with a JSON error', async () => {
  const res = await fetch(`${server.url}/functions/v1/hello`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{"a":1}',
  });
  assert.equal(res.status, 401);
  const body = await res.json();
  assert.equal(typeof body.code, 'string');
  assert.equal(typeof body.message, 'string');
  assert.equal(typeof body.requestId, 'string');
});

test('/fn/<name> serves the same function', async () => {
  const res = await fetch(`${server.url}/fn/hello`, {
    method: 'POST',
    headers: { apikey: server.PUBLISHABLE_KEY, 'content-type': 'application/json' },
    body: '{"c":3}',
  });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.deepEqual(body.received, { c: 3 });
  assert.equal(body.user, null);
});

// ------------------------------------------- JavaScript / TypeScript functions

test('invoke reaches a TypeScript function (hello-ts) like the Rust one', async () => {
  const supabase = client();
  const { data, error } = await supabase.functions.invoke('hello-ts', { body: { a: [1, 'two'] } });
  assert.equal(error, null);
  assert.deepEqual(data, { message: 'Hello from Wasmbase!', received: { a: [1, 'two'] }, user: null });
  const { data: su, error: suErr } = await supabase.auth.signUp({ email: uniqueEmail('fnts'), password: PASSWORD });
  assert.equal(suErr, null);
  const signedIn = await supabase.functions.invoke('hello-ts', { body: {} });
  assert.equal(signedIn.error, null);
  assert.equal(signedIn.data.user, su.user.id);
});

test('a Supabase Edge Function copied unchanged answers through invoke', async () => {
  const { data, error } = await client().functions.invoke('supabase-hello', { body: { name: 'Functions' } });
  assert.equal(error, null);
  assert.deepEqual(data, { message: 'Hello Functions!' });
});

test("a TS function's thrown error is a FunctionsHttpError with the platform's shape", async () => {
  const { data, error } = await client().functions.invoke('supabase-hello', { body: 'not json' });
  assert.equal(data, null);
  assert.ok(error instanceof FunctionsHttpError, `expected FunctionsHttpError, got ${error}`);
  assert.equal(error.context.status, 500);
  const body = await error.context.json();
  assert.equal(body.code, 'function_exception');
  assert.match(body.message, /SyntaxError/);
});
