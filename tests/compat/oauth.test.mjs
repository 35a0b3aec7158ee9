// GoTrue compatibility of Wasmbase's OAuth sign-in and anonymous sign-ins,
// driven through the real @supabase/supabase-js against a real `wasmbase dev`
// server. The OAuth provider is a small GitHub-style double on 127.0.0.1,
// configured through the flat WASMBASE_AUTH_EXTERNAL_GITHUB_* environment
// variables (which are part of what is tested).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { PASSWORD, makeClient, memoryStorage, uniqueEmail } from './clients.mjs';
import { startServer } from './server.mjs';

const CLIENT_ID = 'compat-github-client';
const CLIENT_SECRET = 'compat-github-secret-0123456789';
/** Where the app wants to land after sign-in (allow-listed by startServer). */
const REDIRECT = 'http://localhost:3000/cb';

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
/** @type {Awaited<ReturnType<typeof startFakeGitHub>>} */
let fake;

before(async () => {
  fake = await startFakeGitHub();
  server = await startServer({
    env: {
      WASMBASE_AUTH_EXTERNAL_GITHUB_ENABLED: 'true',
      WASMBASE_AUTH_EXTERNAL_GITHUB_CLIENT_ID: CLIENT_ID,
      WASMBASE_AUTH_EXTERNAL_GITHUB_SECRET: CLIENT_SECRET,
      WASMBASE_AUTH_EXTERNAL_GITHUB_URL: fake.base,
      WASMBASE_AUTH_EXTERNAL_GITHUB_API_URL: fake.base,
    },
  });
});

after(async () => {
  await server?.stop();
  await fake?.close();
});

// ---------------------------------------------------------------- fake GitHub

/**
 * A GitHub-style OAuth 2 provider on 127.0.0.1 (port 0):
 *
 * - `GET /login/oauth/authorize` mints a fresh GitHub user for every sign-in and
 *   answers 302 to `redirect_uri` with `code` and the given `state`;
 * - `POST /login/oauth/access_token` (form-encoded; client credentials in the
 *   form or as HTTP Basic) checks the secret, that the code is used once, the
 *   `redirect_uri` if one is sent, and the PKCE `code_verifier` (S256) if the
 *   authorize request carried a `code_challenge`; answers JSON
 *   `{access_token, token_type: 'bearer', scope}`;
 * - `GET /user` and `GET /user/emails` with `Authorization: Bearer <token>`
 *   (or GitHub's `token <token>`).
 *
 * Every refusal is recorded in `rejections`, which failing assertions print.
 */
