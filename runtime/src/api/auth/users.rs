//! User-related SQL and rules shared by the flows: email and password checks,
//! metadata merging, user creation, email tokens, PKCE flow state, audit.
//! All of it runs inside [`tx`], as the `wasmbase_auth` role.

use super::error::{AuthApiError, AuthResult};
use super::mail::{self, Mail, Template};
use super::tokens;
use crate::server::state::AppState;
use bytes::Bytes;
use deadpool_postgres::ClientWrapper;
use futures::future::BoxFuture;
use serde_json::{json, Map, Value};
use tokio_postgres::Client;
use uuid::Uuid;
use wasmbase_host_api::db;

/// Runs auth work in one transaction as `wasmbase_auth` (the auth pool's role).
pub async fn tx<T, F>(st: &AppState, work: F) -> AuthResult<T>
where
    F: for<'c> FnOnce(&'c ClientWrapper) -> BoxFuture<'c, AuthResult<T>>,
{
    db::in_transaction(&st.auth.pool, work).await
}

/// Lower-cases and checks an email address (GoTrue: 400 validation_failed).
pub fn normalize_email(email: Option<&str>) -> AuthResult<String> {
    // ASCII only, like PostgreSQL's lower() under the cluster's C locale, so Rust
    // and the unique index agree on what "the same address" is.
    let e = email.unwrap_or("").trim().to_ascii_lowercase();
    let valid = e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(e.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.') && !d.contains('@'));
    if e.is_empty() {
        return Err(AuthApiError::validation("An email address is required"));
    }
    if !valid {
        return Err(AuthApiError::validation(
            "Unable to validate email address: invalid format",
        ));
    }
    Ok(e)
}

/// Password rules: at least `password_min_length` (422 weak_password with reason
/// `length`), at most 72 bytes (400).
pub fn check_password(st: &AppState, password: &str) -> AuthResult<()> {
    let min = st.config.auth.password_min_length;
    if password.len() > 72 {
        return Err(AuthApiError::validation(
            "Password cannot be longer than 72 characters",
        ));
    }
    if password.chars().count() < min {
        let mut e = AuthApiError::new(
            422,
            "weak_password",
            format!("Password should be at least {min} characters."),
        );
        e.weak_reasons = vec!["length"];
        return Err(e);
    }
    Ok(())
}

/// GoTrue's metadata update: top-level keys are merged, a `null` value deletes.
pub fn merge_metadata(current: &Value, patch: &Value) -> Value {
    let mut out = current.as_object().cloned().unwrap_or_default();
    if let Some(p) = patch.as_object() {
        for (k, v) in p {
            if v.is_null() {
                out.remove(k);
            } else {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Requires a JSON object (or nothing) for metadata, without NUL characters.
pub fn object_or_empty(v: Option<Value>, field: &str) -> AuthResult<Value> {
    match v {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(m)) => {
            let v = Value::Object(m);
            super::ctx::reject_nul(&v, field)?;
            Ok(v)
        }
        Some(_) => Err(AuthApiError::validation(format!(
            "{field} must be a JSON object"
        ))),
    }
}

/// The user object as GoTrue returns it.
pub async fn user_json(c: &Client, id: Uuid) -> AuthResult<Option<Value>> {
    let row = c
        .query_opt(
            "SELECT auth.user_json(u) FROM auth.users u WHERE u.id = $1 AND u.deleted_at IS NULL",
            &[&id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// The parts of a user row the flows decide on.
pub struct UserRow {
    /// Id.
    pub id: Uuid,
    /// argon2id PHC string, if the user has a password.
    pub password_hash: Option<String>,
    /// Whether the email is confirmed.
    pub confirmed: bool,
    /// Whether the user is banned now.
    pub banned: bool,
}

/// Finds a live user by email, locking the row for the rest of the transaction.
pub async fn find_by_email(c: &Client, email: &str) -> AuthResult<Option<UserRow>> {
    let row = c
        .query_opt(
            "SELECT id, encrypted_password, email_confirmed_at IS NOT NULL, coalesce(banned_until > now(), false) \
             FROM auth.users WHERE lower(email) = $1 AND deleted_at IS NULL FOR UPDATE",
            &[&email],
        )
        .await?;
    Ok(row.map(|r| UserRow {
        id: r.get(0),
        password_hash: r.get(1),
        confirmed: r.get(2),
        banned: r.get(3),
    }))
}

/// What a new user starts with.
pub struct NewUser<'a> {
    /// Normalised email.
    pub email: &'a str,
    /// argon2id hash, or none (OTP-only users).
    pub password_hash: Option<String>,
    /// `user_metadata`.
    pub user_metadata: Value,
    /// Extra `app_metadata` (admin only), merged over `{provider, providers}`.
    pub app_metadata: Value,
    /// Confirmed at creation.
    pub confirmed: bool,
    /// Set `invited_at`.
    pub invited: bool,
    /// Explicit id (admin create).
    pub id: Option<Uuid>,
}

/// Inserts a user and its email identity; `Err(email_exists)` on a duplicate.
pub async fn create_user(c: &Client, u: NewUser<'_>) -> AuthResult<Uuid> {
    let app = merge_metadata(
        &json!({"provider": "email", "providers": ["email"]}),
        &u.app_metadata,
    );
    let mut meta = u.user_metadata;
    if u.confirmed {
        meta = merge_metadata(&meta, &json!({"email_verified": true}));
    }
    let id = u.id.unwrap_or_else(Uuid::new_v4);
    let r = c
        .execute(
            "INSERT INTO auth.users (id, email, encrypted_password, raw_user_meta_data, raw_app_meta_data, \
               email_confirmed_at, invited_at) \
             VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END, CASE WHEN $7 THEN now() END)",
            &[&id, &u.email, &u.password_hash, &meta, &app, &u.confirmed, &u.invited],
        )
        .await;
    r.map_err(email_taken)?;
    let identity = json!({"sub": id.to_string(), "email": u.email, "email_verified": u.confirmed, "phone_verified": false});
    c.execute(
        "INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, email) VALUES ($1, $2, $3, 'email', $4)",
        &[&id.to_string(), &id, &identity, &u.email],
    )
    .await?;
    Ok(id)
}

/// A failed write of an address: GoTrue's 422 `email_exists` when another
/// account has it (the unique index said so), else the database error.
pub fn email_taken(e: tokio_postgres::Error) -> AuthApiError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        return AuthApiError::new(
            422,
            "email_exists",
            "A user with this email address has already been registered",
        );
    }
    e.into()
}

/// Gives `user` the address `email`: the user row and its e-mail identity
/// (confirming is the caller's choice). `pending`: only if it is the user's
/// pending change (`Ok(false)` when it is not, e.g. a link for a change made
/// since). 422 `email_exists` when another account has the address.
pub async fn set_email(c: &Client, user: Uuid, email: &str, pending: bool) -> AuthResult<bool> {
    let sql = if pending {
        "UPDATE auth.users SET email = $2, email_change = NULL, updated_at = now() WHERE id = $1 AND email_change = $2"
    } else {
        "UPDATE auth.users SET email = $2, email_change = NULL, updated_at = now() WHERE id = $1"
    };
    if c.execute(sql, &[&user, &email])
        .await
        .map_err(email_taken)?
        == 0
    {
        return Ok(false);
    }
    c.execute(
        "UPDATE auth.identities SET email = $2, identity_data = identity_data || jsonb_build_object('email', $2::text), \
           updated_at = now() WHERE user_id = $1 AND provider = 'email'",
        &[&user, &email],
    )
    .await?;
    Ok(true)
}

/// Marks the user's email confirmed (idempotent).
pub async fn confirm_email(c: &Client, id: Uuid) -> AuthResult<()> {
    c.execute(
        "UPDATE auth.users SET email_confirmed_at = coalesce(email_confirmed_at, now()), \
           raw_user_meta_data = raw_user_meta_data || '{\"email_verified\": true}', updated_at = now() WHERE id = $1",
        &[&id],
    )
    .await?;
    c.execute(
        "UPDATE auth.identities SET identity_data = identity_data || '{\"email_verified\": true}', updated_at = now() \
         WHERE user_id = $1 AND provider = 'email'",
        &[&id],
    )
    .await?;
    Ok(())
}

/// Kinds of email token (GoTrue's confirmation / recovery / email_change columns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Sign-up and invite confirmation.
    Confirmation,
    /// Password recovery and magic links.
    Recovery,
    /// A new email address.
    EmailChange,
}

impl TokenKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Confirmation => "confirmation",
            TokenKind::Recovery => "recovery",
            TokenKind::EmailChange => "email_change",
        }
    }
}

