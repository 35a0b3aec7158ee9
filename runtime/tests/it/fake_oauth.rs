//! A fake OAuth 2 / OpenID Connect provider for the OAuth tests, on 127.0.0.1:0
//! with real HTTP and real RS256 signatures (ring, keys from
//! `tests/fixtures/oauth/`). One server plays both kinds of provider:
//!
//! - GitHub: `GET /login/oauth/authorize`, `POST /login/oauth/access_token`
//!   (GitHub's quirks kept: errors come back as 200 with `{"error": ..}`, JSON only
//!   with `Accept: application/json`), `GET /user` and `GET /user/emails` (a
//!   `User-Agent` is required, as GitHub's API requires one). Config `url` =
//!   `api_url` = [`FakeProvider::url`].
//! - OpenID Connect: `GET /.well-known/openid-configuration` (issuer =
//!   [`FakeProvider::url`]), `GET /authorize`, `POST /token` (an id_token signed
//!   with the current key), `GET /userinfo`, `GET /jwks`.
//!
//! Honest where it matters: codes are single use and bound to the nonce, PKCE
//! challenge and redirect_uri of their authorize request; client credentials are
//! checked (form or HTTP Basic); access tokens are only good for the user they
//! were issued for. Tests drive it through [`FakeProvider`]: the next user, codes
//! for an authorize redirect the test read, id_tokens with any claims or key, key
//! rotation, and a provider that is down, answers garbage or hangs.

#![allow(dead_code)]

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmbase::config::ExternalProvider;

/// The client id the fake knows.
pub const CLIENT_ID: &str = "fake-client-id";
/// Its client secret.
pub const SECRET: &str = "fake-client-secret";
/// A second accepted audience for ID-token sign-in (an app's mobile client id),
/// listed in [`FakeProvider::oidc`]'s `additional_client_ids`.
pub const MOBILE_CLIENT_ID: &str = "fake-ios-client-id";

/// How the provider's server-facing endpoints (token, user, userinfo, JWKS,
/// discovery) answer. The authorize pages (browser-facing) always work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Normal answers.
    Up,
    /// 500 on everything.
    Down,
    /// 200, `Content-Type: application/json`, and a body that is not JSON.
    Garbage,
    /// Hangs (far longer than any sane client timeout), then 504.
    Slow,
}

/// The account the provider signs in next.
#[derive(Clone, Debug)]
pub struct FakeUser {
    /// OIDC `sub`; GitHub `id` (a number when it parses as one).
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
}

/// The provider's authorize URL as our `/authorize` redirected to it.
#[derive(Clone, Debug)]
pub struct AuthorizeRequest {
    /// The whole URL.
    pub url: url::Url,
    /// Its query parameters.
    pub params: HashMap<String, String>,
    pub state: String,
    pub redirect_uri: String,
    pub client_id: String,
    /// Our server's own PKCE challenge towards the provider.
    pub code_challenge: Option<String>,
    /// OIDC nonce.
    pub nonce: Option<String>,
}

impl AuthorizeRequest {
    /// Parses a `Location` (or a `{url}` from linkIdentity).
    pub fn parse(location: &str) -> AuthorizeRequest {
        let url =
            url::Url::parse(location).unwrap_or_else(|e| panic!("authorize URL {location:?}: {e}"));
        let params: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let state = params
            .get("state")
            .cloned()
            .unwrap_or_else(|| panic!("no state in {location}"));
        let redirect_uri = params
            .get("redirect_uri")
            .cloned()
            .unwrap_or_else(|| panic!("no redirect_uri in {location}"));
        let client_id = params.get("client_id").cloned().unwrap_or_default();
        let code_challenge = params.get("code_challenge").cloned();
        let nonce = params.get("nonce").cloned();
        AuthorizeRequest {
            url,
            params,
            state,
            redirect_uri,
            client_id,
            code_challenge,
            nonce,
        }
    }

    /// One query parameter.
    pub fn param(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }

    /// Whether it is the OIDC authorize endpoint (else GitHub's).
    pub fn is_oidc(&self) -> bool {
        self.url.path() == "/authorize"
    }
}

/// base64url without padding (JWT segments, JWKS numbers, PKCE challenges).
pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The S256 PKCE challenge of `verifier`.
pub fn s256(verifier: &str) -> String {
    b64url(Sha256::digest(verifier.as_bytes()))
}

/// Lower-case hex SHA-256: what an id_token carries for a hashed nonce.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A JWT with `alg: none` and no signature.
pub fn unsigned_token(claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT"});
    format!(
        "{}.{}.",
        b64url(header.to_string()),
        b64url(claims.to_string())
    )
}

