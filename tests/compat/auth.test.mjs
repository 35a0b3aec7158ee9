// GoTrue compatibility of Wasmbase's /auth/v1, driven through the real
// @supabase/supabase-js against a real `wasmbase dev` server. Each test pins one
// user-visible behaviour an app built on supabase-js relies on.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { PASSWORD, makeClient, memoryStorage, uniqueEmail } from './clients.mjs';
import { startServer } from './server.mjs';

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

// ---------------------------------------------------------------- helpers

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;



/** A supabase-js client of this suite's server. */
function client(key = server.PUBLISHABLE_KEY, auth = {}) {
  return makeClient(server, key, auth);
}

function pkceClient() {
  return client(server.PUBLISHABLE_KEY, {
    storage: memoryStorage(),
    flowType: 'pkce',
    persistSession: true,
  });
}

/** Signs up a fresh user; returns { email, user, session }. */
async function newUser(name, password = PASSWORD) {
  const email = uniqueEmail(name);
  const { data, error } = await client().auth.signUp({ email, password });
  assert.equal(error, null);
  assert.ok(data.session, 'autoconfirmed sign-up returns a session');
  return { email, user: data.user, session: data.session };
}

/** Raw call to /auth/v1 with the publishable key and the 2024-01-01 error format. */
async function authFetch(path, { method = 'GET', token, body } = {}) {
  const headers = { apikey: server.PUBLISHABLE_KEY, 'X-Supabase-Api-Version': '2024-01-01' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`${server.url}/auth/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  return { status: res.status, body: json, headers: res.headers };
}

/** The newest mail to `email`, newer than `afterId`. The server files the mail
 *  before it answers the request that sent it, so no waiting is needed. */
async function latestMail(email, { after: afterId = 0 } = {}) {
  const box = await server.mailbox(email);
  assert.ok(box.length > 0 && box[0].id > afterId, `no new mail for ${email}`);
  return box[0];
}

function mailCode(mail) {
  const m = /Or enter this code: (\d{6})/.exec(mail.text);
  assert.ok(m, `mail has a 6-digit code:\n${mail.text}`);
  return m[1];
}

function mailLink(mail) {
  const m = /(https?:\/\/\S+\/auth\/v1\/verify\?\S+)/.exec(mail.text);
  assert.ok(m, `mail has a verify link:\n${mail.text}`);
  return new URL(m[1]);
}

function jwtPayload(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

// ---------------------------------------------------------------- tests

// 1. Sign-up: an autoconfirmed sign-up returns a session and the GoTrue user
//    shape; a second sign-up with the same address is 422 user_already_exists.
test('signUp returns a session; duplicate email is user_already_exists', async () => {
  const email = uniqueEmail('SignUp').replace('example.com', 'Example.COM');
  const { data, error } = await client().auth.signUp({
    email,
    password: PASSWORD,
    options: { data: { display_name: 'Ada', plan: 'free' } },
  });
  assert.equal(error, null);
  assert.ok(data.session?.access_token);
  assert.ok(data.session.refresh_token);
  assert.equal(data.session.token_type, 'bearer');
  assert.equal(data.user.email, email.toLowerCase());
  assert.match(data.user.id, UUID_RE);
  assert.equal(data.user.aud, 'authenticated');
  // GoTrue also adds identity claims (email_verified, …) to user_metadata.
  assert.equal(data.user.user_metadata.display_name, 'Ada');
  assert.equal(data.user.user_metadata.plan, 'free');
  assert.equal(data.user.identities.length, 1);
  assert.equal(data.user.identities[0].provider, 'email');
  assert.ok(data.user.email_confirmed_at, 'dev autoconfirms');

  const again = await client().auth.signUp({ email, password: PASSWORD });
  assert.ok(again.error, 'second sign-up fails');
  assert.equal(again.error.code, 'user_already_exists');
  assert.equal(again.error.status, 422);
});

// 2. Password sign-in works; a wrong password and an unknown email fail the same
//    way (400 invalid_credentials, same message), so accounts cannot be probed.
test('signInWithPassword; wrong password and unknown email are indistinguishable', async () => {
  const { email, user } = await newUser('signin');
  const ok = await client().auth.signInWithPassword({ email, password: PASSWORD });
  assert.equal(ok.error, null);
  assert.equal(ok.data.user.id, user.id);
  assert.ok(ok.data.session.access_token);

  const wrong = await client().auth.signInWithPassword({ email, password: 'wrong-password-1' });
  const unknown = await client().auth.signInWithPassword({
    email: uniqueEmail('nobody'),
    password: PASSWORD,
  });
  for (const r of [wrong, unknown]) {
    assert.equal(r.data.session, null);
    assert.equal(r.error?.code, 'invalid_credentials');
    assert.equal(r.error.status, 400);
  }
  assert.equal(wrong.error.message, unknown.error.message);
});

// 3. The signed-in user reads and edits themself: getUser(token), metadata
//    merge on updateUser({data}), and a password change that takes effect.
test('getUser and updateUser (metadata merge, password change)', async () => {
  const email = uniqueEmail('update');
  const c = client();
  const { data: su, error: suErr } = await c.auth.signUp({
    email,
    password: PASSWORD,
    options: { data: { keep: 'me' } },
  });
  assert.equal(suErr, null);

  const got = await c.auth.getUser(su.session.access_token);
  assert.equal(got.error, null);
  assert.equal(got.data.user.id, su.user.id);
  assert.equal(got.data.user.email, email);

  const upd = await c.auth.updateUser({ data: { x: 1 } });
  assert.equal(upd.error, null);
  assert.equal(upd.data.user.user_metadata.keep, 'me', 'existing keys kept');
  assert.equal(upd.data.user.user_metadata.x, 1);

  const newPassword = 'another-secret-2';
  const pw = await c.auth.updateUser({ password: newPassword });
  assert.equal(pw.error, null);

  const withNew = await client().auth.signInWithPassword({ email, password: newPassword });
  assert.equal(withNew.error, null);
  assert.equal(withNew.data.user.id, su.user.id);
  const withOld = await client().auth.signInWithPassword({ email, password: PASSWORD });
  assert.equal(withOld.error?.code, 'invalid_credentials');
});

// 4. Refresh rotates both tokens; presenting the just-rotated refresh token again
//    within the reuse interval (two tabs refreshing at once) returns the current
//    refresh token instead of killing the session.
test('refreshSession rotates tokens; old token reuse within the interval is tolerated', async () => {
  const { email } = await newUser('refresh');
  const c = client();
  const { data: si } = await c.auth.signInWithPassword({ email, password: PASSWORD });
  const first = si.session;
  // Make sure the new access token differs even in `iat`.
  await new Promise((r) => setTimeout(r, 1100));

  const { data, error } = await c.auth.refreshSession();
  assert.equal(error, null);
  const second = data.session;
  assert.ok(second.access_token && second.refresh_token);
  assert.notEqual(second.access_token, first.access_token);
  assert.notEqual(second.refresh_token, first.refresh_token);
  assert.equal(data.user.id, si.user.id);

  const reuse = await authFetch('/token?grant_type=refresh_token', {
    method: 'POST',
    body: { refresh_token: first.refresh_token },
  });
  assert.equal(reuse.status, 200, JSON.stringify(reuse.body));
  assert.equal(reuse.body.refresh_token, second.refresh_token);
  assert.ok(reuse.body.access_token);
  assert.equal(reuse.body.user.id, si.user.id);

  // The session survived the reuse: the current token still refreshes.
  const third = await c.auth.refreshSession();
  assert.equal(third.error, null);
  assert.notEqual(third.data.session.refresh_token, second.refresh_token);
});

// 5. signOut scopes: 'others' ends every other session (their access and
//    refresh tokens stop working) but keeps this one; 'local' ends this one;
//    the default (global) ends all of them.
test('signOut scopes: others, local, global', async () => {
  const { email } = await newUser('signout');
  const a = client();
  const b = client();
  const { data: sa } = await a.auth.signInWithPassword({ email, password: PASSWORD });
  const { data: sb } = await b.auth.signInWithPassword({ email, password: PASSWORD });
  const tokenA = sa.session.access_token;
  const tokenB = sb.session.access_token;

  const others = await a.auth.signOut({ scope: 'others' });
  assert.equal(others.error, null);

  const aUser = await a.auth.getUser();
  assert.equal(aUser.error, null, 'A still signed in');
  assert.equal(aUser.data.user.email, email);

  const bUser = await b.auth.getUser(tokenB);
  assert.ok(bUser.error, "B's session is gone");
  assert.ok(
    bUser.error.name === 'AuthSessionMissingError' || bUser.error.code === 'session_not_found',
    `unexpected error ${bUser.error.name} ${bUser.error.code}`,
  );
  const bRaw = await authFetch('/user', { token: tokenB });
  assert.equal(bRaw.status, 403);
  assert.equal(bRaw.body.code, 'session_not_found');

  const bRefresh = await b.auth.refreshSession({ refresh_token: sb.session.refresh_token });
  assert.ok(bRefresh.error, "B's refresh token died with its session");
  assert.equal(bRefresh.error.code, 'refresh_token_not_found');
  assert.equal(bRefresh.error.status, 400);
  assert.equal(bRefresh.data.session, null);

  const local = await a.auth.signOut({ scope: 'local' });
  assert.equal(local.error, null);
  const aAfter = await authFetch('/user', { token: tokenA });
  assert.equal(aAfter.status, 403);
  assert.equal(aAfter.body.code, 'session_not_found');
  const aRefresh = await client().auth.refreshSession({ refresh_token: sa.session.refresh_token });
  assert.equal(aRefresh.error?.code, 'refresh_token_not_found');

  // Global: two fresh sessions, one signOut() ends both.
  const c = client();
  const d = client();
  const { data: sc } = await c.auth.signInWithPassword({ email, password: PASSWORD });
  const { data: sd } = await d.auth.signInWithPassword({ email, password: PASSWORD });
  const global = await c.auth.signOut();
  assert.equal(global.error, null);
  for (const s of [sc.session, sd.session]) {
    const r = await authFetch('/user', { token: s.access_token });
    assert.equal(r.status, 403);
    assert.equal(r.body.code, 'session_not_found');
  }
  const dUser = await d.auth.getUser();
  assert.equal(dUser.error?.name, 'AuthSessionMissingError');
});

// 6. Password recovery by email: the dev mailbox gets a mail with a code and a
//    link; the code verifies (type 'recovery') into a session that can set a new
//    password; the link redirects (303) to the allowed redirectTo with tokens in
//    the fragment; a redirectTo off the allowlist falls back to the site URL.
test('resetPasswordForEmail + verify via the dev mailbox', async () => {
  const { email, user } = await newUser('recover');

  // Code path.
  const c = client();
  const req = await c.auth.resetPasswordForEmail(email, { redirectTo: 'http://app.test/reset' });
  assert.equal(req.error, null);
  const mail = await latestMail(email);
  assert.equal(mail.to, email);
  const link = mailLink(mail);
  assert.equal(link.searchParams.get('type'), 'recovery');
  assert.equal(link.searchParams.get('redirect_to'), 'http://app.test/reset');
  const code = mailCode(mail);

  const v = await c.auth.verifyOtp({ email, token: code, type: 'recovery' });
  assert.equal(v.error, null);
  assert.ok(v.data.session?.access_token);
  assert.equal(v.data.user.id, user.id);

  const newPassword = 'recovered-pass-3';
  const upd = await c.auth.updateUser({ password: newPassword });
  assert.equal(upd.error, null);
  const si = await client().auth.signInWithPassword({ email, password: newPassword });
  assert.equal(si.error, null);
  assert.equal(si.data.user.id, user.id);

  // Link path: a second request, the link followed like a mail client would.
  const lastId = mail.id;
  const req2 = await client().auth.resetPasswordForEmail(email, {
    redirectTo: 'http://app.test/reset',
  });
  assert.equal(req2.error, null);
  const mail2 = await latestMail(email, { after: lastId });
  const res = await fetch(mailLink(mail2), { redirect: 'manual' });
  assert.equal(res.status, 303);
  const location = res.headers.get('location');
  assert.ok(
    location.startsWith('http://app.test/reset#access_token='),
    `unexpected Location: ${location}`,
  );
  const frag = new URLSearchParams(location.split('#')[1]);
  assert.equal(frag.get('type'), 'recovery');
  assert.equal(frag.get('token_type'), 'bearer');
  assert.ok(frag.get('refresh_token'));
  assert.equal(jwtPayload(frag.get('access_token')).sub, user.id);

  // Open-redirect guard: a target off the allowlist becomes the site URL.
  const req3 = await client().auth.resetPasswordForEmail(email, {
    redirectTo: 'https://evil.example/x',
  });
  assert.equal(req3.error, null);
  const mail3 = await latestMail(email, { after: mail2.id });
  assert.equal(mailLink(mail3).searchParams.get('redirect_to'), 'http://localhost:3000');
});

// 7. Passwordless sign-in: signInWithOtp mails a magic link + code to an existing
//    user; the code verifies (type 'email') once; shouldCreateUser:false for an
//    unknown address answers as for a known one (no mail); a used code is otp_expired.
test('signInWithOtp (magic link / code)', async () => {
  const { email, user } = await newUser('otp');
  const c = client();
  const req = await c.auth.signInWithOtp({ email });
  assert.equal(req.error, null);
  const mail = await latestMail(email);
  assert.equal(mailLink(mail).searchParams.get('type'), 'magiclink');
  const code = mailCode(mail);

  const v = await c.auth.verifyOtp({ email, token: code, type: 'email' });
  assert.equal(v.error, null);
  assert.ok(v.data.session?.access_token);
  assert.equal(v.data.user.id, user.id);

  const twice = await client().auth.verifyOtp({ email, token: code, type: 'email' });
  assert.ok(twice.error, 'a code works once');
  assert.equal(twice.error.code, 'otp_expired');
  assert.equal(twice.data.session, null);

  // Unlike GoTrue (422 otp_disabled), an unknown address gets the answer a known
  // one gets, so the endpoint does not tell which addresses have accounts; no
  // mail is sent and no user is created.
  const ghost = uniqueEmail('otp-unknown');
  const unknown = await client().auth.signInWithOtp({
    email: ghost,
    options: { shouldCreateUser: false },
  });
  assert.equal(unknown.error, null);
  assert.equal((await server.mailbox(ghost)).length, 0);
});

// 8. PKCE: with flowType 'pkce' the mail link redirects to redirectTo with
//    ?code=<uuid> (no tokens in the URL), and only the client holding the code
//    verifier can exchange it for a session; a code is single use.
test('PKCE recovery: link gives ?code=, exchangeCodeForSession needs the verifier', async () => {
  const { email, user } = await newUser('pkce');

  const followLink = async (afterId) => {
    const mail = await latestMail(email, { after: afterId });
    const res = await fetch(mailLink(mail), { redirect: 'manual' });
    assert.equal(res.status, 303);
    const location = res.headers.get('location');
    const m = /^http:\/\/app\.test\/cb\?code=([^&#]+)$/.exec(location);
    assert.ok(m, `unexpected Location: ${location} (want ?code= and no tokens)`);
    assert.match(m[1], UUID_RE);
    return { mail, code: m[1] };
  };

  const c = pkceClient();
  const req = await c.auth.resetPasswordForEmail(email, { redirectTo: 'http://app.test/cb' });
  assert.equal(req.error, null);
  const first = await followLink(0);

  const ex = await c.auth.exchangeCodeForSession(first.code);
  assert.equal(ex.error, null);
  assert.ok(ex.data.session?.access_token);
  assert.equal(ex.data.user.id, user.id);
  assert.equal(jwtPayload(ex.data.session.access_token).sub, user.id);

  // The code is single use.
  const replay = await authFetch('/token?grant_type=pkce', {
    method: 'POST',
    body: { auth_code: first.code, code_verifier: 'x'.repeat(43) },
  });
  assert.equal(replay.status, 404);
  assert.equal(replay.body.code, 'flow_state_not_found');

  // A second flow: the wrong verifier is refused.
  const c2 = pkceClient();
  const req2 = await c2.auth.resetPasswordForEmail(email, { redirectTo: 'http://app.test/cb' });
  assert.equal(req2.error, null);
  const second = await followLink(first.mail.id);

  const stranger = await pkceClient().auth.exchangeCodeForSession(second.code);
  assert.ok(stranger.error, 'a client without the verifier cannot exchange');
  assert.equal(stranger.data.session, null);

  const wrong = await authFetch('/token?grant_type=pkce', {
    method: 'POST',
    body: { auth_code: second.code, code_verifier: 'wrong-verifier-'.padEnd(50, 'x') },
  });
  assert.equal(wrong.status, 400, JSON.stringify(wrong.body));
  assert.equal(wrong.body.code, 'bad_code_verifier');
  assert.equal(wrong.body.access_token, undefined);

  // A wrong guess does not burn the flow: the real client still exchanges.
  const ok = await c2.auth.exchangeCodeForSession(second.code);
  assert.equal(ok.error, null);
  assert.equal(ok.data.user.id, user.id);
});

// 9. The admin API (secret key): create with app_metadata, get, update, paginated
//    list with a total, generateLink, delete. A publishable key is refused
//    (403 not_admin). app_metadata set by the admin shows up in the user's JWT.
test('auth.admin with the secret key', async () => {
  const admin = client(server.SECRET_KEY);
  const created = [];
  for (let i = 0; i < 3; i++) {
    const email = uniqueEmail(`admin${i}`);
    const { data, error } = await admin.auth.admin.createUser({
      email,
      password: PASSWORD,
      email_confirm: true,
      app_metadata: { role: 'admin', org_id: 'org-42' },
    });
    assert.equal(error, null);
    assert.equal(data.user.email, email);
    assert.equal(data.user.app_metadata.role, 'admin');
    assert.equal(data.user.app_metadata.org_id, 'org-42');
    assert.equal(data.user.app_metadata.provider, 'email');
    assert.ok(data.user.email_confirmed_at);
    created.push(data.user);
  }
  const [u] = created;

  const got = await admin.auth.admin.getUserById(u.id);
  assert.equal(got.error, null);
  assert.equal(got.data.user.id, u.id);
  assert.equal(got.data.user.email, u.email);

  const upd = await admin.auth.admin.updateUserById(u.id, { user_metadata: { a: 1 } });
  assert.equal(upd.error, null);
  assert.equal(upd.data.user.user_metadata.a, 1);
  assert.equal(upd.data.user.app_metadata.role, 'admin', 'app_metadata untouched');

  const list = await admin.auth.admin.listUsers({ page: 1, perPage: 2 });
  assert.equal(list.error, null);
  assert.equal(list.data.users.length, 2);
  assert.ok(list.data.total >= created.length, `total ${list.data.total}`);
  assert.equal(list.data.nextPage, 2);
  assert.ok(list.data.lastPage >= 2);

  const link = await admin.auth.admin.generateLink({ type: 'magiclink', email: u.email });
  assert.equal(link.error, null);
  assert.match(link.data.properties.action_link, /\/auth\/v1\/verify\?/);
  assert.match(link.data.properties.email_otp, /^\d{6}$/);
  assert.equal(link.data.properties.verification_type, 'magiclink');
  assert.equal(link.data.user.id, u.id);

  // The admin-set app_metadata is in the user's own access token.
  const si = await client().auth.signInWithPassword({ email: u.email, password: PASSWORD });
  assert.equal(si.error, null);
  const claims = jwtPayload(si.data.session.access_token);
  assert.equal(claims.sub, u.id);
  assert.equal(claims.role, 'authenticated');
  assert.equal(claims.app_metadata.role, 'admin');
  assert.equal(claims.app_metadata.org_id, 'org-42');

  const del = await admin.auth.admin.deleteUser(u.id);
  assert.equal(del.error, null);
  const gone = await admin.auth.admin.getUserById(u.id);
  assert.ok(gone.error, 'deleted user is gone');
  assert.equal(gone.error.status, 404);
  assert.equal(gone.error.code, 'user_not_found');

  const denied = await client().auth.admin.listUsers();
  assert.ok(denied.error, 'publishable key is not an admin');
  assert.equal(denied.error.status, 403);
  assert.equal(denied.error.code, 'not_admin');
});

// 10. An access token issued by /auth/v1 is a user principal everywhere: the
//     database sees role 'authenticated' and auth.uid() = the user's id.
test('access token works as a Principal (platform whoami)', async () => {
  const { user, session } = await newUser('whoami');
  const res = await fetch(`${server.url}/platform/v1/whoami`, {
    headers: { apikey: server.PUBLISHABLE_KEY, Authorization: `Bearer ${session.access_token}` },
  });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.database.current_user, 'authenticated');
  assert.equal(body.database.auth_uid, user.id);
});

// 11. Settings advertise email sign-in and autoconfirm; the API key is required
//     (401 without it, as the Supabase gateway answers).
test('settings, and apikey required', async () => {
  const s = await authFetch('/settings');
  assert.equal(s.status, 200);
  assert.equal(s.body.external.email, true);
  assert.equal(s.body.mailer_autoconfirm, true);
  assert.equal(s.body.disable_signup, false);

  const res = await fetch(`${server.url}/auth/v1/signup`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email: uniqueEmail('nokey'), password: PASSWORD }),
  });
  await res.arrayBuffer();
  assert.equal(res.status, 401);
});