/// What an email is sent for, as far as the send interval is concerned. Named by
/// the request alone (never by what the account turns out to be), so the interval
/// answers alike for addresses with and without an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailFlow {
    /// `POST /signup` (confirmation on) and `POST /resend` type signup.
    Signup,
    /// `POST /recover`.
    Recovery,
    /// `POST /otp`: a magic link, or a sign-up confirmation for a new address.
    Otp,
    /// `POST /invite`.
    Invite,
    /// `PUT /user` with a new email and `POST /resend` type email_change.
    EmailChange,
}

impl MailFlow {
    /// Stored name (`auth.email_send_times.flow`).
    pub fn as_str(self) -> &'static str {
        match self {
            MailFlow::Signup => "signup",
            MailFlow::Recovery => "recovery",
            MailFlow::Otp => "otp",
            MailFlow::Invite => "invite",
            MailFlow::EmailChange => "email_change",
        }
    }
}

/// Claims the right to mail `address` for `flow` now: refuses (429
/// `over_email_send_rate_limit`, with Retry-After) a second request within
/// `email_min_interval_secs`, else records the time. Keyed by the address's hash
/// and recorded whether or not an account has the address, so the answer never
/// tells the two apart; call it before looking the address up. Runs in the flow's
/// transaction: a flow that fails later does not use up the slot.
pub async fn claim_send_slot(
    st: &AppState,
    c: &Client,
    address: &str,
    flow: MailFlow,
) -> AuthResult<()> {
    let secs = st.config.auth.email_min_interval_secs as f64;
    if secs <= 0.0 {
        return Ok(());
    }
    let key = tokens::sha256_hex(address);
    // One statement: concurrent requests for one address serialise on its row.
    // `extract` answers numeric (PostgreSQL 14+): cast to float8 for the f64.
    let row = c
        .query_one(
            "WITH claim AS ( \
               INSERT INTO auth.email_send_times AS t (address_hash, flow, sent_at) VALUES ($1, $2, now()) \
               ON CONFLICT (address_hash, flow) DO UPDATE SET sent_at = now() \
                 WHERE t.sent_at <= now() - make_interval(secs => $3::float8) \
               RETURNING true) \
             SELECT EXISTS (SELECT 1 FROM claim), \
               (SELECT ceil($3::float8 - extract(epoch FROM now() - sent_at)::float8) \
                  FROM auth.email_send_times WHERE address_hash = $1 AND flow = $2)",
            &[&key, &flow.as_str(), &secs],
        )
        .await?;
    if row.get::<_, bool>(0) {
        return Ok(());
    }
    let wait = row.get::<_, Option<f64>>(1).unwrap_or(secs).max(1.0) as u64;
    Err(AuthApiError::new(
        429,
        "over_email_send_rate_limit",
        format!("For security purposes, you can only request this after {wait} seconds."),
    )
    .retry_after(wait))
}

