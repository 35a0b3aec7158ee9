//! Sign-in with OAuth / OpenID Connect providers, ID-token sign-in, identity
//! linking and anonymous users, against the fake provider of `fake_oauth` (real
//! HTTP, real RS256) and real PostgreSQL: GitHub and generic-OIDC redirects in
//! the PKCE and implicit flows (a callback landing on another node too), state,
//! code and PKCE rules, the redirect allowlist, a provider that is down, answers
//! garbage or hangs, ID-token claim checks and key rotation, linking by verified
//! e-mail and by `linkIdentity`, unlinking, and anonymous sign-in, conversion,
//! rate limit and sweep. Every failure is checked to leave no session behind.
//!
//! Expected answers follow /work/notes/oauth-contract.md, and GoTrue's where the
//! contract defers to it (/work/notes/gotrue-oauth.md).

use crate::fake_oauth::{
    b64url, s256, sha256_hex, unsigned_token, AuthorizeRequest, FakeProvider, Mode, CLIENT_ID,
    MOBILE_CLIENT_ID,
};
use crate::harness::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use wasmbase::config::{Config, ExternalProvider};
use wasmbase_host_api::keys::KeyKind;

/// The app's site URL (default redirect).
const SITE: &str = "http://localhost:3000";
/// An allow-listed app callback.
const APP: &str = "http://app.test/cb";
/// Name of the generic OIDC provider (issuer = the fake).
const OIDC: &str = "acme";
const PASSWORD: &str = "password-123";

/// Providers pointing at `fake`, the app's URLs, autoconfirm and anonymous
/// sign-ins on.
fn configure(c: &mut Config, fake: &FakeProvider) {
    c.auth.autoconfirm = Some(true);
    c.auth.site_url = SITE.into();
    c.auth.redirect_urls = vec!["http://app.test/**".into()];
    c.auth.anonymous_sign_ins = Some(true);
    c.auth.external.insert("github".into(), fake.github());
    c.auth.external.insert(OIDC.into(), fake.oidc());
}

/// A server with its keys, the fake provider it signs in with, and a client
/// that does not follow redirects.
struct O {
    s: TestServer,
    pk: String,
    sk: String,
    db: TestDb,
    fake: FakeProvider,
    nr: reqwest::Client,
}

async fn oauth_server(tweak: impl FnOnce(&mut Config)) -> O {
    let fake = FakeProvider::start().await;
    let db = TestDb::new().await;
    let (_, pk) = db.key(KeyKind::Publishable).await;
    let (_, sk) = db.key(KeyKind::Secret).await;
    let s = db
        .server_with(|c| {
            configure(c, &fake);
            tweak(c)
        })
        .await;
    O {
        s,
        pk,
        sk,
        db,
        fake,
        nr: no_redirect(),
    }
}

fn no_redirect() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Resp {
    status: u16,
    body: Value,
}

impl Resp {
    /// The GoTrue error code (`code` in the 2024-01-01 shape, else `error_code`).
    fn code(&self) -> Option<&str> {
        self.body["code"]
            .as_str()
            .or_else(|| self.body["error_code"].as_str())
    }
}

