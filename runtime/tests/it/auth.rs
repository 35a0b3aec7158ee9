//! The auth API's rules against real PostgreSQL: refresh rotation, the reuse
//! window and family revocation, session checks after logout, PKCE, the redirect
//! allowlist, confirmation and enumeration protection, rate limits, error shapes.

use crate::harness::*;
use serde_json::{json, Value};
use wasmbase_host_api::keys::KeyKind;

/// A test server plus its publishable and secret keys.
struct Auth {
    s: TestServer,
    pk: String,
    sk: String,
    db: TestDb,
}

async fn auth_server(tweak: impl FnOnce(&mut wasmbase::config::Config)) -> Auth {
    let db = TestDb::new().await;
    let (_, pk) = db.key(KeyKind::Publishable).await;
    let (_, sk) = db.key(KeyKind::Secret).await;
    let s = db
        .server_with(|c| {
            c.auth.autoconfirm = Some(true);
            // email_min_interval_secs keeps its default (60): tests that mail one
            // address twice within it set 0 themselves.
            c.auth.site_url = "http://localhost:3000".into();
            c.auth.redirect_urls = vec!["http://app.test/**".into()];
            tweak(c)
        })
        .await;
    Auth { s, pk, sk, db }
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Auth {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        bearer: Option<&str>,
        key: &str,
    ) -> Resp {
        let (status, headers, body) = auth_request(&self.s, key, method, path, body, bearer).await;
        Resp {
            status,
            headers,
            body,
        }
    }
    async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(reqwest::Method::POST, path, Some(body), None, &self.pk)
            .await
    }
    async fn signup(&self, email: &str) -> Value {
        let r = self
            .post(
                "/signup",
                json!({"email": email, "password": "password-123"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }
    async fn login(&self, email: &str, password: &str) -> Resp {
        self.post(
            "/token?grant_type=password",
            json!({"email": email, "password": password}),
        )
        .await
    }
    async fn refresh(&self, token: &str) -> Resp {
        self.post(
            "/token?grant_type=refresh_token",
            json!({"refresh_token": token}),
        )
        .await
    }
    async fn logout(&self, scope: &str, access: &str) -> Resp {
        let path = if scope.is_empty() {
            "/logout".to_string()
        } else {
            format!("/logout?scope={scope}")
        };
        self.call(reqwest::Method::POST, &path, None, Some(access), &self.pk)
            .await
    }
    async fn user(&self, access: &str) -> Resp {
        self.call(reqwest::Method::GET, "/user", None, Some(access), &self.pk)
            .await
    }
    /// Requests a magic link + code for `email` and returns the code from the mailbox.
    async fn otp_code(&self, email: &str) -> String {
        self.post("/otp", json!({ "email": email })).await;
        code_of(&self.mail(email).await[0])
    }
    /// POST /verify with an email code.
    async fn verify_code(&self, kind: &str, email: &str, code: &str) -> Resp {
        self.post(
            "/verify",
            json!({"type": kind, "email": email, "token": code}),
        )
        .await
    }
    async fn mail(&self, to: &str) -> Vec<Value> {
        let r = self
            .s
            .http
            .get(format!("{}/admin/v1/mail?to={to}", self.s.url))
            .header("apikey", &self.sk)
            .send()
            .await
            .unwrap();
        r.json::<Vec<Value>>().await.unwrap()
    }
}

fn code_of(mail: &Value) -> String {
    let text = mail["text"].as_str().unwrap();
    text.split("code: ").nth(1).unwrap()[..6].to_string()
}

fn link_of(mail: &Value) -> String {
    let text = mail["text"].as_str().unwrap();
    text.lines()
        .find(|l| l.contains("/auth/v1/verify?"))
        .unwrap()
        .trim()
        .to_string()
}

fn s(v: &Value) -> String {
    v.as_str().unwrap().to_string()
}

#[tokio::test]
async fn refresh_rotates_tolerates_two_tabs_and_revokes_the_family_on_late_reuse() {
    let a = auth_server(|_| {}).await;
    let session = a.signup("rot@example.com").await;
    let rt0 = s(&session["refresh_token"]);
    let r1 = a.refresh(&rt0).await;
    assert_eq!(r1.status, 200, "{}", r1.body);
    let rt1 = s(&r1.body["refresh_token"]);
    assert_ne!(rt0, rt1);
    // Second tab, same old token, inside the reuse window: the session's current token.
    let again = a.refresh(&rt0).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(s(&again.body["refresh_token"]), rt1);
    let r2 = a.refresh(&rt1).await;
    assert_eq!(r2.status, 200);
    let rt2 = s(&r2.body["refresh_token"]);
    assert_ne!(rt2, rt1);
    assert_eq!(
        a.refresh("not-a-real-refresh-token").await.body["code"],
        "refresh_token_not_found"
    );

    // Outside the window (interval 0): reuse revokes the whole session.
    let b = auth_server(|c| c.auth.refresh_token_reuse_interval_secs = 0).await;
    let session = b.signup("late@example.com").await;
    let (rt0, access) = (s(&session["refresh_token"]), s(&session["access_token"]));
    let rt1 = s(&b.refresh(&rt0).await.body["refresh_token"]);
    let reuse = b.refresh(&rt0).await;
    assert_eq!(
        (reuse.status, reuse.body["code"].as_str()),
        (400, Some("refresh_token_already_used"))
    );
    let after = b.refresh(&rt1).await;
    assert_eq!(
        after.body["code"], "refresh_token_not_found",
        "the family is gone"
    );
    let u = b.user(&access).await;
    assert_eq!(
        (u.status, u.body["code"].as_str()),
        (403, Some("session_not_found"))
    );
}

#[tokio::test]
async fn logout_scopes_end_sessions_even_before_their_tokens_expire() {
    let a = auth_server(|_| {}).await;
    a.signup("scopes@example.com").await;
    let s1 = a.login("scopes@example.com", "password-123").await.body;
    let s2 = a.login("scopes@example.com", "password-123").await.body;
    let s3 = a.login("scopes@example.com", "password-123").await.body;
    // others: s1 survives, s2 and s3 do not.
    let r = a.logout("others", &s(&s1["access_token"])).await;
    assert_eq!(r.status, 204);
    assert_eq!(a.user(&s(&s1["access_token"])).await.status, 200);
    assert_eq!(
        a.user(&s(&s2["access_token"])).await.body["code"],
        "session_not_found"
    );
    assert_eq!(
        a.refresh(&s(&s3["refresh_token"])).await.body["code"],
        "refresh_token_not_found"
    );
    // local: only this one.
    let s4 = a.login("scopes@example.com", "password-123").await.body;
    let r = a.logout("local", &s(&s1["access_token"])).await;
    assert_eq!(r.status, 204);
    assert_eq!(a.user(&s(&s1["access_token"])).await.status, 403);
    assert_eq!(a.user(&s(&s4["access_token"])).await.status, 200);
    // global (default): everything.
    let s5 = a.login("scopes@example.com", "password-123").await.body;
    assert_eq!(a.logout("", &s(&s5["access_token"])).await.status, 204);
    assert_eq!(a.user(&s(&s4["access_token"])).await.status, 403);
    let bad = a.logout("everyone", &s(&s4["access_token"])).await;
    assert_eq!(bad.status, 400);
    // No bearer / not a user token.
    assert_eq!(
        a.call(reqwest::Method::GET, "/user", None, None, &a.pk)
            .await
            .body["code"],
        "no_authorization"
    );
    assert_eq!(a.user(&a.pk).await.status, 403);
}

#[tokio::test]
async fn confirmation_flow_and_no_account_enumeration_when_confirmation_is_on() {
    // Signs one address up twice in a row: no send interval here (the default one
    // is covered by every_email_flow_works_with_the_default_send_interval_...).
    let a = auth_server(|c| {
        c.auth.autoconfirm = Some(false);
        c.auth.email_min_interval_secs = 0;
    })
    .await;
    let r = a.post("/signup", json!({"email": "New@Example.com", "password": "password-123", "data": {"plan": "free"}})).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.get("access_token").is_none(),
        "no session before confirmation"
    );
    assert_eq!(r.body["email"], "new@example.com");
    let real_id = s(&r.body["id"]);
    let login = a.login("new@example.com", "password-123").await;
    assert_eq!(
        (login.status, login.body["code"].as_str()),
        (400, Some("email_not_confirmed"))
    );

    let mails = a.mail("new@example.com").await;
    assert_eq!(mails.len(), 1);
    let code = code_of(&mails[0]);
    let bad = a
        .post(
            "/verify",
            json!({"type": "signup", "email": "new@example.com", "token": "000000"}),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body["code"].as_str()),
        (403, Some("otp_expired"))
    );
    let ok = a.verify_code("signup", "new@example.com", &code).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body["user"]["email_confirmed_at"].is_string());
    assert_eq!(ok.body["user"]["user_metadata"]["plan"], "free");
    let reuse = a.verify_code("signup", "new@example.com", &code).await;
    assert_eq!(reuse.body["code"], "otp_expired", "single use");

    // Signing up again with the confirmed address reveals nothing.
    let again = a
        .post(
            "/signup",
            json!({"email": "new@example.com", "password": "other-password"}),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_ne!(s(&again.body["id"]), real_id);
    assert_eq!(again.body["identities"], json!([]));
    // Recover for an unknown address looks the same as for a known one.
    assert_eq!(
        a.post("/recover", json!({"email": "nobody@example.com"}))
            .await
            .body,
        json!({})
    );
    assert_eq!(
        a.post("/recover", json!({"email": "new@example.com"}))
            .await
            .body,
        json!({})
    );
    // Unknown email and wrong password: the same answer.
    let unknown = a.login("nobody@example.com", "password-123").await;
    let wrong = a.login("new@example.com", "wrong-password").await;
    assert_eq!((unknown.status, &unknown.body), (wrong.status, &wrong.body));
    assert_eq!(wrong.body["code"], "invalid_credentials");
}