/// Sets a user's password, the one way both the user (`PUT /user`) and an admin
/// (`PUT /admin/users/{id}`) do it: whoever knew the old password, or holds a
/// link or code mailed before, is shut out. Ends every session but `keep` (the
/// caller's own, for a user changing their password) and deletes every pending
/// email link and code of the user.
pub async fn set_password(
    c: &Client,
    user: Uuid,
    hash: &str,
    keep: Option<Uuid>,
    ip: &str,
) -> AuthResult<()> {
    c.execute(
        "UPDATE auth.users SET encrypted_password = $2, updated_at = now() WHERE id = $1",
        &[&user, &hash],
    )
    .await?;
    c.execute(
        "DELETE FROM auth.sessions WHERE user_id = $1 AND ($2::uuid IS NULL OR id <> $2)",
        &[&user, &keep],
    )
    .await?;
    c.execute(
        "DELETE FROM auth.one_time_tokens WHERE user_id = $1",
        &[&user],
    )
    .await?;
    audit(c, "user_updated_password", Some(user), "", ip, json!({})).await
}

/// Issues an email token (replacing older ones of the same kind): returns the
/// 6-digit code and the link token. Only their hashes are stored.
pub async fn issue_email_token(
    c: &Client,
    user: Uuid,
    kind: TokenKind,
    relates_to: &str,
    flow: Option<Uuid>,
) -> AuthResult<(String, String)> {
    let otp = tokens::new_otp();
    let link_token = tokens::new_link_token(flow.is_some());
    c.execute(
        "DELETE FROM auth.one_time_tokens WHERE user_id = $1 AND token_type = $2",
        &[&user, &kind.as_str()],
    )
    .await?;
    c.execute(
        "INSERT INTO auth.one_time_tokens (user_id, token_type, token_hash, otp_hash, relates_to, flow_state_id) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&user, &kind.as_str(), &tokens::sha256_hex(&link_token), &tokens::otp_hash(relates_to, &otp), &relates_to, &flow],
    )
    .await?;
    let col = match kind {
        TokenKind::Confirmation => "confirmation_sent_at",
        TokenKind::Recovery => "recovery_sent_at",
        TokenKind::EmailChange => "email_change_sent_at",
    };
    c.execute(
        &format!("UPDATE auth.users SET {col} = now() WHERE id = $1"),
        &[&user],
    )
    .await?;
    Ok((otp, link_token))
}