struct Key {
    kid: &'static str,
    pair: RsaKeyPair,
    /// JWKS `n` and `e`: big-endian, no leading zeros, base64url.
    n: String,
    e: String,
}

fn load_key(file: &str, kid: &'static str) -> Key {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/oauth")
        .join(file);
    let der = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    // A PKCS#1 RSAPrivateKey (DER), 2048 bits.
    let pair = RsaKeyPair::from_der(&der)
        .unwrap_or_else(|e| panic!("{}: not an RSA private key: {e}", path.display()));
    let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
    Key {
        kid,
        n: b64url(&public.n),
        e: b64url(&public.e),
        pair,
    }
}

/// RS256 over `header.claims` with `key`, the header naming `kid`.
fn sign(key: &Key, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        b64url(header.to_string()),
        b64url(claims.to_string())
    );
    let mut sig = vec![0u8; key.pair.public().modulus_len()];
    key.pair
        .sign(
            &RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .expect("RS256 signing");
    format!("{input}.{}", b64url(&sig))
}

#[derive(Clone)]
struct Grant {
    user: FakeUser,
    nonce: Option<String>,
    challenge: Option<String>,
    redirect_uri: Option<String>,
    used: bool,
}

struct Book {
    user: FakeUser,
    codes: HashMap<String, Grant>,
    /// Access token → the user it was issued for.
    tokens: HashMap<String, FakeUser>,
    /// Index of the signing key.
    current: usize,
    /// Indexes of the keys in the JWKS.
    published: Vec<usize>,
    mode: Mode,
}

struct Shared {
    url: String,
    keys: Vec<Key>,
    book: Mutex<Book>,
    jwks_fetches: AtomicUsize,
    token_requests: AtomicUsize,
    slow_hits: AtomicUsize,
}

impl Shared {
    fn issue(
        &self,
        nonce: Option<String>,
        challenge: Option<String>,
        redirect_uri: Option<String>,
    ) -> String {
        let code = format!("fake-code-{}", uuid::Uuid::new_v4().simple());
        let mut b = self.book.lock().unwrap();
        let user = b.user.clone();
        b.codes.insert(
            code.clone(),
            Grant {
                user,
                nonce,
                challenge,
                redirect_uri,
                used: false,
            },
        );
        code
    }

    fn claims_for(&self, u: &FakeUser, nonce: Option<&str>) -> Value {
        let now = crate::harness::now();
        let mut c = json!({
            "iss": self.url,
            "aud": CLIENT_ID,
            "sub": u.sub,
            "email": u.email,
            "email_verified": u.email_verified,
            "name": u.name,
            "picture": format!("{}/avatars/{}", self.url, u.sub),
            "iat": now,
            "exp": now + 600,
        });
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        c
    }

    fn sign_with(&self, index: usize, kid: Option<&str>, claims: &Value) -> String {
        let key = &self.keys[index];
        sign(key, kid.unwrap_or(key.kid), claims)
    }

    fn current(&self) -> usize {
        self.book.lock().unwrap().current
    }

    /// The user of a `Bearer` (or GitHub's `token`) access token.
    fn bearer_user(&self, headers: &HeaderMap) -> Option<FakeUser> {
        let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let t = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .or_else(|| v.strip_prefix("token "))?;
        self.book.lock().unwrap().tokens.get(t.trim()).cloned()
    }
}

/// A running fake provider.
pub struct FakeProvider {
    /// Base URL (`http://127.0.0.1:port`, no trailing slash): GitHub's `url` and
    /// `api_url`, and the OIDC issuer.
    pub url: String,
    shared: Arc<Shared>,
}