async function startFakeGitHub() {
  /** @type {Map<string, Grant>} code -> grant */
  const codes = new Map();
  /** access token -> GitHub user */
  const tokens = new Map();
  const rejections = [];
  let tokenRequests = 0;
  let nextId = 5_100_000;
  let base = '';

  /**
   * @typedef {{ code: string, user: {id: number, login: string, name: string, avatar_url: string, email: string},
   *   redirectUri: string, state: string, scope: string, challenge: string | null,
   *   used: boolean, accessToken: string | null }} Grant
   */

  const json = (res, status, body) => {
    res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify(body));
  };
  const refuse = (res, status, error, description) => {
    rejections.push(`${status} ${error}: ${description}`);
    json(res, status, { error, error_description: description });
  };
  const readBody = async (req) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    return Buffer.concat(chunks).toString('utf8');
  };
  const bearer = (req) => {
    const m = /^(?:Bearer|token)\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    return m ? tokens.get(m[1]) : undefined;
  };

  const authorize = (req, res, q) => {
    if (q.get('client_id') !== CLIENT_ID) {
      return refuse(res, 400, 'invalid_client', `authorize: unknown client_id ${q.get('client_id')}`);
    }
    const redirectUri = q.get('redirect_uri');
    let target;
    try {
      target = new URL(redirectUri);
    } catch {
      return refuse(res, 400, 'invalid_request', `authorize: bad redirect_uri ${redirectUri}`);
    }
    const state = q.get('state');
    if (!state) return refuse(res, 400, 'invalid_request', 'authorize: no state');
    const challenge = q.get('code_challenge');
    const method = q.get('code_challenge_method');
    if (challenge && (method ?? '').toUpperCase() !== 'S256') {
      return refuse(res, 400, 'invalid_request', `authorize: code_challenge_method ${method}, want S256`);
    }
    const id = nextId++;
    const user = {
      id,
      login: `octocat-${id}`,
      name: `Octo Cat ${id}`,
      avatar_url: `${base}/avatars/${id}.png`,
      email: uniqueEmail('github'),
    };
    const code = randomBytes(16).toString('hex');
    codes.set(code, {
      code,
      user,
      redirectUri,
      state,
      scope: q.get('scope') ?? '',
      challenge,
      used: false,
      accessToken: null,
    });
    target.searchParams.set('code', code);
    target.searchParams.set('state', state);
    res.writeHead(302, { Location: target.href });
    res.end();
  };

  const accessToken = async (req, res) => {
    tokenRequests += 1;
    const raw = await readBody(req);
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (type !== 'application/x-www-form-urlencoded') {
      return refuse(res, 400, 'invalid_request', `token: body is ${type || 'untyped'}, want form-encoded`);
    }
    const form = new URLSearchParams(raw);
    let clientId = form.get('client_id');
    let secret = form.get('client_secret');
    const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    if (basic) {
      // RFC 6749 2.3.1: form-urlencoded id and secret, joined by ':', base64.
      const pair = Buffer.from(basic[1], 'base64').toString('utf8');
      const i = pair.indexOf(':');
      const dec = (s) => decodeURIComponent(s.replace(/\+/g, ' '));
      clientId = dec(pair.slice(0, i));
      secret = dec(pair.slice(i + 1));
    }
    if (clientId !== CLIENT_ID || secret !== CLIENT_SECRET) {
      return refuse(res, 401, 'invalid_client', `token: bad client credentials (client_id ${clientId})`);
    }
    const grantType = form.get('grant_type');
    if (grantType !== null && grantType !== 'authorization_code') {
      return refuse(res, 400, 'unsupported_grant_type', `token: grant_type ${grantType}`);
    }
    const grant = codes.get(form.get('code') ?? '');
    if (!grant) return refuse(res, 400, 'bad_verification_code', 'token: unknown code');
    if (grant.used) return refuse(res, 400, 'bad_verification_code', 'token: code already used');
    grant.used = true;
    const redirectUri = form.get('redirect_uri');
    if (redirectUri !== null && redirectUri !== grant.redirectUri) {
      return refuse(res, 400, 'redirect_uri_mismatch', `token: redirect_uri ${redirectUri}, authorize had ${grant.redirectUri}`);
    }
    if (grant.challenge) {
      const verifier = form.get('code_verifier');
      if (!verifier) return refuse(res, 400, 'invalid_grant', 'token: code_challenge was sent, code_verifier is missing');
      if (createHash('sha256').update(verifier).digest('base64url') !== grant.challenge) {
        return refuse(res, 400, 'invalid_grant', 'token: code_verifier does not match the code_challenge');
      }
    }
    const token = `gho_${randomBytes(18).toString('hex')}`;
    tokens.set(token, grant.user);
    grant.accessToken = token;
    const scope = grant.scope.split(/[\s,]+/).filter(Boolean).join(',');
    json(res, 200, { access_token: token, token_type: 'bearer', scope });
  };

  const handle = async (req, res) => {
    const url = new URL(req.url, base);
    const route = `${req.method} ${url.pathname}`;
    if (route === 'GET /login/oauth/authorize') return authorize(req, res, url.searchParams);
    if (route === 'POST /login/oauth/access_token') return accessToken(req, res);
    if (route === 'GET /user' || route === 'GET /user/emails') {
      const user = bearer(req);
      if (!user) {
        rejections.push(`401 ${route}: no valid bearer token`);
        return json(res, 401, { message: 'Bad credentials' });
      }
      if (url.pathname === '/user') return json(res, 200, user);
      return json(res, 200, [{ email: user.email, primary: true, verified: true, visibility: 'public' }]);
    }
    rejections.push(`404 ${route}`);
    json(res, 404, { message: 'Not Found' });
  };

  const http = createServer((req, res) => {
    handle(req, res).catch((err) => {
      rejections.push(`500 ${req.method} ${req.url}: ${err}`);
      if (!res.headersSent) json(res, 500, { error: 'fake_failure' });
      else res.end();
    });
  });
  await new Promise((resolve, reject) => {
    http.once('error', reject);
    http.listen(0, '127.0.0.1', resolve);
  });
  base = `http://127.0.0.1:${http.address().port}`;

  return {
    base,
    rejections,
    /** POST /login/oauth/access_token requests so far. */
    tokenRequests: () => tokenRequests,
    /** The grant (GitHub user, access token once exchanged) behind an authorize `code`. */
    grant: (code) => codes.get(code),
    close: () =>
      new Promise((resolve) => {
        http.close(() => resolve());
        // The server's HTTP client may hold keep-alive connections.
        http.closeAllConnections();
      }),
  };
}