/// An account nobody has confirmed yet may have been created by someone who does
/// not own the address. Before such an account is handed to the mailbox owner
/// through a flow other than its own sign-up confirmation, the password and
/// metadata set before confirmation are dropped (pre-account takeover).
pub async fn forget_unconfirmed_credentials(c: &Client, user: Uuid) -> AuthResult<()> {
    c.execute(
        "UPDATE auth.users SET encrypted_password = NULL, raw_user_meta_data = '{}', updated_at = now() \
         WHERE id = $1 AND email_confirmed_at IS NULL",
        &[&user],
    )
    .await?;
    Ok(())
}

/// The one path every email with a link takes (after the flow has claimed its
/// send slot with [`claim_send_slot`]): a fresh single-use token, the PKCE flow when the request carried a challenge,
/// the verify link (`redirect_to` already allow-listed) and the rendered mail.
pub async fn prepare_email(
    st: &AppState,
    c: &Client,
    user: Uuid,
    template: Template,
    to: &str,
    pkce: Option<&(String, String)>,
    redirect_to: &str,
) -> AuthResult<Mail> {
    let (kind, flow) = match template {
        Template::Confirmation => (TokenKind::Confirmation, "email/signup"),
        Template::Invite => (TokenKind::Confirmation, "invite"),
        Template::Recovery => (TokenKind::Recovery, "recovery"),
        Template::MagicLink => (TokenKind::Recovery, "magiclink"),
        Template::EmailChange => (TokenKind::EmailChange, "email_change"),
    };
    let flow = match pkce {
        Some(p) => Some(create_flow(c, user, p, flow).await?),
        None => None,
    };
    let (otp, link_token) = issue_email_token(c, user, kind, to, flow).await?;
    let link = verify_link(st, &link_token, template.verify_type(), redirect_to);
    Ok(mail::render(template, to, &link, &otp))
}

/// Starts a PKCE flow for `user` and returns its id (the emailed link is bound to
/// it); the auth code is handed out once the link is followed.
pub async fn create_flow(
    c: &Client,
    user: Uuid,
    pkce: &(String, String),
    method: &str,
) -> AuthResult<Uuid> {
    let row = c
        .query_one(
            "INSERT INTO auth.flow_state (user_id, auth_code, code_challenge, code_challenge_method, authentication_method) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            // A placeholder until the link is followed (auth codes are stored as
            // hashes; this one is never handed out).
            &[&user, &tokens::sha256_hex(&Uuid::new_v4().to_string()), &pkce.0, &pkce.1, &method],
        )
        .await?;
    Ok(row.get(0))
}