impl FakeProvider {
    /// Starts it on a free port; the current user is octocat (verified e-mail).
    pub async fn start() -> FakeProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            url: url.clone(),
            keys: vec![
                load_key("key1.rsa.der", "key1"),
                load_key("key2.rsa.der", "key2"),
            ],
            book: Mutex::new(Book {
                user: FakeUser {
                    sub: "12345".into(),
                    email: "octocat@example.com".into(),
                    email_verified: true,
                    name: "Octo Cat".into(),
                },
                codes: HashMap::new(),
                tokens: HashMap::new(),
                current: 0,
                published: vec![0],
                mode: Mode::Up,
            }),
            jwks_fetches: AtomicUsize::new(0),
            token_requests: AtomicUsize::new(0),
            slow_hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/login/oauth/authorize", get(authorize_github))
            .route("/login/oauth/access_token", post(github_token))
            .route("/user", get(github_user))
            .route("/user/emails", get(github_emails))
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize_oidc))
            .route("/token", post(oidc_token))
            .route("/userinfo", get(userinfo))
            .route("/jwks", get(jwks))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeProvider { url, shared }
    }

    /// `[auth.external.github]` pointing at this fake.
    pub fn github(&self) -> ExternalProvider {
        ExternalProvider {
            enabled: true,
            client_id: CLIENT_ID.into(),
            secret: SECRET.into(),
            url: Some(self.url.clone()),
            api_url: Some(self.url.clone()),
            ..Default::default()
        }
    }

    /// A generic OIDC provider with this fake as issuer.
    pub fn oidc(&self) -> ExternalProvider {
        ExternalProvider {
            enabled: true,
            client_id: CLIENT_ID.into(),
            secret: SECRET.into(),
            issuer: Some(self.url.clone()),
            additional_client_ids: vec![MOBILE_CLIENT_ID.into()],
            ..Default::default()
        }
    }

    /// The account signed in by codes issued from now on.
    pub fn set_user(&self, sub: &str, email: &str, email_verified: bool, name: &str) {
        self.shared.book.lock().unwrap().user = FakeUser {
            sub: sub.into(),
            email: email.into(),
            email_verified,
            name: name.into(),
        };
    }

    /// The current account.
    pub fn user(&self) -> FakeUser {
        self.shared.book.lock().unwrap().user.clone()
    }

    /// A code for the current user, as the consent page would give: the
    /// id_token of its exchange carries `nonce`, and its exchange needs the
    /// verifier of `code_challenge` (S256) when one is given. Not bound to a
    /// redirect_uri.
    pub fn code_for(&self, nonce: Option<String>, code_challenge: Option<String>) -> String {
        self.shared.issue(nonce, code_challenge, None)
    }

    /// A code for `req` (what the consent page would answer to it): checked as
    /// the authorize endpoint checks it, and bound to its nonce, PKCE challenge
    /// and redirect_uri.
    pub fn code_for_request(&self, req: &AuthorizeRequest) -> String {
        assert!(
            req.url.as_str().starts_with(&self.url),
            "authorize URL {} is not this provider's ({})",
            req.url,
            self.url
        );
        if let Err(e) = check_authorize(&req.params, req.is_oidc()) {
            panic!("the provider would refuse {}: {e}", req.url);
        }
        self.shared.issue(
            req.nonce.clone(),
            req.code_challenge.clone(),
            Some(req.redirect_uri.clone()),
        )
    }

    /// Standard id_token claims for the current user: iss, aud (the client
    /// id), sub, email, email_verified, name, picture, iat, exp (+10 min), and
    /// `nonce` when given (as is: hash it first for ID-token sign-in).
    pub fn claims(&self, nonce: Option<&str>) -> Value {
        let u = self.user();
        self.shared.claims_for(&u, nonce)
    }

    /// `claims` signed with the current key (its kid in the header).
    pub fn id_token(&self, claims: Value) -> String {
        self.shared.sign_with(self.shared.current(), None, &claims)
    }

    /// `claims` signed with key `key_index` (0 = key1, 1 = key2), its own kid
    /// in the header, whether that key is published or not.
    pub fn id_token_with(&self, key_index: usize, claims: Value) -> String {
        self.shared.sign_with(key_index, None, &claims)
    }

    /// `claims` signed with key `key_index` but naming `kid` in the header (a
    /// signature that does not belong to the key it claims).
    pub fn id_token_forged(&self, kid: &str, key_index: usize, claims: Value) -> String {
        self.shared.sign_with(key_index, Some(kid), &claims)
    }

    /// Key rotation: key2 signs from now on; the JWKS lists key1 and key2
    /// (`keep_old`) or key2 alone.
    pub fn rotate(&self, keep_old: bool) {
        let mut b = self.shared.book.lock().unwrap();
        b.current = 1;
        b.published = if keep_old { vec![0, 1] } else { vec![1] };
    }

    /// Sets how the server-facing endpoints answer.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.book.lock().unwrap().mode = mode;
    }

    /// GET /jwks requests so far.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Requests to either token endpoint so far (whatever the [`Mode`]).
    pub fn token_requests(&self) -> usize {
        self.shared.token_requests.load(Ordering::SeqCst)
    }

    /// Requests that arrived while [`Mode::Slow`] (and hang).
    pub fn slow_hits(&self) -> usize {
        self.shared.slow_hits.load(Ordering::SeqCst)
    }

    /// Whether `access_token` was issued by this provider.
    pub fn issued(&self, access_token: &str) -> bool {
        self.shared
            .book
            .lock()
            .unwrap()
            .tokens
            .contains_key(access_token)
    }
}