#[tokio::test]
async fn pkce_link_gives_a_code_that_only_the_verifier_can_exchange() {
    use base64::Engine;
    use sha2::Digest;
    let a = auth_server(|_| {}).await;
    a.signup("pkce@example.com").await;
    let verifier = "a".repeat(20) + "-verifier-with-enough-entropy-1234567890";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let r = a
        .post(
            "/recover?redirect_to=http%3A%2F%2Fapp.test%2Fcb",
            json!({"email": "pkce@example.com", "code_challenge": challenge, "code_challenge_method": "s256"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let link = link_of(&a.mail("pkce@example.com").await[0]);
    assert!(link.contains("token=pkce_"), "{link}");
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirect.get(&link).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    let code = loc
        .strip_prefix("http://app.test/cb?code=")
        .unwrap_or_else(|| panic!("{loc}"))
        .to_string();

    let wrong = a
        .post(
            "/token?grant_type=pkce",
            json!({"auth_code": code, "code_verifier": "b".repeat(50)}),
        )
        .await;
    assert_eq!(
        (wrong.status, wrong.body["code"].as_str()),
        (400, Some("bad_code_verifier"))
    );
    let ok = a
        .post(
            "/token?grant_type=pkce",
            json!({"auth_code": code, "code_verifier": verifier}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["user"]["email"], "pkce@example.com");
    let twice = a
        .post(
            "/token?grant_type=pkce",
            json!({"auth_code": code, "code_verifier": verifier}),
        )
        .await;
    assert_eq!(
        (twice.status, twice.body["code"].as_str()),
        (404, Some("flow_state_not_found"))
    );
}

#[tokio::test]
async fn email_links_never_redirect_outside_the_allowlist() {
    // Two recovery mails to one address in a row: no send interval here.
    let a = auth_server(|c| c.auth.email_min_interval_secs = 0).await;
    a.signup("redir@example.com").await;
    a.post(
        "/recover?redirect_to=https%3A%2F%2Fevil.example%2Fsteal",
        json!({"email": "redir@example.com"}),
    )
    .await;
    let link = link_of(&a.mail("redir@example.com").await[0]);
    assert!(
        link.contains("redirect_to=http%3A%2F%2Flocalhost%3A3000"),
        "{link}"
    );
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirect.get(&link).send().await.unwrap();
    let loc = resp.headers()["location"].to_str().unwrap();
    assert!(
        loc.starts_with("http://localhost:3000/#access_token="),
        "{loc}"
    );
    // The link is used up: the second click lands on an error fragment.
    let resp = no_redirect.get(&link).send().await.unwrap();
    let loc = resp.headers()["location"].to_str().unwrap();
    assert!(
        loc.starts_with("http://localhost:3000/#error=access_denied&error_code=otp_expired"),
        "{loc}"
    );
    // An allowed target is kept.
    a.post(
        "/recover?redirect_to=http%3A%2F%2Fapp.test%2Freset",
        json!({"email": "redir@example.com"}),
    )
    .await;
    let link = link_of(&a.mail("redir@example.com").await[0]);
    let loc = no_redirect.get(&link).send().await.unwrap().headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        loc.starts_with("http://app.test/reset#access_token="),
        "{loc}"
    );
}

#[tokio::test]
async fn expired_codes_are_refused_and_swept_away() {
    let a = auth_server(|c| c.auth.otp_ttl_secs = 0).await;
    a.signup("ttl@example.com").await;
    a.post("/recover", json!({"email": "ttl@example.com"}))
        .await;
    let owner = a.db.owner().await;
    let count = "SELECT count(*) FROM auth.one_time_tokens";
    assert_eq!(
        owner.query_one(count, &[]).await.unwrap().get::<_, i64>(0),
        1
    );
    assert!(
        wasmbase::api::auth::sweep_once(&a.s.srv.state)
            .await
            .unwrap()
            >= 1
    );
    assert_eq!(
        owner.query_one(count, &[]).await.unwrap().get::<_, i64>(0),
        0
    );
    let code = a.otp_code("ttl@example.com").await;
    let r = a.verify_code("email", "ttl@example.com", &code).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("otp_expired"))
    );
    // An unknown address without sign-up gets what a known one gets (not GoTrue's
    // 422 otp_disabled, which tells them apart), and no mail, and no user.
    let r = a
        .post(
            "/otp",
            json!({"email": "ghost@example.com", "create_user": false}),
        )
        .await;
    assert_eq!((r.status, &r.body), (200, &json!({})));
    assert!(a.mail("ghost@example.com").await.is_empty());
    let users: i64 = owner
        .query_one(
            "SELECT count(*) FROM auth.users WHERE email = 'ghost@example.com'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 0);
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let a = auth_server(|c| c.auth.rate_limit_email_per_minute = 2).await;
    for _ in 0..2 {
        assert_eq!(
            a.login("brute@example.com", "guess-guess").await.status,
            400
        );
    }
    let r = a.login("brute@example.com", "guess-guess").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (429, Some("over_request_rate_limit"))
    );
    assert!(r.headers.contains_key("retry-after"));
    // Another address is not affected.
    assert_eq!(
        a.login("other@example.com", "guess-guess").await.status,
        400
    );

    let b = auth_server(|c| c.auth.rate_limit_ip_per_minute = 3).await;
    for i in 0..3 {
        b.login(&format!("ip{i}@example.com"), "guess-guess").await;
    }
    assert_eq!(b.login("ip9@example.com", "guess-guess").await.status, 429);
}

#[tokio::test]
async fn errors_follow_the_requested_gotrue_format() {
    let a = auth_server(|_| {}).await;
    let weak = a
        .post(
            "/signup",
            json!({"email": "weak@example.com", "password": "short"}),
        )
        .await;
    assert_eq!(weak.status, 422);
    assert_eq!(weak.body["code"], "weak_password");
    assert_eq!(weak.body["weak_password"]["reasons"], json!(["length"]));
    assert_eq!(weak.headers["x-supabase-api-version"], "2024-01-01");
    // Without the version header: GoTrue's legacy body.
    let r =
        a.s.http
            .post(format!("{}/auth/v1/token?grant_type=password", a.s.url))
            .header("apikey", &a.pk)
            .json(&json!({"email": "x@example.com", "password": "whatever-1"}))
            .send()
            .await
            .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"code": 400, "error_code": "invalid_credentials", "msg": "Invalid login credentials"})
    );
    // Bodies GoTrue accepts: nulls and unknown fields.
    let r = a
        .post(
            "/signup",
            json!({"email": "lenient@example.com", "password": "password-123", "data": null,
                   "code_challenge": null, "code_challenge_method": null, "gotrue_meta_security": {}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = a.post("/token?grant_type=magic", json!({})).await;
    assert_eq!(r.body["code"], "invalid_credentials");
    // Keys are required as on Supabase's gateway.
    let r = a
        .call(reqwest::Method::POST, "/signup", Some(json!({})), None, "")
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn app_metadata_is_admin_only_and_tokens_carry_it() {
    let a = auth_server(|_| {}).await;
    let org = "5b7f2a9c-0d1e-4f3a-8b6c-7d8e9f0a1b2c";
    let created = a
        .call(
            reqwest::Method::POST,
            "/admin/users",
            Some(json!({"email": "boss@example.com", "password": "password-123", "email_confirm": true,
                        "app_metadata": {"role": "admin", "org_id": org}})),
            None,
            &a.sk,
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.body["app_metadata"]["providers"], json!(["email"]));
    // Not through the publishable key.
    let denied = a
        .call(reqwest::Method::GET, "/admin/users", None, None, &a.pk)
        .await;
    assert_eq!(
        (denied.status, denied.body["code"].as_str()),
        (403, Some("not_admin"))
    );
    // A user cannot grant themselves admin.
    let session = a.login("boss@example.com", "password-123").await.body;
    let access = s(&session["access_token"]);
    let r = a
        .call(
            reqwest::Method::PUT,
            "/user",
            Some(json!({"app_metadata": {"role": "admin"}})),
            Some(&access),
            &a.pk,
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("not_admin"))
    );
    // The access token is a principal everywhere, with the admin claim and tenant.
    let (st, who) =
        a.s.get("/platform/v1/whoami", Some(&a.pk), Some(&access))
            .await;
    assert_eq!(st, 200);
    assert_eq!(who["database"]["current_user"], "authenticated");
    assert_eq!(who["database"]["auth_uid"], created.body["id"]);
    assert_eq!(who["claims"]["app_metadata"]["role"], "admin");
    assert_eq!(who["claims"]["app_metadata"]["org_id"], org);
    assert_eq!(who["claims"]["session_id"].as_str().map(str::len), Some(36));
    // Roles other than authenticated are not for users.
    let r = a
        .call(
            reqwest::Method::POST,
            "/admin/users",
            Some(json!({"email": "svc@example.com", "role": "service_role"})),
            None,
            &a.sk,
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn get_user_reflects_every_change_to_the_user_and_its_identities() {
    let a = auth_server(|_| {}).await;
    let session = a.signup("cache@example.com").await;
    let access = s(&session["access_token"]);
    let id = s(&session["user"]["id"]);
    let first = a.user(&access).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["id"], session["user"]["id"]);
    assert_eq!(
        a.user(&access).await.body,
        first.body,
        "a repeat answers the same"
    );
    // An admin changes the user: the next getUser() shows it.
    let r = a
        .call(
            reqwest::Method::PUT,
            &format!("/admin/users/{id}"),
            Some(json!({"user_metadata": {"plan": "pro"}})),
            None,
            &a.sk,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(a.user(&access).await.body["user_metadata"]["plan"], "pro");
    // A change to an identity alone (written outside the API) shows too.
    a.db.owner()
        .await
        .execute(
            "UPDATE auth.identities SET identity_data = identity_data || '{\"nickname\": \"cachy\"}' \
             WHERE user_id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    let seen = a.user(&access).await.body;
    assert_eq!(seen["identities"][0]["identity_data"]["nickname"], "cachy");
    // The user's own update, then logout: the session check still runs every time.
    let r = a
        .call(
            reqwest::Method::PUT,
            "/user",
            Some(json!({"data": {"theme": "dark"}})),
            Some(&access),
            &a.pk,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(a.user(&access).await.body["user_metadata"]["theme"], "dark");
    assert_eq!(a.logout("local", &access).await.status, 204);
    let gone = a.user(&access).await;
    assert_eq!(
        (gone.status, gone.body["code"].as_str()),
        (403, Some("session_not_found"))
    );
}

#[tokio::test]
async fn the_audit_log_records_sign_ins_and_failures_without_secrets() {
    let a = auth_server(|_| {}).await;
    a.signup("audit@example.com").await;
    a.login("audit@example.com", "password-123").await;
    a.login("audit@example.com", "bad-password").await;
    let owner = a.db.owner().await;
    let rows = owner
        .query(
            "SELECT payload::text FROM auth.audit_log_entries ORDER BY created_at",
            &[],
        )
        .await
        .unwrap();
    let all: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for action in ["user_signedup", "\"login\"", "login_failed"] {
        assert!(
            all.iter().any(|p| p.contains(action)),
            "{action} missing: {all:?}"
        );
    }
    assert!(!all
        .iter()
        .any(|p| p.contains("password-123") || p.contains("bad-password")));
    let hash: String = owner
        .query_one(
            "SELECT encrypted_password FROM auth.users WHERE email = 'audit@example.com'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    let stored: i64 = owner
        .query_one(
            "SELECT count(*) FROM auth.refresh_tokens WHERE length(token_hash) = 64",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored >= 2, "refresh tokens are stored as SHA-256 hex");
}

#[tokio::test]
async fn asymmetric_signing_keys_sign_tokens_publish_jwks_and_rotate() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let rsa = dir.path().join("rs256.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&rsa)
        .output()
        .expect("openssl is needed to make an RSA test key");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let es = dir.path().join("es256.pem");
    std::fs::write(&es, wasmbase_host_api::jwt::generate_es256_pem()).unwrap();

    // Before rotation: RS256 signs.
    let a = auth_server(|c| c.auth.signing_keys = vec![rsa.clone()]).await;
    let session = a.signup("rsa@example.com").await;
    let old_token = s(&session["access_token"]);
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(old_token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    let jwks: Value =
        a.s.http
            .get(format!("{}/auth/v1/.well-known/jwks.json", a.s.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert!(jwks["keys"][0].get("d").is_none());
    assert_eq!(a.user(&old_token).await.status, 200);
    assert_eq!(
        a.s.get("/platform/v1/whoami", Some(&a.pk), Some(&old_token))
            .await
            .0,
        200
    );
    a.s.srv.shutdown().await;

    // Rotation on the same database: ES256 first, RS256 kept for verification.
    let b =
        a.db.server_with(|c| {
            c.auth.autoconfirm = Some(true);
            c.auth.signing_keys = vec![es.clone(), rsa.clone()];
        })
        .await;
    let (st, _) = b
        .get("/platform/v1/whoami", Some(&a.pk), Some(&old_token))
        .await;
    assert_eq!(
        st, 200,
        "tokens of the old key stay valid until they expire"
    );
    let fresh = b
        .http
        .post(format!("{}/auth/v1/token?grant_type=password", b.url))
        .header("apikey", &a.pk)
        .json(&json!({"email": "rsa@example.com", "password": "password-123"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let new_token = s(&fresh["access_token"]);
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(new_token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(
        b.get("/platform/v1/whoami", Some(&a.pk), Some(&new_token))
            .await
            .0,
        200
    );
    let jwks: Value = b
        .http
        .get(format!("{}/auth/v1/.well-known/jwks.json", b.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);

    // A bad key file is refused at start with the key named.
    std::fs::write(dir.path().join("bad.pem"), "not a key").unwrap();
    let mut c = a.db.config();
    c.auth.signing_keys = vec![dir.path().join("bad.pem")];
    let e = wasmbase::server::start(c)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("auth.signing_keys"), "{e}");
}

#[tokio::test]
async fn smtp_delivers_confirmation_mail_when_configured() {
    let sink = SmtpSink::start().await;
    let port = sink.port;
    let a = auth_server(|c| {
        c.auth.autoconfirm = Some(false);
        c.auth.smtp = Some(wasmbase::config::SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            user: None,
            pass: None,
            from: "Wasmbase <no-reply@wasmbase.test>".into(),
            tls: "none".into(),
        });
    })
    .await;
    let r = a
        .post(
            "/signup",
            json!({"email": "smtp@example.com", "password": "password-123"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Delivered after the response (which does not wait on the SMTP server, so its
    // timing says nothing about the address): wait for the sink to receive it.
    let m = sink.messages.clone();
    wait_until("the mail reaches the SMTP sink", 30, || {
        m.try_lock().map(|v| !v.is_empty()).unwrap_or(false)
    })
    .await;
    let msgs = sink.messages.lock().await.clone();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert!(m.contains("To: smtp@example.com"), "{m}");
    assert!(m.contains("Subject: Confirm your signup"), "{m}");
    assert!(m.contains("/auth/v1/verify?token="), "{m}");
    assert!(
        a.mail("smtp@example.com").await.is_empty(),
        "nothing in the dev mailbox"
    );
}

#[tokio::test]
async fn signup_cannot_take_over_an_unconfirmed_account_and_bans_bite() {
    let a = auth_server(|_| {}).await;
    // An invited (unconfirmed) user exists.
    let inv = a
        .call(
            reqwest::Method::POST,
            "/invite",
            Some(json!({"email": "invited@example.com"})),
            None,
            &a.sk,
        )
        .await;
    assert_eq!(inv.status, 200, "{}", inv.body);
    // Someone else signs up with that address: no session, no confirmation.
    let r = a
        .post(
            "/signup",
            json!({"email": "invited@example.com", "password": "attacker-pass"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (422, Some("user_already_exists"))
    );
    assert_eq!(
        a.login("invited@example.com", "attacker-pass").await.body["code"],
        "invalid_credentials"
    );
    // The invitation link still works for the mailbox owner.
    let link = link_of(&a.mail("invited@example.com").await[0]);
    assert!(link.contains("type=invite"), "{link}");

    // A banned user's token stops working on user routes, and sign-in is refused.
    let session = a.signup("banned@example.com").await;
    let id = s(&session["user"]["id"]);
    let r = a
        .call(
            reqwest::Method::PUT,
            &format!("/admin/users/{id}"),
            Some(json!({"ban_duration": "24h"})),
            None,
            &a.sk,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["banned_until"].is_string());
    let u = a.user(&s(&session["access_token"])).await;
    assert_eq!(u.status, 403, "{}", u.body);
    assert_eq!(
        a.login("banned@example.com", "password-123").await.body["code"],
        "user_banned"
    );
    // No other route hands a banned user a session either: an email code is refused.
    let code = a.otp_code("banned@example.com").await;
    let r = a.verify_code("email", "banned@example.com", &code).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("user_banned"))
    );
    let r = a
        .call(
            reqwest::Method::PUT,
            &format!("/admin/users/{id}"),
            Some(json!({"ban_duration": "none"})),
            None,
            &a.sk,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        a.login("banned@example.com", "password-123").await.status,
        200
    );
}

#[tokio::test]
async fn supabase_style_tables_reference_auth_users_and_policies_see_the_signed_in_user() {
    let a = auth_server(|_| {}).await;
    let owner = a.db.owner().await;
    owner
        .batch_execute(
            "CREATE TABLE public.todos (id serial PRIMARY KEY, user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE, title text);
             CREATE POLICY own_todos ON public.todos FOR ALL USING (auth.uid() = user_id) WITH CHECK (auth.uid() = user_id);",
        )
        .await
        .unwrap();
    let ann = a.signup("ann@todos.example").await;
    let bob = a.signup("bob@todos.example").await;
    let (ann_id, bob_id) = (s(&ann["user"]["id"]), s(&bob["user"]["id"]));
    for (uid, title) in [(&ann_id, "ann's"), (&bob_id, "bob's")] {
        owner
            .execute(
                "INSERT INTO public.todos (user_id, title) VALUES ($1::text::uuid, $2)",
                &[uid, &title],
            )
            .await
            .unwrap();
    }
    // Ann's access token, as the principal of a request transaction, sees only her row.
    let gate = a.s.srv.state.gate.clone();
    let claims = gate.jwt().verify(&s(&ann["access_token"])).unwrap();
    let p = wasmbase_host_api::Principal::new(claims.role, claims.claims);
    let titles = wasmbase_host_api::db::run_as::<_, wasmbase_host_api::db::DbError, _>(
        &a.s.srv.state.pool,
        &wasmbase_host_api::db::Acting::principal(&p, std::time::Duration::from_secs(5)),
        |c| {
            Box::pin(async move {
                let rows = c
                    .query("SELECT title FROM public.todos ORDER BY id", &[])
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>())
            })
        },
    )
    .await
    .unwrap();
    assert_eq!(titles, vec!["ann's".to_string()]);
    // Deleting the user through the admin API cascades into the app's table.
    let r = a
        .call(
            reqwest::Method::DELETE,
            &format!("/admin/users/{ann_id}"),
            Some(json!({})),
            None,
            &a.sk,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let left: i64 = owner
        .query_one("SELECT count(*) FROM public.todos", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
}

#[tokio::test]
async fn codes_die_after_five_wrong_guesses_and_links_do_not_derive_from_them() {
    let a = auth_server(|_| {}).await;
    a.signup("guess@example.com").await;
    a.post("/otp", json!({"email": "guess@example.com"})).await;
    let mail = a.mail("guess@example.com").await;
    let code = code_of(&mail[0]);
    let link = link_of(&mail[0]);
    // The link token is random, not sha224(email || code) as in GoTrue.
    let token = link
        .split("token=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 64);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let r = a.verify_code("email", "guess@example.com", wrong).await;
        assert_eq!(r.body["code"], "otp_expired");
    }
    let r = a.verify_code("email", "guess@example.com", &code).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("otp_expired")),
        "the token is gone after 5 misses"
    );
}

#[tokio::test]
async fn a_password_set_before_confirmation_does_not_survive_the_owner_claiming_the_address() {
    // Signs one address up twice in a row: no send interval here.
    let a = auth_server(|c| {
        c.auth.autoconfirm = Some(false);
        c.auth.email_min_interval_secs = 0;
    })
    .await;
    // Someone who does not own the mailbox signs up with it.
    let r = a
        .post(
            "/signup",
            json!({"email": "owner@example.com", "password": "attacker-pass"}),
        )
        .await;
    assert_eq!(r.status, 200);
    // The owner signs in with a magic link instead.
    let code = a.otp_code("owner@example.com").await;
    let ok = a.verify_code("email", "owner@example.com", &code).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    // The attacker's password is gone.
    assert_eq!(
        a.login("owner@example.com", "attacker-pass").await.body["code"],
        "invalid_credentials"
    );

    // A second sign-up for an unconfirmed address also drops the first password.
    a.post(
        "/signup",
        json!({"email": "twice@example.com", "password": "attacker-pass"}),
    )
    .await;
    a.post(
        "/signup",
        json!({"email": "twice@example.com", "password": "owner-password"}),
    )
    .await;
    let code = code_of(&a.mail("twice@example.com").await[0]);
    let ok = a.verify_code("signup", "twice@example.com", &code).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        a.login("twice@example.com", "attacker-pass").await.body["code"],
        "invalid_credentials"
    );
}

#[tokio::test]
async fn a_pkce_request_can_also_be_completed_with_the_emailed_code() {
    let a = auth_server(|_| {}).await;
    a.signup("pkcecode@example.com").await;
    let challenge = "c".repeat(43);
    let r = a
        .post("/recover", json!({"email": "pkcecode@example.com", "code_challenge": challenge, "code_challenge_method": "plain"}))
        .await;
    assert_eq!(r.status, 200);
    let mail = &a.mail("pkcecode@example.com").await[0];
    assert!(link_of(mail).contains("token=pkce_"));
    let r = a
        .verify_code("recovery", "pkcecode@example.com", &code_of(mail))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["email"], "pkcecode@example.com");
    // The flow is finished: the link no longer yields a code.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let loc = no_redirect
        .get(link_of(mail))
        .send()
        .await
        .unwrap()
        .headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(loc.contains("error_code=otp_expired"), "{loc}");
}

/// A 429 within the send interval, as the client sees it (the wait in the
/// message may differ by a second between two requests).
fn send_limited(r: &Resp) -> bool {
    r.status == 429
        && r.body["code"] == "over_email_send_rate_limit"
        && r.headers.contains_key("retry-after")
}

#[tokio::test]
async fn every_email_flow_works_with_the_default_send_interval_and_answers_alike_for_unknown_addresses(
) {
    // What `serve` runs with: confirmation on, the default 60 s send interval.
    let a = auth_server(|c| c.auth.autoconfirm = Some(false)).await;
    assert_eq!(a.s.srv.state.config.auth.email_min_interval_secs, 60);
    let admin_create = |email: &'static str| {
        a.call(
            reqwest::Method::POST,
            "/admin/users",
            Some(json!({"email": email, "password": "password-123", "email_confirm": true})),
            None,
            &a.sk,
        )
    };
    assert_eq!(admin_create("known@example.com").await.status, 200);
    assert_eq!(admin_create("taken@example.com").await.status, 200);

    // Sign-up with confirmation: mails the confirmation, whose code confirms.
    let r = a
        .post(
            "/signup",
            json!({"email": "fresh@example.com", "password": "password-123"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let code = code_of(&a.mail("fresh@example.com").await[0]);
    let ok = a.verify_code("signup", "fresh@example.com", &code).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    // A second sign-up within the interval: the same 429 for a confirmed address
    // and for one nobody has.
    for email in [
        "fresh@example.com",
        "known@example.com",
        "nobody1@example.com",
    ] {
        let body = json!({"email": email, "password": "password-123"});
        if email != "fresh@example.com" {
            let first = a.post("/signup", body.clone()).await;
            assert_eq!(first.status, 200, "{email}: {}", first.body);
        }
        let again = a.post("/signup", body).await;
        assert!(
            send_limited(&again),
            "{email}: {} {}",
            again.status,
            again.body
        );
    }
    // The resend of a confirmation is the same flow: limited alike too.
    for email in ["fresh@example.com", "nobody1@example.com"] {
        let r = a
            .post("/resend", json!({"type": "signup", "email": email}))
            .await;
        assert!(send_limited(&r), "{email}: {} {}", r.status, r.body);
    }

    // Recovery: the same answer, then the same 429, known or not; one mail.
    for path in ["/recover", "/otp"] {
        let known = "known@example.com";
        let unknown = "nobody2@example.com";
        let body = |e: &str| json!({"email": e, "create_user": false});
        let (k, u) = (
            a.post(path, body(known)).await,
            a.post(path, body(unknown)).await,
        );
        assert_eq!((k.status, &k.body), (200, &json!({})), "{path}");
        assert_eq!((u.status, &u.body), (k.status, &k.body), "{path}");
        let (k, u) = (
            a.post(path, body(known)).await,
            a.post(path, body(unknown)).await,
        );
        assert!(send_limited(&k), "{path}: {} {}", k.status, k.body);
        assert!(send_limited(&u), "{path}: {} {}", u.status, u.body);
        assert_eq!(k.body["code"], u.body["code"]);
    }
    assert!(a.mail("nobody2@example.com").await.is_empty());
    let mails = a.mail("known@example.com").await;
    assert_eq!(mails.len(), 2, "one recovery mail and one magic link");
    assert!(link_of(&mails[0]).contains("type=magiclink"));
    assert!(link_of(&mails[1]).contains("type=recovery"));
    // The magic link's code signs in.
    let ok = a
        .verify_code("email", "known@example.com", &code_of(&mails[0]))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let access = s(&ok.body["access_token"]);

    // Email change: mails the new address; an address another account has gets
    // the same answer but no mail.
    let change = |email: &'static str| {
        a.call(
            reqwest::Method::PUT,
            "/user",
            Some(json!({ "email": email })),
            Some(&access),
            &a.pk,
        )
    };
    let free = change("moved@example.com").await;
    assert_eq!(free.status, 200, "{}", free.body);
    assert_eq!(free.body["new_email"], "moved@example.com");
    let code = code_of(&a.mail("moved@example.com").await[0]);
    let taken = change("taken@example.com").await;
    assert_eq!(taken.status, 200, "{}", taken.body);
    assert_eq!(taken.body["new_email"], "taken@example.com");
    assert!(a.mail("taken@example.com").await.is_empty());
    // The earlier change's code no longer applies (the pending address changed).
    let r = a
        .verify_code("email_change", "moved@example.com", &code)
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let again = change("taken@example.com").await;
    assert!(send_limited(&again), "{} {}", again.status, again.body);

    // Invite: mails the invitation, whose link works.
    let invite = || {
        a.call(
            reqwest::Method::POST,
            "/invite",
            Some(json!({"email": "invitee@example.com"})),
            None,
            &a.sk,
        )
    };
    let r = invite().await;
    assert_eq!(r.status, 200, "{}", r.body);
    let code = code_of(&a.mail("invitee@example.com").await[0]);
    assert!(send_limited(&invite().await));
    let ok = a.verify_code("invite", "invitee@example.com", &code).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test]
async fn an_admin_password_reset_voids_emailed_codes_and_links_like_a_users_own_change() {
    let a = auth_server(|_| {}).await;
    let session = a.signup("reset@example.com").await;
    let id = s(&session["user"]["id"]);
    // Someone has a recovery mail (say, from a mailbox that leaked).
    let r = a
        .post("/recover", json!({"email": "reset@example.com"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mail = a.mail("reset@example.com").await.remove(0);
    let r = a
        .call(
            reqwest::Method::PUT,
            &format!("/admin/users/{id}"),
            Some(json!({"password": "admin-set-password"})),
            None,
            &a.sk,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = a
        .verify_code("recovery", "reset@example.com", &code_of(&mail))
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("otp_expired")),
        "the code mailed before the reset is void"
    );
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirect.get(link_of(&mail)).send().await.unwrap();
    let loc = resp.headers()["location"].to_str().unwrap();
    assert!(loc.contains("error_code=otp_expired"), "{loc}");
    // Sessions end too, and the new password works.
    assert_eq!(a.user(&s(&session["access_token"])).await.status, 403);
    assert_eq!(
        a.login("reset@example.com", "admin-set-password")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn parallel_wrong_codes_cannot_get_past_the_five_guess_limit() {
    let a = auth_server(|c| {
        c.auth.rate_limit_email_per_minute = 100;
        c.database.pool_timeout_ms = 60_000;
    })
    .await;
    a.signup("race@example.com").await;
    let code = a.otp_code("race@example.com").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    // Hold every auth connection, queue 20 wrong guesses, then the right code
    // behind them; the pool hands connections out in queue order.
    let pool = a.s.srv.state.auth.pool.clone();
    let mut held = Vec::new();
    for _ in 0..pool.status().max_size {
        held.push(pool.get().await.unwrap());
    }
    let guess = |c: String| {
        let (http, url, pk) = (a.s.http.clone(), a.s.url.clone(), a.pk.clone());
        tokio::spawn(async move {
            let r = http
                .post(format!("{url}/auth/v1/verify"))
                .header("apikey", pk)
                .header("x-supabase-api-version", "2024-01-01")
                .json(&json!({"type": "email", "email": "race@example.com", "token": c}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        })
    };
    let wrongs: Vec<_> = (0..20).map(|_| guess(wrong.to_string())).collect();
    let p = pool.clone();
    wait_until("20 guesses queue for a connection", 30, || {
        p.status().waiting == 20
    })
    .await;
    let right = guess(code.clone());
    let p = pool.clone();
    wait_until("the right code queues behind them", 30, || {
        p.status().waiting == 21
    })
    .await;
    drop(held);
    for w in wrongs {
        let (status, body) = w.await.unwrap();
        assert_eq!((status, body["code"].as_str()), (403, Some("otp_expired")));
    }
    let (status, body) = right.await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("otp_expired")),
        "20 wrong guesses were checked first: the code must be dead ({body})"
    );
    let left: i64 =
        a.db.owner()
            .await
            .query_one(
                "SELECT count(*) FROM auth.one_time_tokens WHERE relates_to = 'race@example.com'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(left, 0);
}

/// Live (not yet rotated) refresh tokens of `email`'s sessions.
async fn live_tokens(a: &Auth, email: &str) -> i64 {
    a.db.owner()
        .await
        .query_one(
            "SELECT count(*) FROM auth.refresh_tokens rt JOIN auth.sessions s ON s.id = rt.session_id \
             JOIN auth.users u ON u.id = s.user_id WHERE u.email = $1 AND NOT rt.revoked",
            &[&email],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_token_rotations_old_reused_inside_the_window_never_forks_the_family() {
    let a = auth_server(|_| {}).await;
    let session = a.signup("fork@example.com").await;
    let rt0 = s(&session["refresh_token"]);
    let rt1 = s(&a.refresh(&rt0).await.body["refresh_token"]);
    let rt2 = s(&a.refresh(&rt1).await.body["refresh_token"]);
    assert_eq!(live_tokens(&a, "fork@example.com").await, 1);
    // The oldest token, twice over, inside the window: the live token, nothing new.
    for _ in 0..2 {
        let r = a.refresh(&rt0).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(s(&r.body["refresh_token"]), rt2);
        assert_eq!(live_tokens(&a, "fork@example.com").await, 1);
    }
    let r = a.refresh(&rt1).await;
    assert_eq!(s(&r.body["refresh_token"]), rt2);
    // The family goes on from the live token alone.
    let rt3 = s(&a.refresh(&rt2).await.body["refresh_token"]);
    assert_eq!(s(&a.refresh(&rt0).await.body["refresh_token"]), rt3);
    assert_eq!(live_tokens(&a, "fork@example.com").await, 1);
}

#[tokio::test]
async fn sessions_end_by_time_box_and_inactivity_and_the_sweep_removes_them() {
    let a = auth_server(|c| {
        c.auth.sessions_timebox_secs = 3600;
        c.auth.sessions_inactivity_timeout_secs = 600;
    })
    .await;
    // This server's own first sweep is done: none runs for a minute now.
    wait_until("the first sweep", 30, || {
        a.s.srv
            .state
            .auth
            .sweeps
            .load(std::sync::atomic::Ordering::Acquire)
            >= 1
    })
    .await;
    let owner = a.db.owner().await;
    let session_of = |email: &'static str| {
        let owner = &owner;
        async move {
            owner
                .query_one(
                    "SELECT s.id FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id WHERE u.email = $1",
                    &[&email],
                )
                .await
                .unwrap()
                .get::<_, uuid::Uuid>(0)
        }
    };
    let boxed = s(&a.signup("boxed@example.com").await["refresh_token"]);
    let idle = s(&a.signup("idle@example.com").await["refresh_token"]);
    let alive = s(&a.signup("alive@example.com").await["refresh_token"]);
    let orphan = a.signup("orphan@example.com").await;
    let (boxed_sid, idle_sid) = (
        session_of("boxed@example.com").await,
        session_of("idle@example.com").await,
    );
    let (alive_sid, orphan_sid) = (
        session_of("alive@example.com").await,
        session_of("orphan@example.com").await,
    );
    // Signed in two hours ago, refreshed a minute ago: past the time-box.
    owner
        .execute(
            "UPDATE auth.sessions SET created_at = now() - interval '2 hours', refreshed_at = now() - interval '1 minute' WHERE id = $1",
            &[&boxed_sid],
        )
        .await
        .unwrap();
    // Signed in 20 minutes ago, never refreshed: past the inactivity timeout.
    owner
        .execute(
            "UPDATE auth.sessions SET created_at = now() - interval '20 minutes' WHERE id = $1",
            &[&idle_sid],
        )
        .await
        .unwrap();
    let r = a.refresh(&boxed).await;
    assert_eq!(
        (
            r.status,
            r.body["code"].as_str(),
            r.body["message"].as_str()
        ),
        (
            400,
            Some("session_expired"),
            Some("Invalid Refresh Token: Session Expired")
        )
    );
    let r = a.refresh(&idle).await;
    assert_eq!(
        (
            r.status,
            r.body["code"].as_str(),
            r.body["message"].as_str()
        ),
        (
            400,
            Some("session_expired"),
            Some("Invalid Refresh Token: Session Expired (Inactivity)")
        )
    );
    // A live session keeps working; its rotated-out token, revoked two days ago,
    // is past the retention.
    let alive2 = a.refresh(&alive).await;
    assert_eq!(alive2.status, 200, "{}", alive2.body);
    owner
        .execute(
            "UPDATE auth.refresh_tokens SET updated_at = now() - interval '2 days' WHERE session_id = $1 AND revoked",
            &[&alive_sid],
        )
        .await
        .unwrap();
    // A session left without a live token (created a while ago).
    owner
        .execute(
            "UPDATE auth.refresh_tokens SET revoked = true WHERE session_id = $1",
            &[&orphan_sid],
        )
        .await
        .unwrap();
    owner
        .execute(
            "UPDATE auth.sessions SET created_at = now() - interval '5 minutes', refreshed_at = now() WHERE id = $1",
            &[&orphan_sid],
        )
        .await
        .unwrap();

    let removed = wasmbase::api::auth::sweep_once(&a.s.srv.state)
        .await
        .unwrap();
    assert!(removed >= 4, "{removed}");
    let sessions: Vec<uuid::Uuid> = owner
        .query("SELECT id FROM auth.sessions", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sessions, vec![alive_sid], "only the live session is left");
    let tokens: Vec<bool> = owner
        .query("SELECT revoked FROM auth.refresh_tokens", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tokens, vec![false], "the live token alone is left");
    assert_eq!(
        a.user(&s(&orphan["access_token"])).await.body["code"],
        "session_not_found"
    );
    let r = a.refresh(&s(&alive2.body["refresh_token"])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A second pass (another node) finds nothing more to do.
    wasmbase::api::auth::sweep_once(&a.s.srv.state)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_server_sweeps_dead_refresh_tokens_by_default() {
    let a = auth_server(|_| {}).await;
    let rt0 = s(&a.signup("swept@example.com").await["refresh_token"]);
    let r = a.refresh(&rt0).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let owner = a.db.owner().await;
    // The rotated-out token, as if revoked two days ago.
    assert_eq!(
        owner
            .execute(
                "UPDATE auth.refresh_tokens SET updated_at = now() - interval '2 days' WHERE revoked",
                &[],
            )
            .await
            .unwrap(),
        1
    );
    // A server started on defaults sweeps it without being asked.
    let _b = a.db.server().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n: i64 = owner
            .query_one(
                "SELECT count(*) FROM auth.refresh_tokens WHERE revoked",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweeper never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(live_tokens(&a, "swept@example.com").await, 1);
}

#[tokio::test]
async fn a_nul_character_in_user_data_is_a_400_not_a_500() {
    let a = auth_server(|_| {}).await;
    let nul = json!({"x": "a\u{0}b"});
    let r = a
        .post(
            "/signup",
            json!({"email": "nul@example.com", "password": "password-123", "data": nul}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("validation_failed")),
        "{}",
        r.body
    );
    let r = a
        .post("/otp", json!({"email": "nulotp@example.com", "data": nul}))
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("validation_failed")),
        "{}",
        r.body
    );
    let session = a.signup("nul2@example.com").await;
    let access = s(&session["access_token"]);
    for data in [
        nul.clone(),
        json!({"a\u{0}": 1}),
        json!({"x": ["ok", {"y": "\u{0}"}]}),
    ] {
        let r = a
            .call(
                reqwest::Method::PUT,
                "/user",
                Some(json!({ "data": data })),
                Some(&access),
                &a.pk,
            )
            .await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (400, Some("validation_failed")),
            "{}",
            r.body
        );
    }
    // A NUL that reaches PostgreSQL (here through the admin API's metadata) is
    // a data exception: 400 too, never 500.
    let r = a
        .call(
            reqwest::Method::POST,
            "/admin/users",
            Some(json!({"email": "nul3@example.com", "user_metadata": nul, "app_metadata": nul})),
            None,
            &a.sk,
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("validation_failed")),
        "{}",
        r.body
    );
}