/// Appends to `auth.audit_log_entries` (never secrets: ids, emails, actions).
pub async fn audit(
    c: &Client,
    action: &str,
    actor: Option<Uuid>,
    username: &str,
    ip: &str,
    traits: Value,
) -> AuthResult<()> {
    let mut payload = Map::new();
    payload.insert("action".into(), json!(action));
    payload.insert(
        "actor_id".into(),
        json!(actor.map(|a| a.to_string()).unwrap_or_default()),
    );
    payload.insert("actor_username".into(), json!(username));
    payload.insert("log_type".into(), json!(log_type(action)));
    payload.insert("traits".into(), traits);
    c.execute(
        "INSERT INTO auth.audit_log_entries (payload, ip_address) VALUES ($1, $2)",
        &[&Value::Object(payload), &ip],
    )
    .await?;
    Ok(())
}

fn log_type(action: &str) -> &'static str {
    match action {
        "login" | "login_failed" | "logout" | "token_refreshed" | "token_revoked" => "token",
        "user_signedup"
        | "user_invited"
        | "user_deleted"
        | "user_modified"
        | "user_updated_password" => "user",
        _ => "account",
    }
}

/// The link in an email: `{external}/auth/v1/verify?token=…&type=…&redirect_to=…`.
pub fn verify_link(
    st: &AppState,
    link_token: &str,
    verify_type: &str,
    redirect_to: &str,
) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("token", link_token)
        .append_pair("type", verify_type)
        .append_pair("redirect_to", redirect_to)
        .finish();
    format!("{}/auth/v1/verify?{q}", st.auth.external_url)
}

/// For user endpoints: the token's session must still exist (GoTrue's rule: after
/// logout the access token stops working here even before it expires) and the
/// user must too. Returns the user object, rendered as JSON. One statement, one
/// round trip, is what every `getUser()` costs: it checks session, user and ban
/// and reads the row version; the rendering comes from [`super::user_cache`]
/// unless that version is new to this node (then a second statement renders it).
pub async fn load_session_user(
    st: &AppState,
    user_id: Uuid,
    session_id: Option<Uuid>,
) -> AuthResult<Bytes> {
    let c = st.auth.session_conns.client(&st.auth.pool).await?;
    let stmt = c
        .prepare_cached(
            "SELECT (u.xmin::text)::bigint, $2::uuid IS NULL OR EXISTS (SELECT 1 FROM auth.sessions s \
               WHERE s.id = $2 AND s.user_id = u.id AND (s.not_after IS NULL OR s.not_after > now())), \
               coalesce(u.banned_until > now(), false) \
             FROM auth.users u WHERE u.id = $1 AND u.deleted_at IS NULL",
        )
        .await?;
    let user_not_found = || {
        AuthApiError::new(
            403,
            "user_not_found",
            "User from sub claim in JWT does not exist",
        )
    };
    let row = c
        .query_opt(&stmt, &[&user_id, &session_id])
        .await?
        .ok_or_else(user_not_found)?;
    if row.get::<_, bool>(2) {
        return Err(AuthApiError::new(403, "user_banned", "User is banned"));
    }
    if !row.get::<_, bool>(1) {
        return Err(AuthApiError::new(
            403,
            "session_not_found",
            "Session from session_id claim in JWT does not exist",
        ));
    }
    if let Some(json) = st.auth.user_cache.get(user_id, row.get(0)) {
        return Ok(json);
    }
    let stmt = c
        .prepare_cached(
            "SELECT (u.xmin::text)::bigint, auth.user_json(u)::text FROM auth.users u \
             WHERE u.id = $1 AND u.deleted_at IS NULL",
        )
        .await?;
    let row = c
        .query_opt(&stmt, &[&user_id])
        .await?
        .ok_or_else(user_not_found)?;
    let json = Bytes::from(row.get::<_, String>(1));
    st.auth.user_cache.put(user_id, row.get(0), json.clone());
    Ok(json)
}