/// What the authorize endpoints refuse.
fn check_authorize(q: &HashMap<String, String>, oidc: bool) -> Result<(), String> {
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if get("client_id") != Some(CLIENT_ID) {
        return Err(format!("unknown client_id {:?}", get("client_id")));
    }
    let uri = get("redirect_uri").ok_or("redirect_uri missing")?;
    url::Url::parse(uri).map_err(|e| format!("redirect_uri {uri}: {e}"))?;
    get("state").ok_or("state missing")?;
    if oidc {
        if get("response_type") != Some("code") {
            return Err(format!(
                "response_type {:?}, not code",
                get("response_type")
            ));
        }
        if !get("scope").unwrap_or("").split(' ').any(|s| s == "openid") {
            return Err(format!("scope {:?} lacks openid", get("scope")));
        }
    }
    if get("code_challenge").is_some() && get("code_challenge_method") != Some("S256") {
        return Err(format!(
            "code_challenge_method {:?}, not S256",
            get("code_challenge_method")
        ));
    }
    Ok(())
}

/// What the server-facing endpoints answer instead, per [`Mode`].
async fn gate(s: &Shared) -> Option<Response> {
    let mode = s.book.lock().unwrap().mode;
    match mode {
        Mode::Up => None,
        Mode::Down => Some((StatusCode::INTERNAL_SERVER_ERROR, "provider is down").into_response()),
        Mode::Garbage => Some(
            (
                [(header::CONTENT_TYPE, "application/json")],
                "<html><body>this is not JSON</body></html>",
            )
                .into_response(),
        ),
        Mode::Slow => {
            s.slow_hits.fetch_add(1, Ordering::SeqCst);
            // The provider hangs; the test waits on the server's answer, not on this.
            tokio::time::sleep(Duration::from_secs(600)).await;
            Some((StatusCode::GATEWAY_TIMEOUT, "too late").into_response())
        }
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn parse_form(body: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

async fn authorize_github(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    authorize(&s, &q, false)
}

async fn authorize_oidc(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    authorize(&s, &q, true)
}

/// The consent page, approved at once: 302 to `redirect_uri?code=..&state=..`.
fn authorize(s: &Shared, q: &HashMap<String, String>, oidc: bool) -> Response {
    if let Err(e) = check_authorize(q, oidc) {
        return (StatusCode::BAD_REQUEST, e).into_response();
    }
    let redirect_uri = q["redirect_uri"].clone();
    let code = s.issue(
        q.get("nonce").cloned(),
        q.get("code_challenge").cloned(),
        Some(redirect_uri.clone()),
    );
    let mut to = match url::Url::parse(&redirect_uri) {
        Ok(u) => u,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q["state"]);
    (StatusCode::FOUND, [(header::LOCATION, to.to_string())]).into_response()
}

enum TokenError {
    /// Client id / secret wrong or missing.
    Client,
    /// Code unknown, used, or not matching redirect_uri / PKCE verifier.
    Grant(String),
    /// Malformed request.
    Request(String),
}

/// Client id and secret from HTTP Basic or the form.
fn client_auth(headers: &HeaderMap, form: &HashMap<String, String>) -> Option<(String, String)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (id, secret) = raw.split_once(':')?;
        return Some((id.to_string(), secret.to_string()));
    }
    Some((
        form.get("client_id")?.clone(),
        form.get("client_secret")?.clone(),
    ))
}

/// Redeems a code (single use whatever follows) for an access token.
fn exchange(
    s: &Shared,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(String, Grant), TokenError> {
    match client_auth(headers, form) {
        Some((id, secret)) if id == CLIENT_ID && secret == SECRET => {}
        _ => return Err(TokenError::Client),
    }
    let Some(code) = form.get("code") else {
        return Err(TokenError::Request("code missing".into()));
    };
    let mut b = s.book.lock().unwrap();
    let Some(grant) = b.codes.get_mut(code) else {
        return Err(TokenError::Grant("unknown code".into()));
    };
    if grant.used {
        return Err(TokenError::Grant("code already used".into()));
    }
    grant.used = true;
    if let Some(uri) = &grant.redirect_uri {
        if form.get("redirect_uri") != Some(uri) {
            return Err(TokenError::Grant(format!(
                "redirect_uri {:?} is not {uri:?}",
                form.get("redirect_uri")
            )));
        }
    }
    if let Some(challenge) = &grant.challenge {
        match form.get("code_verifier") {
            Some(v) if s256(v) == *challenge => {}
            _ => return Err(TokenError::Grant("PKCE verifier does not match".into())),
        }
    }
    let grant = grant.clone();
    let token = format!("fake-at-{}", uuid::Uuid::new_v4().simple());
    b.tokens.insert(token.clone(), grant.user.clone());
    Ok((token, grant))
}

/// GitHub's token endpoint: 200 either way, JSON only when asked for.
async fn github_token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    s.token_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = gate(&s).await {
        return r;
    }
    let form = parse_form(&body);
    let answer: Vec<(&str, String)> = match exchange(&s, &headers, &form) {
        Ok((token, _)) => vec![
            ("access_token", token),
            ("token_type", "bearer".into()),
            ("scope", "read:user,user:email".into()),
        ],
        Err(e) => {
            let (error, description) = match e {
                TokenError::Client => (
                    "incorrect_client_credentials",
                    "The client_id and/or client_secret passed are incorrect.".to_string(),
                ),
                TokenError::Grant(d) | TokenError::Request(d) => ("bad_verification_code", d),
            };
            vec![
                ("error", error.to_string()),
                ("error_description", description),
            ]
        }
    };
    let json_wanted = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if json_wanted {
        let obj: serde_json::Map<String, Value> = answer
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect();
        Json(Value::Object(obj)).into_response()
    } else {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(answer)
            .finish();
        (
            [(header::CONTENT_TYPE, "application/x-www-form-urlencoded")],
            body,
        )
            .into_response()
    }
}

/// GitHub refuses API requests without a User-Agent.
fn github_api_user(s: &Shared, headers: &HeaderMap) -> Result<FakeUser, Box<Response>> {
    if headers.get(header::USER_AGENT).is_none() {
        return Err(Box::new((
            StatusCode::FORBIDDEN,
            Json(json!({"message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header"})),
        )
            .into_response()));
    }
    s.bearer_user(headers).ok_or_else(|| {
        Box::new(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "Bad credentials"})),
            )
                .into_response(),
        )
    })
}