// ---------------------------------------------------------------- helpers

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function jwtPayload(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

/** What the fake provider refused so far, for assertion messages. */
function fakeLog() {
  return fake.rejections.length ? `\nfake provider refusals:\n  ${fake.rejections.join('\n  ')}` : '';
}

/**
 * GETs `url` without following redirects; it must redirect (302, or 303 as
 * GoTrue answers a callback whose state it does not know). Returns the Location.
 */
async function hop(url, what) {
  const res = await fetch(url, { redirect: 'manual' });
  const body = await res.text();
  assert.ok(
    res.status === 302 || res.status === 303,
    `${what}: GET ${url} -> ${res.status} ${body}${fakeLog()}`,
  );
  const location = res.headers.get('location');
  assert.ok(location, `${what}: ${res.status} without Location`);
  return new URL(location, url);
}

/**
 * Follows an OAuth sign-in from the server's /authorize URL hop by hop: server
 * /authorize -> fake authorize -> server /callback -> the app. The app's URL
 * (`final`) is not fetched. `grant` is the fake's record of the sign-in.
 */
async function followOAuth(start) {
  const authorize = await hop(start, 'server /authorize');
  assert.equal(`${authorize.origin}${authorize.pathname}`, `${fake.base}/login/oauth/authorize`);
  const p = authorize.searchParams;
  assert.equal(p.get('client_id'), CLIENT_ID);
  assert.equal(p.get('response_type'), 'code');
  assert.equal(p.get('redirect_uri'), `${server.url}/auth/v1/callback`);
  assert.ok(p.get('state'), 'an opaque state goes to the provider');

  const callback = await hop(authorize, 'fake authorize');
  assert.equal(`${callback.origin}${callback.pathname}`, `${server.url}/auth/v1/callback`);
  const grant = fake.grant(callback.searchParams.get('code'));
  assert.ok(grant);

  const final = await hop(callback, 'server /callback');
  const frag = new URLSearchParams(final.hash.slice(1));
  const error = final.searchParams.get('error') ?? frag.get('error');
  assert.equal(error, null, `sign-in failed: ${final.href}${fakeLog()}`);
  assert.ok(grant.accessToken, `the server exchanged the code at the provider${fakeLog()}`);
  return { authorize, callback, final, grant };
}

// ---------------------------------------------------------------- tests

// 1. PKCE: signInWithOAuth gives the /authorize URL; the round trip through the
//    provider lands on redirectTo with ?code= (no tokens in the URL), which only
//    this client (holding the verifier) exchanges. The session carries the
//    provider's token; the user is a GitHub user with one github identity. The
//    provider's redirect (state) works once.
test('signInWithOAuth (PKCE) + exchangeCodeForSession: github user, identity, provider_token', async () => {
  const c = makeClient(server, server.PUBLISHABLE_KEY, {
    storage: memoryStorage(),
    flowType: 'pkce',
    persistSession: true,
  });
  const { data, error } = await c.auth.signInWithOAuth({
    provider: 'github',
    options: { redirectTo: REDIRECT, skipBrowserRedirect: true },
  });
  assert.equal(error, null);
  const start = new URL(data.url);
  assert.equal(`${start.origin}${start.pathname}`, `${server.url}/auth/v1/authorize`);
  assert.equal(start.searchParams.get('provider'), 'github');
  assert.ok(start.searchParams.get('code_challenge'));

  const { callback, final, grant } = await followOAuth(data.url);
  assert.equal(`${final.origin}${final.pathname}`, REDIRECT, final.href);
  const code = final.searchParams.get('code');
  assert.ok(code, `PKCE lands with ?code=: ${final.href}`);
  assert.equal(final.searchParams.get('access_token'), null, 'no tokens in the query');
  assert.equal(final.hash, '', 'no tokens in the fragment');

  const ex = await c.auth.exchangeCodeForSession(code);
  assert.equal(ex.error, null);
  const { session, user } = ex.data;
  assert.ok(session?.access_token);
  assert.ok(session.refresh_token);
  assert.equal(session.provider_token, grant.accessToken);
  assert.equal(jwtPayload(session.access_token).sub, user.id);

  assert.equal(user.app_metadata.provider, 'github');
  assert.ok(user.app_metadata.providers?.includes('github'), JSON.stringify(user.app_metadata));
  assert.equal(user.email, grant.user.email);
  assert.ok(user.email_confirmed_at, 'GitHub says the address is verified');
  const gh = user.identities?.find((i) => i.provider === 'github');
  assert.ok(gh, `a github identity: ${JSON.stringify(user.identities)}`);
  assert.match(gh.identity_id, UUID_RE);
  assert.equal(gh.id, String(grant.user.id), "the identity's id is GitHub's user id");
  assert.equal(gh.user_id, user.id);
  assert.equal(gh.identity_data.sub, String(grant.user.id));
  assert.equal(gh.identity_data.email, grant.user.email);

  const ids = await c.auth.getUserIdentities();
  assert.equal(ids.error, null);
  assert.deepEqual(
    ids.data.identities.map((i) => [i.provider, i.id]),
    [['github', String(grant.user.id)]],
  );

  // The state is single use: replaying the provider's redirect is refused, and
  // the provider is not asked again.
  const tokenRequests = fake.tokenRequests();
  const replay = await hop(callback, 'replayed /callback');
  assert.equal(replay.searchParams.get('error_code'), 'bad_oauth_state', replay.href);
  assert.equal(replay.searchParams.get('code'), null);
  assert.equal(fake.tokenRequests(), tokenRequests);
});

// 2. Implicit flow (supabase-js's default): the round trip lands on redirectTo
//    with the session in the fragment; the tokens work with getUser(jwt),
//    setSession and a refresh.
test('signInWithOAuth (implicit): session in the redirect fragment', async () => {
  const c = makeClient(server);
  const { data, error } = await c.auth.signInWithOAuth({
    provider: 'github',
    options: { redirectTo: REDIRECT, skipBrowserRedirect: true },
  });
  assert.equal(error, null);
  assert.equal(new URL(data.url).searchParams.get('code_challenge'), null);

  const { final, grant } = await followOAuth(data.url);
  assert.equal(`${final.origin}${final.pathname}`, REDIRECT, final.href);
  assert.equal(final.search, '', `implicit: nothing in the query: ${final.href}`);
  const frag = new URLSearchParams(final.hash.slice(1));
  const access_token = frag.get('access_token');
  const refresh_token = frag.get('refresh_token');
  assert.ok(access_token, final.href);
  assert.ok(refresh_token, final.href);
  assert.equal(frag.get('token_type'), 'bearer');
  assert.ok(Number(frag.get('expires_in')) > 0, final.href);
  assert.ok(Number(frag.get('expires_at')) > Date.now() / 1000, final.href);
  assert.equal(frag.get('provider_token'), grant.accessToken);
  const claims = jwtPayload(access_token);
  assert.equal(claims.role, 'authenticated');
  assert.equal(claims.app_metadata.provider, 'github');

  const got = await makeClient(server).auth.getUser(access_token);
  assert.equal(got.error, null);
  assert.equal(got.data.user.id, claims.sub);
  assert.equal(got.data.user.email, grant.user.email);
  assert.ok(got.data.user.identities.some((i) => i.provider === 'github'));

  const set = await c.auth.setSession({ access_token, refresh_token });
  assert.equal(set.error, null);
  assert.equal(set.data.user.id, claims.sub);
  assert.equal(set.data.user.app_metadata.provider, 'github');

  // The refresh token is a live one.
  const refreshed = await c.auth.refreshSession();
  assert.equal(refreshed.error, null);
  assert.equal(refreshed.data.user.id, claims.sub);
  assert.notEqual(refreshed.data.session.refresh_token, refresh_token);
});

// 3. A provider that is not configured is refused at /authorize (400
//    validation_failed); a callback whose state the server never issued goes back
//    to the app with bad_oauth_state, without a code exchange at the provider.
test('authorize with a disabled provider; callback with a forged state', async () => {
  const q = new URLSearchParams({ provider: 'google', redirect_to: REDIRECT });
  const res = await fetch(`${server.url}/auth/v1/authorize?${q}`, {
    redirect: 'manual',
    headers: { 'X-Supabase-Api-Version': '2024-01-01' },
  });
  const text = await res.text();
  assert.equal(res.status, 400, text);
  const body = JSON.parse(text);
  assert.equal(body.code, 'validation_failed');
  // GoTrue's words for a provider that is not configured.
  assert.equal(body.message, 'Unsupported provider: Provider google could not be found');

  const tokenRequests = fake.tokenRequests();
  const forged = await hop(
    `${server.url}/auth/v1/callback?code=forged-code&state=forged-state`,
    'forged /callback',
  );
  assert.equal(forged.origin, 'http://localhost:3000', forged.href);
  assert.ok(forged.searchParams.get('error'), forged.href);
  assert.equal(forged.searchParams.get('error_code'), 'bad_oauth_state', forged.href);
  assert.equal(fake.tokenRequests(), tokenRequests, 'no code exchange without a valid state');
});

// 4. Anonymous sign-in (on by default in dev): a session for a user with
//    is_anonymous and the given metadata; updateUser({email, password}) converts
//    it in place (dev autoconfirms), after which password sign-in works.
test('signInAnonymously, then convert with updateUser({ email, password })', async () => {
  const c = makeClient(server);
  const { data, error } = await c.auth.signInAnonymously({ options: { data: { nick: 'x' } } });
  assert.equal(error, null);
  assert.ok(data.session?.access_token);
  assert.ok(data.session.refresh_token);
  const anon = data.user;
  assert.match(anon.id, UUID_RE);
  assert.equal(anon.is_anonymous, true);
  assert.equal(anon.user_metadata.nick, 'x');
  assert.ok(!anon.email, `no email yet: ${anon.email}`);
  const claims = jwtPayload(data.session.access_token);
  assert.equal(claims.sub, anon.id);
  assert.equal(claims.role, 'authenticated');
  assert.equal(claims.is_anonymous, true);
  assert.ok(
    claims.amr?.some((a) => a.method === 'anonymous'),
    `amr: ${JSON.stringify(claims.amr)}`,
  );

  const email = uniqueEmail('anon');
  const upd = await c.auth.updateUser({ email, password: PASSWORD });
  assert.equal(upd.error, null);
  assert.equal(upd.data.user.id, anon.id);
  assert.equal(upd.data.user.email, email);
  assert.equal(upd.data.user.is_anonymous, false);
  assert.equal(upd.data.user.user_metadata.nick, 'x', 'metadata survives the conversion');

  const si = await makeClient(server).auth.signInWithPassword({ email, password: PASSWORD });
  assert.equal(si.error, null);
  assert.equal(si.data.user.id, anon.id);
  assert.equal(si.data.user.is_anonymous, false);
  assert.equal(jwtPayload(si.data.session.access_token).is_anonymous, false);
});

// 5. Settings advertise the enabled GitHub provider and anonymous sign-ins.
test('settings list external.github and external.anonymous_users', async () => {
  const res = await fetch(`${server.url}/auth/v1/settings`, {
    headers: { apikey: server.PUBLISHABLE_KEY },
  });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.external.github, true);
  assert.equal(body.external.anonymous_users, true);
  assert.equal(body.external.email, true);
});
