// supabase-js clients for the compat suites: one definition of the client
// options, fresh names and a signed-in user, shared by every *.test.mjs.
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';

/** The password every suite's users sign up with. */
export const PASSWORD = 'correct-horse-1';

let seq = 0;
/** A fresh name per call (buckets, tags, emails), so tests never share rows. */
export function unique(name) {
  seq += 1;
  return `${name}-${Date.now()}-${seq}`;
}

/** A fresh address per call, so tests never share users. */
export function uniqueEmail(name) {
  return `${unique(name)}@example.com`;
}

// supabase-js builds a realtime client eagerly, and on Node < 22 (no global
// WebSocket) that throws. The suites never open realtime, so on old Node they
// get a transport that is never constructed.
const realtime = globalThis.WebSocket
  ? {}
  : {
      transport: class NoWebSocket {
        constructor() {
          throw new Error('realtime is not used by this suite');
        }
      },
    };

/** A supabase-js client of `server` with no persistence or timers (override with `auth`). */
export function makeClient(server, key = server.PUBLISHABLE_KEY, auth = {}) {
  return createClient(server.url, key, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false, ...auth },
    realtime,
  });
}

/** A client of `server` signed in as a fresh user (autoconfirmed sign-up); { c, user }. */
export async function signedIn(server, name) {
  const c = makeClient(server);
  const { data, error } = await c.auth.signUp({ email: uniqueEmail(name), password: PASSWORD });
  assert.equal(error, null);
  assert.ok(data.session, 'autoconfirmed sign-up returns a session');
  return { c, user: data.user };
}

/** Minimal in-memory storage (PKCE keeps its code verifier there). */
export function memoryStorage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, v),
    removeItem: (k) => void m.delete(k),
  };
}