/// An `/auth/v1` call with an apikey, as auth-js makes it.
async fn api(
    s: &TestServer,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    bearer: Option<&str>,
) -> Resp {
    let (status, _, body) = auth_request(s, key, method, path, body, bearer).await;
    Resp { status, body }
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `GET /authorize` (no apikey, as a browser) → the provider URL it redirects to.
async fn authorize_on(
    nr: &reqwest::Client,
    base: &str,
    provider: &str,
    redirect_to: &str,
    challenge: Option<&str>,
) -> AuthorizeRequest {
    let mut q = vec![("provider", provider), ("redirect_to", redirect_to)];
    if let Some(c) = challenge {
        q.push(("code_challenge", c));
        q.push(("code_challenge_method", "s256"));
    }
    let resp = nr
        .get(format!("{base}/auth/v1/authorize"))
        .query(&q)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let loc = location(&resp);
    if status != 302 {
        panic!(
            "authorize {provider}: {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }
    AuthorizeRequest::parse(&loc)
}

/// Where a redirect sends the browser, with its query and fragment parameters.
#[derive(Debug)]
struct Landing {
    location: String,
    /// Scheme, host, port and path.
    base: String,
    query: HashMap<String, String>,
    fragment: HashMap<String, String>,
}

impl Landing {
    fn parse(location: &str) -> Landing {
        let u = url::Url::parse(location).unwrap_or_else(|e| panic!("{location:?}: {e}"));
        let query: HashMap<String, String> = u.query_pairs().into_owned().collect();
        let fragment: HashMap<String, String> = u
            .fragment()
            .map(|f| {
                url::form_urlencoded::parse(f.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let mut b = u.clone();
        b.set_query(None);
        b.set_fragment(None);
        Landing {
            location: location.to_string(),
            base: b.to_string(),
            query,
            fragment,
        }
    }

    /// A parameter from the query, else the fragment (auth-js reads both).
    fn get(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .or_else(|| self.fragment.get(k))
            .map(String::as_str)
    }

    /// Whether it lands on `url` (trailing slash aside).
    fn at(&self, url: &str) -> bool {
        self.base.trim_end_matches('/') == url.trim_end_matches('/')
    }

    /// Whether it carries anything that leads to a session.
    fn has_session(&self) -> bool {
        self.get("access_token").is_some()
            || self.get("refresh_token").is_some()
            || self.query.contains_key("code")
    }

    /// A failure with `error_code`, and no session.
    fn assert_failed(&self, error_code: &str) {
        assert!(
            !self.has_session(),
            "a session on failure: {}",
            self.location
        );
        assert_eq!(
            self.get("error_code"),
            Some(error_code),
            "{}",
            self.location
        );
        assert!(self.get("error").is_some(), "{}", self.location);
    }

    /// The implicit flow's access token.
    fn access_token(&self) -> String {
        self.fragment
            .get("access_token")
            .cloned()
            .unwrap_or_else(|| panic!("no access_token: {}", self.location))
    }
}

async fn landing_of(resp: reqwest::Response) -> Landing {
    let status = resp.status().as_u16();
    let loc = location(&resp);
    if status != 302 && status != 303 {
        panic!(
            "expected a redirect, got {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    Landing::parse(&loc)
}

/// `GET /callback` on the server at `base` (no apikey, as the provider's
/// redirect).
async fn callback_on(nr: &reqwest::Client, base: &str, params: &[(&str, &str)]) -> Landing {
    let resp = nr
        .get(format!("{base}/auth/v1/callback"))
        .query(params)
        .send()
        .await
        .unwrap();
    landing_of(resp).await
}

/// A PKCE verifier and its S256 challenge.
fn pkce() -> (String, String) {
    let v = format!(
        "verifier-{}-{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let c = s256(&v);
    (v, c)
}

/// The payload of a JWT.
fn claims_of(jwt: &str) -> Value {
    use base64::Engine;
    let p = jwt.split('.').nth(1).expect("a JWT");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p)
        .expect("base64url payload");
    serde_json::from_slice(&raw).expect("JSON payload")
}

fn with(mut c: Value, k: &str, v: Value) -> Value {
    c[k] = v;
    c
}

fn without(mut c: Value, k: &str) -> Value {
    c.as_object_mut().unwrap().remove(k);
    c
}

/// The user's identity providers, sorted.
fn providers(user: &Value) -> Vec<String> {
    let mut v: Vec<String> = user["identities"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["provider"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn identity<'a>(user: &'a Value, provider: &str) -> &'a Value {
    user["identities"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["provider"] == provider))
        .unwrap_or_else(|| panic!("no {provider} identity: {user}"))
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

impl O {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        bearer: Option<&str>,
    ) -> Resp {
        api(&self.s, &self.pk, method, path, body, bearer).await
    }
    async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(body), None).await
    }
    async fn user(&self, access: &str) -> Resp {
        self.call(Method::GET, "/user", None, Some(access)).await
    }
    async fn login(&self, email: &str, password: &str) -> Resp {
        self.post(
            "/token?grant_type=password",
            json!({"email": email, "password": password}),
        )
        .await
    }
    /// Signs up `email` with [`PASSWORD`] (autoconfirm) and returns the session.
    async fn signup_password(&self, email: &str) -> Value {
        let r = self
            .post("/signup", json!({"email": email, "password": PASSWORD}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body["access_token"].is_string(), "{}", r.body);
        r.body
    }
    /// A confirmed e-mail/password user made by the admin API (any autoconfirm).
    async fn admin_user(&self, email: &str) -> Value {
        let r = api(
            &self.s,
            &self.sk,
            Method::POST,
            "/admin/users",
            Some(json!({"email": email, "password": PASSWORD, "email_confirm": true})),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }
    /// `POST /signup {}`: an anonymous session.
    async fn anonymous(&self) -> Value {
        let r = self.post("/signup", json!({})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }
    async fn authorize(
        &self,
        provider: &str,
        redirect_to: &str,
        challenge: Option<&str>,
    ) -> AuthorizeRequest {
        authorize_on(&self.nr, &self.s.url, provider, redirect_to, challenge).await
    }
    async fn callback(&self, params: &[(&str, &str)]) -> Landing {
        callback_on(&self.nr, &self.s.url, params).await
    }
    /// The provider approves `req` for its current user; the browser comes back.
    async fn finish(&self, req: &AuthorizeRequest) -> Landing {
        let code = self.fake.code_for_request(req);
        self.callback(&[("code", &code), ("state", &req.state)])
            .await
    }
    /// A whole implicit-flow sign-in to [`APP`].
    async fn sign_in(&self, provider: &str) -> Landing {
        let req = self.authorize(provider, APP, None).await;
        self.finish(&req).await
    }
    async fn exchange(&self, auth_code: &str, verifier: &str) -> Resp {
        self.post(
            "/token?grant_type=pkce",
            json!({"auth_code": auth_code, "code_verifier": verifier}),
        )
        .await
    }
    async fn id_token_grant(&self, provider: &str, token: &str, nonce: Option<&str>) -> Resp {
        let mut body = json!({"provider": provider, "id_token": token});
        if let Some(n) = nonce {
            body["nonce"] = json!(n);
        }
        self.post("/token?grant_type=id_token", body).await
    }
    /// `GET /user/identities/authorize` (skip_http_redirect) → the provider URL.
    async fn link_url(&self, access: &str, provider: &str) -> AuthorizeRequest {
        let to: String = url::form_urlencoded::byte_serialize(APP.as_bytes()).collect();
        let r = self
            .call(
                Method::GET,
                &format!("/user/identities/authorize?provider={provider}&redirect_to={to}&skip_http_redirect=true"),
                None,
                Some(access),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        AuthorizeRequest::parse(r.body["url"].as_str().expect("{url}"))
    }
    /// `SELECT count(*) ...` as the owner.
    async fn count(&self, sql: &str) -> i64 {
        self.db
            .owner()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }
    async fn sessions(&self) -> i64 {
        self.count("SELECT count(*) FROM auth.sessions").await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_pkce_sign_in_creates_a_user_with_a_github_identity_and_hands_over_the_provider_token(
) {
    let o = oauth_server(|_| {}).await;
    o.fake
        .set_user("12345", "octo@example.com", true, "Octo Cat");
    let (verifier, challenge) = pkce();
    let req = o.authorize("github", APP, Some(&challenge)).await;
    assert!(
        req.url
            .as_str()
            .starts_with(&format!("{}/login/oauth/authorize?", o.fake.url)),
        "{}",
        req.url
    );
    assert_eq!(req.client_id, CLIENT_ID);
    assert_eq!(req.redirect_uri, format!("{}/auth/v1/callback", o.s.url));
    assert_eq!(req.param("response_type"), Some("code"));
    assert!(
        req.state.len() >= 16,
        "an opaque random state: {}",
        req.state
    );
    // PKCE towards the provider too, with the server's own verifier.
    assert_eq!(req.param("code_challenge_method"), Some("S256"));
    let upstream = req
        .code_challenge
        .clone()
        .expect("a challenge to the provider");
    assert_ne!(upstream, challenge);

    // Through the provider's consent page, as a browser goes.
    let consent = o.nr.get(req.url.as_str()).send().await.unwrap();
    assert_eq!(consent.status(), 302);
    let back = location(&consent);
    assert!(back.starts_with(&req.redirect_uri), "{back}");
    let landing = landing_of(o.nr.get(back.as_str()).send().await.unwrap()).await;
    assert!(landing.at(APP), "{}", landing.location);
    assert!(
        !landing.fragment.contains_key("access_token"),
        "PKCE: no tokens in the URL"
    );
    assert!(landing.get("error").is_none(), "{}", landing.location);
    let code = landing.query.get("code").cloned().expect("an auth code");

    let r = o.exchange(&code, &verifier).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let user = &r.body["user"];
    assert_eq!(user["email"], "octo@example.com");
    assert!(user["email_confirmed_at"].is_string(), "{user}");
    assert_eq!(user["is_anonymous"], false);
    assert_eq!(user["app_metadata"]["provider"], "github");
    assert_eq!(user["app_metadata"]["providers"], json!(["github"]));
    assert_eq!(providers(user), ["github"]);
    let gh = identity(user, "github");
    assert_eq!(gh["id"], "12345");
    assert_eq!(gh["user_id"], user["id"]);
    assert!(gh["identity_id"].is_string(), "{gh}");
    let data = &gh["identity_data"];
    assert_eq!(data["sub"], "12345");
    assert_eq!(data["email"], "octo@example.com");
    assert_eq!(data["email_verified"], true);
    assert_eq!(data["name"], "Octo Cat");
    assert_eq!(data["avatar_url"], format!("{}/avatars/12345", o.fake.url));
    let provider_token = s(&r.body["provider_token"]);
    assert!(o.fake.issued(&provider_token), "{provider_token}");
    let access = s(&r.body["access_token"]);
    let claims = claims_of(&access);
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(claims["is_anonymous"], false);
    assert_eq!(claims["app_metadata"]["provider"], "github");
    let me = o.user(&access).await;
    assert_eq!((me.status, &me.body["id"]), (200, &user["id"]));

    // The same GitHub account again: the same user, no second identity.
    let again = o.sign_in("github").await;
    assert_eq!(claims_of(&again.access_token())["sub"], user["id"]);
    assert_eq!(o.count("SELECT count(*) FROM auth.users").await, 1);
    assert_eq!(
        o.count("SELECT count(*) FROM auth.identities WHERE provider = 'github'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_implicit_flow_puts_the_session_in_the_fragment() {
    let o = oauth_server(|_| {}).await;
    o.fake.set_user("777", "imp@example.com", true, "Imp");
    let l = o.sign_in("github").await;
    assert!(l.at(APP), "{}", l.location);
    assert!(l.query.is_empty(), "nothing in the query: {}", l.location);
    for k in [
        "access_token",
        "refresh_token",
        "expires_in",
        "expires_at",
        "provider_token",
        "token_type",
    ] {
        assert!(l.fragment.contains_key(k), "{k}: {}", l.location);
    }
    assert_eq!(l.fragment["token_type"].to_lowercase(), "bearer");
    assert!(o.fake.issued(&l.fragment["provider_token"]));
    let access = l.access_token();
    let claims = claims_of(&access);
    assert_eq!(claims["amr"][0]["method"], "oauth");
    assert_eq!(claims["is_anonymous"], false);
    let me = o.user(&access).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.body["email"], "imp@example.com");
    assert_eq!(me.body["app_metadata"]["provider"], "github");
    let r = o
        .post(
            "/token?grant_type=refresh_token",
            json!({"refresh_token": l.fragment["refresh_token"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["id"], me.body["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_sign_in_verifies_the_id_token_and_its_nonce() {
    let o = oauth_server(|_| {}).await;
    o.fake
        .set_user("acme-user-1", "ada@example.com", true, "Ada");
    let (verifier, challenge) = pkce();
    let req = o.authorize(OIDC, APP, Some(&challenge)).await;
    assert!(
        req.url
            .as_str()
            .starts_with(&format!("{}/authorize?", o.fake.url)),
        "the discovered authorization_endpoint: {}",
        req.url
    );
    assert!(
        req.nonce.is_some(),
        "OIDC authorize sends a nonce: {}",
        req.url
    );
    assert!(
        req.param("scope")
            .unwrap_or("")
            .split(' ')
            .any(|s| s == "openid"),
        "{}",
        req.url
    );
    let l = o.finish(&req).await;
    assert!(l.at(APP), "{}", l.location);
    let code = l
        .query
        .get("code")
        .cloned()
        .unwrap_or_else(|| panic!("no code: {}", l.location));
    let r = o.exchange(&code, &verifier).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let user = &r.body["user"];
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["app_metadata"]["provider"], OIDC);
    let id = identity(user, OIDC);
    assert_eq!(id["id"], "acme-user-1");
    assert_eq!(id["identity_data"]["sub"], "acme-user-1");
    assert_eq!(id["identity_data"]["email_verified"], true);
    assert!(o.fake.issued(&s(&r.body["provider_token"])));
    assert!(
        r.body["provider_refresh_token"].is_string(),
        "the provider gave a refresh token: {}",
        r.body
    );
    assert!(
        o.fake.jwks_fetches() >= 1,
        "the id_token's signature was checked against the JWKS"
    );

    // An id_token whose nonce is not the one sent, or that has none: no session.
    let sessions = o.sessions().await;
    for nonce in [Some("not-the-nonce-we-sent".to_string()), None] {
        let req = o.authorize(OIDC, APP, None).await;
        let code = o.fake.code_for(nonce.clone(), req.code_challenge.clone());
        let l = o.callback(&[("code", &code), ("state", &req.state)]).await;
        assert!(l.at(APP), "{nonce:?}: {}", l.location);
        assert!(!l.has_session(), "{nonce:?}: {}", l.location);
        assert!(l.get("error").is_some(), "{nonce:?}: {}", l.location);
    }
    assert_eq!(o.sessions().await, sessions);
    assert_eq!(o.count("SELECT count(*) FROM auth.users").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_may_land_on_another_node() {
    let fake = FakeProvider::start().await;
    let db = TestDb::new().await;
    let (_, pk) = db.key(KeyKind::Publishable).await;
    // Behind one load balancer both nodes register the same callback URL.
    let lb = "http://wasmbase.test/auth/v1/callback";
    let node = |c: &mut Config| {
        configure(c, &fake);
        for p in c.auth.external.values_mut() {
            p.redirect_uri = Some(lb.into());
        }
    };
    let a = db.server_with(&node).await;
    let b = db.server_with(&node).await;
    let nr = no_redirect();
    fake.set_user("2001", "nodes@example.com", true, "Nodes");
    let (verifier, challenge) = pkce();
    let req = authorize_on(&nr, &a.url, "github", APP, Some(&challenge)).await;
    assert_eq!(req.redirect_uri, lb);
    // The code is bound to the callback URL: B must send the same one.
    let code = fake.code_for_request(&req);
    let l = callback_on(&nr, &b.url, &[("code", &code), ("state", &req.state)]).await;
    assert!(l.at(APP), "{}", l.location);
    let auth_code = l
        .query
        .get("code")
        .cloned()
        .unwrap_or_else(|| panic!("no code: {}", l.location));
    let r = api(
        &a,
        &pk,
        Method::POST,
        "/token?grant_type=pkce",
        Some(json!({"auth_code": auth_code, "code_verifier": verifier})),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["email"], "nodes@example.com");
    // The state is spent for every node.
    let again = fake.code_for(None, None);
    let l = callback_on(&nr, &a.url, &[("code", &again), ("state", &req.state)]).await;
    assert!(!l.has_session(), "{}", l.location);
    assert!(
        l.get("error_code") == Some("bad_oauth_state"),
        "{}",
        l.location
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_incomplete_callbacks_get_no_session() {
    let o = oauth_server(|_| {}).await;
    o.fake.set_user("31", "cb@example.com", true, "Cb");

    // A state this server never issued: back to the site, and the code is not
    // even taken to the provider.
    let code = o.fake.code_for(None, None);
    let l = o
        .callback(&[("code", &code), ("state", "forged-state")])
        .await;
    assert!(l.at(SITE), "{}", l.location);
    l.assert_failed("bad_oauth_state");
    let l = o
        .callback(&[
            ("code", &code),
            ("state", &uuid::Uuid::new_v4().to_string()),
        ])
        .await;
    assert!(l.at(SITE), "{}", l.location);
    l.assert_failed("bad_oauth_state");
    // No state at all.
    let l = o.callback(&[("code", &code)]).await;
    assert!(l.at(SITE), "{}", l.location);
    l.assert_failed("bad_oauth_callback");
    assert_eq!(o.fake.token_requests(), 0, "no code was exchanged");

    // A known state without a code.
    let req = o.authorize("github", APP, None).await;
    let l = o.callback(&[("state", &req.state)]).await;
    assert!(l.at(APP), "{}", l.location);
    l.assert_failed("bad_oauth_callback");

    // The provider's own refusal is passed on.
    let req = o.authorize("github", APP, None).await;
    let l = o
        .callback(&[
            ("error", "access_denied"),
            (
                "error_description",
                "The user has denied your application access.",
            ),
            ("state", &req.state),
        ])
        .await;
    assert!(l.at(APP), "{}", l.location);
    assert!(!l.has_session(), "{}", l.location);
    assert_eq!(l.get("error"), Some("access_denied"), "{}", l.location);
    assert_eq!(
        l.get("error_description"),
        Some("The user has denied your application access.")
    );
    // The provider's own error is passed on as it came: no error_code (GoTrue's).
    assert!(l.get("error_code").is_none(), "{}", l.location);
    assert_eq!(o.sessions().await, 0);

    // A state is good once (implicit: even with a fresh code).
    let req = o.authorize("github", APP, None).await;
    let first = o.finish(&req).await;
    first.access_token();
    assert_eq!(o.sessions().await, 1);
    let fresh = o.fake.code_for(None, None);
    let replay = o.callback(&[("code", &fresh), ("state", &req.state)]).await;
    replay.assert_failed("bad_oauth_state");
    // PKCE: the state is spent once the callback gave out the auth code.
    let (_, challenge) = pkce();
    let req = o.authorize("github", APP, Some(&challenge)).await;
    let first = o.finish(&req).await;
    assert!(first.query.contains_key("code"), "{}", first.location);
    let fresh = o.fake.code_for(None, req.code_challenge.clone());
    let replay = o.callback(&[("code", &fresh), ("state", &req.state)]).await;
    assert!(!replay.has_session(), "{}", replay.location);
    assert!(
        replay.get("error_code") == Some("bad_oauth_state"),
        "{}",
        replay.location
    );
    assert_eq!(o.sessions().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_redirect_to_falls_back_to_the_site_url() {
    let o = oauth_server(|_| {}).await;
    let req = o
        .authorize("github", "https://evil.example/steal", None)
        .await;
    let l = o.finish(&req).await;
    assert!(l.at(SITE), "{}", l.location);
    assert!(!l.location.contains("evil.example"), "{}", l.location);
    l.access_token();
    let (_, challenge) = pkce();
    let req = o
        .authorize("github", "https://evil.example/steal", Some(&challenge))
        .await;
    let l = o.finish(&req).await;
    assert!(l.at(SITE), "{}", l.location);
    assert!(l.query.contains_key("code"), "{}", l.location);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_is_down_or_answers_garbage_gives_an_error_redirect_and_no_session() {
    let o = oauth_server(|_| {}).await;
    for mode in [Mode::Down, Mode::Garbage] {
        for provider in ["github", OIDC] {
            o.fake.set_mode(Mode::Up);
            let req = o.authorize(provider, APP, None).await;
            o.fake.set_mode(mode);
            let l = o.finish(&req).await;
            assert!(l.at(APP), "{mode:?} {provider}: {}", l.location);
            assert!(!l.has_session(), "{mode:?} {provider}: {}", l.location);
            assert_eq!(
                l.get("error"),
                Some("server_error"),
                "{mode:?} {provider}: {}",
                l.location
            );
        }
    }
    assert!(
        o.fake.token_requests() >= 1,
        "the server did reach the provider"
    );
    o.fake.set_mode(Mode::Up);
    assert_eq!(o.sessions().await, 0);
    assert_eq!(o.count("SELECT count(*) FROM auth.users").await, 0);
    // Once it is back, signing in works: nothing was left half done.
    o.sign_in("github").await.access_token();
    o.sign_in(OIDC).await.access_token();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_hangs_is_given_up_on_with_an_error_redirect() {
    let o = oauth_server(|c| c.auth.provider_timeout_secs = 1).await;
    let req = o.authorize("github", APP, None).await;
    o.fake.set_mode(Mode::Slow);
    // Bounded only so that a server without a timeout fails instead of hanging.
    let l = tokio::time::timeout(Duration::from_secs(60), o.finish(&req))
        .await
        .expect("the server gives up on a hanging provider by itself");
    assert!(o.fake.slow_hits() >= 1, "the provider was called");
    assert!(l.at(APP), "{}", l.location);
    assert!(!l.has_session(), "{}", l.location);
    assert_eq!(l.get("error"), Some("server_error"), "{}", l.location);
    assert_eq!(o.sessions().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_verifier_a_reused_auth_code_and_a_reused_provider_code_get_no_session() {
    let o = oauth_server(|_| {}).await;
    let (verifier, challenge) = pkce();
    let req = o.authorize("github", APP, Some(&challenge)).await;
    let l = o.finish(&req).await;
    let code = l.query.get("code").cloned().expect("an auth code");
    let wrong = o.exchange(&code, &pkce().0).await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (400, Some("bad_code_verifier")),
        "{}",
        wrong.body
    );
    assert!(wrong.body.get("access_token").is_none());
    assert_eq!(o.sessions().await, 0);
    let ok = o.exchange(&code, &verifier).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let twice = o.exchange(&code, &verifier).await;
    assert_eq!(
        (twice.status, twice.code()),
        (404, Some("flow_state_not_found")),
        "{}",
        twice.body
    );
    assert_eq!(o.sessions().await, 1);

    // A provider code is good once: the provider refuses it the second time.
    let req1 = o.authorize("github", APP, None).await;
    let provider_code = o.fake.code_for_request(&req1);
    let l = o
        .callback(&[("code", &provider_code), ("state", &req1.state)])
        .await;
    l.access_token();
    let req2 = o.authorize("github", APP, None).await;
    let l = o
        .callback(&[("code", &provider_code), ("state", &req2.state)])
        .await;
    assert!(!l.has_session(), "{}", l.location);
    assert!(l.get("error").is_some(), "{}", l.location);
    assert_eq!(o.sessions().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_that_do_not_fit_are_refused_with_400_and_no_session() {
    let o = oauth_server(|_| {}).await;
    o.fake.set_user("idt-1", "idt@example.com", true, "Idt");
    let nonce = "raw-nonce-1";
    let good = || o.fake.claims(Some(&sha256_hex(nonce)));
    let t = now();
    let tampered = {
        let token = o.fake.id_token(good());
        let parts: Vec<&str> = token.split('.').collect();
        let claims = with(claims_of(&token), "email", json!("mallory@example.com"));
        format!("{}.{}.{}", parts[0], b64url(claims.to_string()), parts[2])
    };
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        (
            "another audience",
            o.fake.id_token(with(good(), "aud", json!("someone-else"))),
            Some(nonce),
        ),
        (
            "another issuer",
            o.fake
                .id_token(with(good(), "iss", json!("https://evil.example"))),
            Some(nonce),
        ),
        (
            "expired",
            o.fake.id_token(with(
                with(good(), "exp", json!(t - 3600)),
                "iat",
                json!(t - 7200),
            )),
            Some(nonce),
        ),
        (
            "another nonce",
            o.fake.id_token(good()),
            Some("another-nonce"),
        ),
        ("nonce not passed", o.fake.id_token(good()), None),
        (
            "unpublished key",
            o.fake.id_token_with(1, good()),
            Some(nonce),
        ),
        (
            "signed by a key other than its kid",
            o.fake.id_token_forged("key1", 1, good()),
            Some(nonce),
        ),
        ("unsigned", unsigned_token(&good()), Some(nonce)),
        ("tampered payload", tampered, Some(nonce)),
        (
            "no sub",
            o.fake.id_token(without(good(), "sub")),
            Some(nonce),
        ),
        ("not a JWT", "not-a-jwt".to_string(), Some(nonce)),
    ];
    for (what, token, n) in &cases {
        let r = o.id_token_grant(OIDC, token, *n).await;
        assert_eq!(r.status, 400, "{what}: {}", r.body);
        assert!(r.body.get("access_token").is_none(), "{what}: {}", r.body);
    }
    // A provider that is not configured.
    let r = o
        .id_token_grant("nope", &o.fake.id_token(good()), Some(nonce))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(o.sessions().await, 0);
    assert_eq!(o.count("SELECT count(*) FROM auth.users").await, 0);
    // The same claims done right are accepted: the refusals were about them.
    let r = o
        .id_token_grant(OIDC, &o.fake.id_token(good()), Some(nonce))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["email"], "idt@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_token_sign_in_creates_the_user_and_follows_gotrues_nonce_rule() {
    let o = oauth_server(|_| {}).await;
    o.fake.set_user("idt-2", "grace@example.com", true, "Grace");
    // The app passes the raw nonce; the token carries its SHA-256 in hex.
    let raw = "a-raw-nonce-from-the-app";
    let r = o
        .id_token_grant(
            OIDC,
            &o.fake.id_token(o.fake.claims(Some(&sha256_hex(raw)))),
            Some(raw),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let user = r.body["user"].clone();
    assert_eq!(user["email"], "grace@example.com");
    assert_eq!(user["app_metadata"]["provider"], OIDC);
    assert_eq!(identity(&user, OIDC)["id"], "idt-2");
    assert!(r.body["refresh_token"].is_string());
    assert_eq!(
        claims_of(&s(&r.body["access_token"]))["amr"][0]["method"],
        "oauth"
    );
    let me = o.user(&s(&r.body["access_token"])).await;
    assert_eq!(me.status, 200, "{}", me.body);

    // No nonce on either side: fine, the same user.
    let r = o
        .id_token_grant(OIDC, &o.fake.id_token(o.fake.claims(None)), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["id"], user["id"]);
    // A nonce on one side only, or the raw nonce in the token: refused.
    let r = o
        .id_token_grant(OIDC, &o.fake.id_token(o.fake.claims(None)), Some(raw))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = o
        .id_token_grant(OIDC, &o.fake.id_token(o.fake.claims(Some(raw))), Some(raw))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    // Another of the app's client ids (a mobile app), in an aud list.
    let claims = with(o.fake.claims(None), "aud", json!([MOBILE_CLIENT_ID, "x"]));
    let r = o.id_token_grant(OIDC, &o.fake.id_token(claims), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["id"], user["id"]);
    assert_eq!(o.count("SELECT count(*) FROM auth.users").await, 1);
    assert_eq!(o.sessions().await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newly_rotated_provider_key_is_accepted_once_the_jwks_is_refetched() {
    let o = oauth_server(|_| {}).await;
    o.fake.set_user("rot-1", "rot@example.com", true, "Rot");
    let r = o
        .id_token_grant(OIDC, &o.fake.id_token(o.fake.claims(None)), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let fetched = o.fake.jwks_fetches();
    assert!(fetched >= 1);
    // The provider rotates: key2 signs, and only key2 is published.
    o.fake.rotate(false);
    let r = o
        .id_token_grant(OIDC, &o.fake.id_token(o.fake.claims(None)), None)
        .await;
    assert_eq!(r.status, 200, "a token of the new key: {}", r.body);
    assert!(
        o.fake.jwks_fetches() > fetched,
        "the unknown kid made the server fetch the JWKS again"
    );
    // key1 is withdrawn: its tokens no longer pass.
    let r = o
        .id_token_grant(OIDC, &o.fake.id_token_with(0, o.fake.claims(None)), None)
        .await;
    assert_eq!(r.status, 400, "a token of the withdrawn key: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_provider_email_never_links_to_an_existing_account() {
    // Without autoconfirm GoTrue and the contract agree: no link, and the
    // sign-in ends with provider_email_needs_verification.
    let o = oauth_server(|c| c.auth.autoconfirm = Some(false)).await;
    let victim = o.admin_user("victim@example.com").await;
    o.fake
        .set_user("666", "victim@example.com", false, "Mallory");
    let l = o.sign_in("github").await;
    l.assert_failed("provider_email_needs_verification");
    let linked = format!(
        "SELECT count(*) FROM auth.identities WHERE provider = 'github' AND user_id = '{}'",
        s(&victim["id"])
    );
    assert_eq!(o.count(&linked).await, 0);
    let login = o.login("victim@example.com", PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(providers(&login.body["user"]), ["email"]);

    // With autoconfirm, GoTrue would count the unverified e-mail as verified and
    // link; the contract does not link it.
    let o = oauth_server(|_| {}).await;
    let victim = s(&o.signup_password("victim@example.com").await["user"]["id"]);
    o.fake
        .set_user("667", "victim@example.com", false, "Mallory");
    let l = o.sign_in("github").await;
    if l.has_session() {
        let claims = claims_of(&l.access_token());
        assert_ne!(
            claims["sub"], victim,
            "signed in as the victim: {}",
            l.location
        );
        assert_ne!(claims["email"], "victim@example.com");
    }
    let linked = format!(
        "SELECT count(*) FROM auth.identities WHERE provider = 'github' AND user_id = '{victim}'"
    );
    assert_eq!(o.count(&linked).await, 0);
    let login = o.login("victim@example.com", PASSWORD).await;
    assert_eq!(providers(&login.body["user"]), ["email"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_provider_email_signs_in_to_the_existing_password_user() {
    let o = oauth_server(|_| {}).await;
    let pw = o.signup_password("linked@example.com").await;
    let id = pw["user"]["id"].clone();
    o.fake
        .set_user("4242", "linked@example.com", true, "Linked");
    let l = o.sign_in("github").await;
    let access = l.access_token();
    assert_eq!(claims_of(&access)["sub"], id);
    let me = o.user(&access).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(providers(&me.body), ["email", "github"]);
    assert_eq!(
        me.body["app_metadata"]["providers"],
        json!(["email", "github"])
    );
    assert_eq!(o.count("SELECT count(*) FROM auth.users").await, 1);
    // The password still works.
    let login = o.login("linked@example.com", PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(login.body["user"]["id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_identity_adds_a_provider_to_the_signed_in_user_and_unlink_takes_it_away() {
    let o = oauth_server(|_| {}).await;
    let alice = o.signup_password("alice@example.com").await;
    let (alice_at, alice_id) = (s(&alice["access_token"]), alice["user"]["id"].clone());
    // A GitHub account under another e-mail: linked by the session, not by e-mail.
    o.fake
        .set_user("5001", "alice.gh@example.com", true, "Alice GH");

    let r = o
        .call(
            Method::GET,
            "/user/identities/authorize?provider=github&skip_http_redirect=true",
            None,
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (401, Some("no_authorization")),
        "{}",
        r.body
    );
    let req = o.link_url(&alice_at, "github").await;
    assert!(req.url.as_str().starts_with(&o.fake.url), "{}", req.url);
    let l = o.finish(&req).await;
    assert!(l.get("error").is_none(), "{}", l.location);
    assert_eq!(claims_of(&l.access_token())["sub"], alice_id);
    let me = o.user(&alice_at).await;
    assert_eq!(providers(&me.body), ["email", "github"]);
    assert_eq!(identity(&me.body, "github")["id"], "5001");
    assert_eq!(me.body["email"], "alice@example.com");
    // Without skip_http_redirect: a redirect to the provider.
    let resp =
        o.nr.get(format!(
            "{}/auth/v1/user/identities/authorize?provider={OIDC}",
            o.s.url
        ))
        .header("apikey", &o.pk)
        .header("authorization", format!("Bearer {alice_at}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert!(
        location(&resp).starts_with(&format!("{}/authorize?", o.fake.url)),
        "{}",
        location(&resp)
    );

    // The same GitHub account cannot be linked to a second user.
    let bob = o.signup_password("bob@example.com").await;
    let bob_at = s(&bob["access_token"]);
    let req = o.link_url(&bob_at, "github").await;
    let l = o.finish(&req).await;
    l.assert_failed("identity_already_exists");
    assert_eq!(providers(&o.user(&bob_at).await.body), ["email"]);

    // Unlinking.
    let gh = s(&identity(&me.body, "github")["identity_id"]);
    let email_identity = s(&identity(&me.body, "email")["identity_id"]);
    let unknown = o
        .call(
            Method::DELETE,
            &format!("/user/identities/{}", uuid::Uuid::new_v4()),
            None,
            Some(&alice_at),
        )
        .await;
    assert_eq!(unknown.status, 422, "{}", unknown.body);
    assert_eq!(
        unknown.code(),
        Some("identity_not_found"),
        "{}",
        unknown.body
    );
    // Bob, with two identities of his own, cannot unlink one of Alice's.
    o.fake
        .set_user("bob-oidc", "bob.oidc@example.com", true, "Bob OIDC");
    let req = o.link_url(&bob_at, OIDC).await;
    let l = o.finish(&req).await;
    assert!(l.get("error").is_none(), "{}", l.location);
    assert_eq!(providers(&o.user(&bob_at).await.body), [OIDC, "email"]);
    let theirs = o
        .call(
            Method::DELETE,
            &format!("/user/identities/{gh}"),
            None,
            Some(&bob_at),
        )
        .await;
    assert_eq!(
        (theirs.status, theirs.code()),
        (422, Some("identity_not_found")),
        "{}",
        theirs.body
    );
    let r = o
        .call(
            Method::DELETE,
            &format!("/user/identities/{gh}"),
            None,
            Some(&alice_at),
        )
        .await;
    assert_eq!((r.status, &r.body), (200, &json!({})));
    let me = o.user(&alice_at).await;
    assert_eq!(providers(&me.body), ["email"]);
    assert_eq!(me.body["app_metadata"]["providers"], json!(["email"]));
    let last = o
        .call(
            Method::DELETE,
            &format!("/user/identities/{email_identity}"),
            None,
            Some(&alice_at),
        )
        .await;
    assert_eq!(
        (last.status, last.code()),
        (422, Some("single_identity_not_deletable")),
        "{}",
        last.body
    );
    // Unlinked, Alice's GitHub account can go to Bob now.
    o.fake
        .set_user("5001", "alice.gh@example.com", true, "Alice GH");
    let req = o.link_url(&bob_at, "github").await;
    let l = o.finish(&req).await;
    assert!(l.get("error").is_none(), "{}", l.location);
    let bob_now = o.user(&bob_at).await;
    assert_eq!(providers(&bob_now.body), [OIDC, "email", "github"]);
    assert_eq!(identity(&bob_now.body, "github")["id"], "5001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_refuses_unknown_and_disabled_providers_and_settings_list_the_enabled_ones() {
    let o = oauth_server(|c| {
        c.auth.external.insert(
            "off".into(),
            ExternalProvider {
                enabled: false,
                client_id: "x".into(),
                secret: "y".into(),
                issuer: Some("http://127.0.0.1:9".into()),
                ..Default::default()
            },
        );
        c.auth.manual_linking = false;
    })
    .await;
    for p in ["nope", "off"] {
        let resp =
            o.nr.get(format!("{}/auth/v1/authorize?provider={p}", o.s.url))
                .send()
                .await
                .unwrap();
        assert_eq!(resp.status(), 400, "{p}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 400, "{p}: {body}");
        assert_eq!(body["error_code"], "validation_failed", "{p}: {body}");
        assert!(
            body["msg"]
                .as_str()
                .unwrap_or("")
                .starts_with("Unsupported provider"),
            "{p}: {body}"
        );
    }
    let (status, settings) = o.s.get("/auth/v1/settings", Some(&o.pk), None).await;
    assert_eq!(status, 200);
    assert_eq!(settings["external"]["github"], true, "{settings}");
    assert_eq!(settings["external"]["anonymous_users"], true, "{settings}");
    assert_ne!(settings["external"]["off"], true, "{settings}");
    // Manual linking off: linkIdentity is refused.
    let session = o.signup_password("nolink@example.com").await;
    let r = o
        .call(
            Method::GET,
            "/user/identities/authorize?provider=github&skip_http_redirect=true",
            None,
            Some(&s(&session["access_token"])),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (404, Some("manual_linking_disabled")),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sign_in_gives_a_session_marked_anonymous() {
    let o = oauth_server(|_| {}).await;
    let r = o.post("/signup", json!({"data": {"nick": "guest"}})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let user = &r.body["user"];
    assert_eq!(user["is_anonymous"], true);
    assert_eq!(user["user_metadata"]["nick"], "guest");
    assert_eq!(user["identities"], json!([]));
    let access = s(&r.body["access_token"]);
    let claims = claims_of(&access);
    assert_eq!(claims["is_anonymous"], true);
    assert_eq!(claims["role"], "authenticated");
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(claims["amr"][0]["method"], "anonymous");
    let me = o.user(&access).await;
    assert_eq!((me.status, &me.body["is_anonymous"]), (200, &json!(true)));
    // Refreshing keeps it anonymous.
    let refreshed = o
        .post(
            "/token?grant_type=refresh_token",
            json!({"refresh_token": r.body["refresh_token"]}),
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(
        claims_of(&s(&refreshed.body["access_token"]))["is_anonymous"],
        true
    );
    // Each call is a new guest.
    let other = o.anonymous().await;
    assert_ne!(other["user"]["id"], user["id"]);
    assert_eq!(
        o.count("SELECT count(*) FROM auth.users WHERE is_anonymous")
            .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sign_ins_are_off_unless_turned_on() {
    // `serve`'s default: not set.
    let o = oauth_server(|c| c.auth.anonymous_sign_ins = None).await;
    let r = o.post("/signup", json!({})).await;
    assert_eq!(
        (r.status, r.code()),
        (422, Some("anonymous_provider_disabled")),
        "{}",
        r.body
    );
    assert!(r.body.get("access_token").is_none());
    assert_eq!(o.count("SELECT count(*) FROM auth.users").await, 0);
    let (_, settings) = o.s.get("/auth/v1/settings", Some(&o.pk), None).await;
    assert_eq!(settings["external"]["anonymous_users"], false, "{settings}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_user_becomes_permanent_with_an_email_and_password() {
    let o = oauth_server(|_| {}).await;
    let anon = o.anonymous().await;
    let (access, id) = (s(&anon["access_token"]), anon["user"]["id"].clone());
    let r = o
        .call(
            Method::PUT,
            "/user",
            Some(json!({"email": "kept@example.com", "password": PASSWORD})),
            Some(&access),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], id);
    assert_eq!(r.body["email"], "kept@example.com");
    assert_eq!(r.body["is_anonymous"], false);
    let login = o.login("kept@example.com", PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(login.body["user"]["id"], id);
    assert_eq!(login.body["user"]["is_anonymous"], false);
    assert_eq!(
        claims_of(&s(&login.body["access_token"]))["is_anonymous"],
        false
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_user_becomes_permanent_by_linking_github() {
    let o = oauth_server(|_| {}).await;
    let anon = o.anonymous().await;
    let (access, id) = (s(&anon["access_token"]), anon["user"]["id"].clone());
    o.fake
        .set_user("909", "guest.gh@example.com", true, "Guest");
    let req = o.link_url(&access, "github").await;
    let l = o.finish(&req).await;
    assert!(l.get("error").is_none(), "{}", l.location);
    let fresh = l.access_token();
    let claims = claims_of(&fresh);
    assert_eq!(claims["sub"], id);
    assert_eq!(claims["is_anonymous"], false);
    let me = o.user(&fresh).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.body["is_anonymous"], false);
    assert_eq!(me.body["email"], "guest.gh@example.com");
    assert_eq!(providers(&me.body), ["github"]);
    assert_eq!(o.count("SELECT count(*) FROM auth.users").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_removes_anonymous_users_past_their_age_only() {
    let o = oauth_server(|_| {}).await;
    let old_guest = o.anonymous().await;
    let fresh_guest = o.anonymous().await;
    let old_member = o.signup_password("old@example.com").await;
    let id = |v: &Value| uuid::Uuid::parse_str(&s(&v["user"]["id"])).unwrap();
    let (old_guest_id, fresh_guest_id, old_member_id) =
        (id(&old_guest), id(&fresh_guest), id(&old_member));
    let owner = o.db.owner().await;
    owner
        .execute(
            "UPDATE auth.users SET created_at = now() - interval '31 days' WHERE id = ANY($1)",
            &[&vec![old_guest_id, old_member_id]],
        )
        .await
        .unwrap();
    wasmbase::api::auth::sweep_once(&o.s.srv.state)
        .await
        .unwrap();
    let left: Vec<uuid::Uuid> = owner
        .query("SELECT id FROM auth.users", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!left.contains(&old_guest_id), "the old guest is gone");
    assert!(left.contains(&fresh_guest_id), "a recent guest stays");
    assert!(left.contains(&old_member_id), "an old permanent user stays");
    let r = o.user(&s(&old_guest["access_token"])).await;
    assert_eq!(
        (r.status, r.code()),
        (403, Some("user_not_found")),
        "a swept guest's token no longer works: {}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sign_ins_are_limited_per_client_ip() {
    // Every other test server runs with the default limit (30 an hour) on; a
    // low one here shows it bite.
    let o = oauth_server(|c| {
        c.auth.rate_limit_anonymous_per_hour = 2;
        c.server.trust_forwarded_for = true;
    })
    .await;
    let from = |ip: &'static str| {
        o.s.http
            .post(format!("{}/auth/v1/signup", o.s.url))
            .header("apikey", &o.pk)
            .header("x-supabase-api-version", "2024-01-01")
            .header("x-forwarded-for", ip)
            .json(&json!({}))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(from("203.0.113.7").await.unwrap().status(), 200);
    }
    let limited = from("203.0.113.7").await.unwrap();
    assert_eq!(limited.status(), 429);
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["code"], "over_request_rate_limit", "{body}");
    assert_eq!(o.count("SELECT count(*) FROM auth.users").await, 2);
    // Another client is not affected, nor are password sign-ups from the first.
    assert_eq!(from("203.0.113.8").await.unwrap().status(), 200);
    let r =
        o.s.http
            .post(format!("{}/auth/v1/signup", o.s.url))
            .header("apikey", &o.pk)
            .header("x-forwarded-for", "203.0.113.7")
            .json(&json!({"email": "real@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
}

/// A PKCE link is joined at the code exchange, by the browser holding the
/// verifier: a link URL that ends up in someone else's browser (whose app has
/// no verifier) attaches nothing to the account that started it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pkce_link_joins_only_when_its_starter_exchanges_the_code() {
    let o = oauth_server(|_| {}).await;
    let alice = o.signup_password("alice@example.com").await;
    let (alice_at, alice_id) = (s(&alice["access_token"]), alice["user"]["id"].clone());
    o.fake
        .set_user("7001", "someone.gh@example.com", true, "Someone");
    let (verifier, challenge) = pkce();
    let to: String = url::form_urlencoded::byte_serialize(APP.as_bytes()).collect();
    let r = o
        .call(
            Method::GET,
            &format!(
                "/user/identities/authorize?provider=github&redirect_to={to}\
                 &skip_http_redirect=true&code_challenge={challenge}&code_challenge_method=s256"
            ),
            None,
            Some(&alice_at),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let req = AuthorizeRequest::parse(r.body["url"].as_str().expect("{url}"));
    let l = o.finish(&req).await;
    let code = l
        .get("code")
        .expect("a PKCE link lands with ?code=")
        .to_string();
    assert!(l.get("access_token").is_none(), "{}", l.location);
    assert_eq!(
        providers(&o.user(&alice_at).await.body),
        ["email"],
        "nothing is linked before the exchange"
    );
    let (wrong, _) = pkce();
    let bad = o.exchange(&code, &wrong).await;
    assert_eq!(
        (bad.status, bad.code()),
        (400, Some("bad_code_verifier")),
        "{}",
        bad.body
    );
    assert_eq!(providers(&o.user(&alice_at).await.body), ["email"]);
    let ok = o.exchange(&code, &verifier).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["user"]["id"], alice_id);
    assert_eq!(providers(&ok.body["user"]), ["email", "github"]);
    assert_eq!(identity(&ok.body["user"], "github")["id"], "7001");
}

/// Pre-account hijacking: someone signs up with an address they do not own and
/// never confirms it; when the owner signs in with a provider that verified the
/// address, they get that account, and nothing the squatter set up survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_provider_email_takes_over_an_unconfirmed_account_without_its_password() {
    let o = oauth_server(|c| c.auth.autoconfirm = Some(false)).await;
    let squat = o
        .post(
            "/signup",
            json!({"email": "owner@example.com", "password": "squatter-password-1"}),
        )
        .await;
    assert_eq!(squat.status, 200, "{}", squat.body);
    assert!(
        squat.body.get("access_token").is_none(),
        "not confirmed yet"
    );
    let squat_id = squat.body["id"].clone();
    o.fake.set_user("8001", "owner@example.com", true, "Owner");
    let l = o.sign_in("github").await;
    assert!(l.has_session(), "{}", l.location);
    assert_eq!(claims_of(&l.access_token())["sub"], squat_id);
    let me = o.user(&l.access_token()).await;
    assert_eq!(providers(&me.body), ["github"]);
    assert_eq!(me.body["app_metadata"]["provider"], "github");
    assert!(me.body["email_confirmed_at"].is_string(), "{}", me.body);
    let login = o
        .post(
            "/token?grant_type=password",
            json!({"email": "owner@example.com", "password": "squatter-password-1"}),
        )
        .await;
    assert_eq!(
        (login.status, login.code()),
        (400, Some("invalid_credentials")),
        "the squatter's password is gone: {}",
        login.body
    );
}

/// A state older than 10 minutes is refused (the row is backdated: no
/// waiting), and no session comes of it; a provider that answers with a form
/// POST (`response_mode=form_post`) is heard as a GET callback is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_state_is_refused_and_a_form_post_callback_signs_in() {
    let o = oauth_server(|_| {}).await;
    o.fake.set_user("9001", "late@example.com", true, "Late");
    let req = o.authorize("github", APP, None).await;
    o.db.owner()
        .await
        .execute(
            "UPDATE auth.oauth_flows SET created_at = now() - interval '11 minutes'",
            &[],
        )
        .await
        .unwrap();
    let l = o.finish(&req).await;
    l.assert_failed("bad_oauth_state");
    assert_eq!(
        l.get("error_description"),
        Some("OAuth state has expired"),
        "{}",
        l.location
    );
    assert_eq!(o.sessions().await, 0);

    let req = o.authorize("github", APP, None).await;
    let code = o.fake.code_for_request(&req);
    let resp =
        o.nr.post(format!("{}/auth/v1/callback", o.s.url))
            .form(&[("code", code.as_str()), ("state", req.state.as_str())])
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 302);
    let to = location(&resp);
    assert!(to.starts_with(APP) && to.contains("#access_token="), "{to}");
    assert_eq!(o.sessions().await, 1);
}
