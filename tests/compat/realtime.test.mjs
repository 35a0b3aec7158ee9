// Supabase Realtime compatibility of Wasmbase's /realtime/v1, driven through
// the real @supabase/supabase-js (`supabase.channel(...)`, realtime-js with its
// default protocol, vsn 2.0.0, and with vsn 1.0.0) against a real `wasmbase
// dev` server. Node 20 has no global WebSocket, so the clients get the `ws`
// package as their transport, as supabase-js documents for Node.
//
// Each test pins what an app relies on: subscribing (anon and signed in),
// broadcast between clients with `self` and `ack` (realtime-js sends these as
// binary frames on vsn 2), a vsn 1.0.0 client in the same channel, the HTTP
// fallback of `send()` for a channel that is not joined, and presence
// (track, sync, join and leave events, untrack).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { createClient } from '@supabase/supabase-js';
import { PASSWORD, unique, uniqueEmail } from './clients.mjs';
import { startServer } from './server.mjs';

let server;
const clients = [];

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const c of clients) await c.removeAllChannels();
  await server?.stop();
});

/** A supabase-js client whose realtime runs over `ws` (vsn as given). */
function client(realtime = {}) {
  const c = createClient(server.url, server.PUBLISHABLE_KEY, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: WebSocket, ...realtime },
  });
  clients.push(c);
  return c;
}

/** Subscribes `channel`; resolves once SUBSCRIBED, rejects on anything else. */
function subscribed(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve(channel);
      else if (status !== 'CLOSED') reject(err ?? new Error(status));
    });
  });
}

/** The next `broadcast` of `event` on `channel`, within 10 s. */
function nextBroadcast(channel, event) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${event} broadcast`)), 10_000);
    channel.on('broadcast', { event }, (msg) => {
      clearTimeout(t);
      resolve(msg);
    });
  });
}

test('two clients broadcast to each other, with self and ack, over vsn 2.0.0 and 1.0.0', async () => {
  const topic = unique('room');
  const a = client();
  const b = client({ vsn: '1.0.0' });
  const chA = a.channel(topic, { config: { broadcast: { self: true, ack: true } } });
  const chB = b.channel(topic);
  const gotByB = nextBroadcast(chB, 'hello');
  const selfCopy = nextBroadcast(chA, 'hello');
  await subscribed(chA);
  await subscribed(chB);
  // ack: send() resolves 'ok' only when the server confirms.
  const status = await chA.send({ type: 'broadcast', event: 'hello', payload: { text: 'wörld', n: 1 } });
  assert.equal(status, 'ok');
  const msg = await gotByB;
  assert.equal(msg.event, 'hello');
  assert.deepEqual(msg.payload, { text: 'wörld', n: 1 });
  assert.deepEqual((await selfCopy).payload, { text: 'wörld', n: 1 });
  // Back from the vsn 1 client.
  const reply = nextBroadcast(chA, 'reply');
  await chB.send({ type: 'broadcast', event: 'reply', payload: { ok: true } });
  assert.deepEqual((await reply).payload, { ok: true });
});

test('a signed-in user subscribes with their token', async () => {
  const c = client();
  const { data, error } = await c.auth.signUp({ email: uniqueEmail('rt'), password: PASSWORD });
  assert.equal(error, null);
  assert.ok(data.session);
  await c.realtime.setAuth(data.session.access_token);
  const ch = c.channel(unique('mine'), { config: { broadcast: { self: true } } });
  const got = nextBroadcast(ch, 'ping');
  await subscribed(ch);
  await ch.send({ type: 'broadcast', event: 'ping', payload: {} });
  assert.equal((await got).event, 'ping');
});

test('send() on a channel that is not joined goes over the HTTP broadcast API', async () => {
  const topic = unique('http');
  const listener = client().channel(topic);
  const got = nextBroadcast(listener, 'news');
  await subscribed(listener);
  const sender = client().channel(topic);
  const status = await sender.send({ type: 'broadcast', event: 'news', payload: { n: 7 } });
  assert.equal(status, 'ok');
  assert.deepEqual((await got).payload, { n: 7 });
});

test('presence: track, sync on both clients, leave on untrack', async () => {
  const topic = unique('lobby');
  const a = client().channel(topic, { config: { presence: { key: 'alice' } } });
  const b = client().channel(topic, { config: { presence: { key: 'bob' } } });
  const seen = new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no presence sync with alice')), 10_000);
    b.on('presence', { event: 'sync' }, () => {
      const state = b.presenceState();
      if (state.alice) {
        clearTimeout(t);
        resolve(state);
      }
    });
  });
  const left = new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no leave')), 10_000);
    b.on('presence', { event: 'leave' }, ({ key, leftPresences }) => {
      if (key === 'alice') {
        clearTimeout(t);
        resolve(leftPresences);
      }
    });
  });
  a.on('presence', { event: 'sync' }, () => {});
  await subscribed(a);
  await subscribed(b);
  assert.equal(await a.track({ online_at: 'now' }), 'ok');
  const state = await seen;
  assert.equal(state.alice.length, 1);
  assert.equal(state.alice[0].online_at, 'now');
  assert.ok(state.alice[0].presence_ref, 'each presence has a ref');
  assert.equal(await a.untrack(), 'ok');
  const gone = await left;
  assert.equal(gone[0].online_at, 'now');
  assert.equal(b.presenceState().alice, undefined);
});