async fn github_user(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&s).await {
        return r;
    }
    let u = match github_api_user(&s, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let id: Value = u
        .sub
        .parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(u.sub.clone()));
    Json(json!({
        "id": id,
        "login": u.name.to_lowercase().replace(' ', "-"),
        "name": u.name,
        "avatar_url": format!("{}/avatars/{}", s.url, u.sub),
        "email": u.email,
    }))
    .into_response()
}

async fn github_emails(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&s).await {
        return r;
    }
    match github_api_user(&s, &headers) {
        Ok(u) => Json(json!([{
            "email": u.email,
            "primary": true,
            "verified": u.email_verified,
            "visibility": "public",
        }]))
        .into_response(),
        Err(r) => *r,
    }
}

async fn discovery(State(s): State<Arc<Shared>>) -> Response {
    if let Some(r) = gate(&s).await {
        return r;
    }
    let u = &s.url;
    Json(json!({
        "issuer": u,
        "authorization_endpoint": format!("{u}/authorize"),
        "token_endpoint": format!("{u}/token"),
        "userinfo_endpoint": format!("{u}/userinfo"),
        "jwks_uri": format!("{u}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "email", "email_verified", "name", "picture"],
    }))
    .into_response()
}

async fn oidc_token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    s.token_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = gate(&s).await {
        return r;
    }
    let form = parse_form(&body);
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code is supported",
        );
    }
    match exchange(&s, &headers, &form) {
        Ok((token, grant)) => {
            let claims = s.claims_for(&grant.user, grant.nonce.as_deref());
            let id_token = s.sign_with(s.current(), None, &claims);
            Json(json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": format!("fake-rt-{}", uuid::Uuid::new_v4().simple()),
                "scope": "openid email profile",
                "id_token": id_token,
            }))
            .into_response()
        }
        Err(TokenError::Client) => oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        ),
        Err(TokenError::Grant(d)) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &d),
        Err(TokenError::Request(d)) => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &d),
    }
}

async fn userinfo(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&s).await {
        return r;
    }
    match s.bearer_user(&headers) {
        Some(u) => Json(json!({
            "sub": u.sub,
            "email": u.email,
            "email_verified": u.email_verified,
            "name": u.name,
            "picture": format!("{}/avatars/{}", s.url, u.sub),
        }))
        .into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
            Json(json!({"error": "invalid_token"})),
        )
            .into_response(),
    }
}

async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = gate(&s).await {
        return r;
    }
    let published = s.book.lock().unwrap().published.clone();
    let keys: Vec<Value> = published
        .iter()
        .map(|&i| {
            let k = &s.keys[i];
            json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": k.kid, "n": k.n, "e": k.e})
        })
        .collect();
    Json(json!({ "keys": keys })).into_response()
}
