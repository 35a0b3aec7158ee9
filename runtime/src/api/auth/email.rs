//! Email flows: `POST /recover`, `POST /otp` (magic link + code), `POST /resend`,
//! and `GET|POST /verify`, which consumes a link token or OTP code.
//!
//! Unknown addresses get the same answer as known ones on recover, otp and resend
//! (no account enumeration): the same 200 `{}`, the same 429 within
//! `email_min_interval_secs` (tracked per address, not per account), and no wait
//! on the SMTP server (see [`mail::deliver`]). Tokens are single use and expire
//! after `otp_ttl_secs`; a code dies after 5 wrong guesses, counted in the
//! transaction that checks it. With PKCE (a `code_challenge` on the request) the verified link
//! redirects with `?code=` for `grant_type=pkce` instead of carrying tokens.

use super::ctx::{body, rate_limit, Keyed, Meta};
use super::error::{AuthApiError, AuthResult};
use super::mail::{self, Template};
use super::{redirect, session, tokens, users};
use crate::server::state::AppState;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_postgres::Client;
use users::{MailFlow, NewUser, TokenKind};
use uuid::Uuid;

#[derive(Deserialize, Default)]
#[serde(default)]
struct EmailBody {
    email: Option<String>,
    phone: Option<String>,
    create_user: Option<bool>,
    data: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

fn ok_empty() -> Json<Value> {
    Json(json!({}))
}

async fn send(st: &AppState, mail: Option<mail::Mail>) -> AuthResult<()> {
    match mail {
        Some(m) => mail::deliver(st, m).await,
        None => Ok(()),
    }
}

/// `POST /recover`: a password-reset link for a known address; `{}` either way.
pub async fn recover(
    State(st): State<AppState>,
    _k: Keyed,
    meta: Meta,
    raw: Bytes,
) -> AuthResult<Json<Value>> {
    let b: EmailBody = body(&raw)?;
    let email = users::normalize_email(b.email.as_deref())?;
    let pkce = tokens::pkce_params(
        b.code_challenge.as_deref(),
        b.code_challenge_method.as_deref(),
    )
    .map_err(AuthApiError::validation)?;
    rate_limit(&st, &meta, Some(&email))?;
    let redirect_to = redirect::resolve(&st.config.auth, meta.redirect_to());
    let (s, ip) = (st.clone(), meta.ip.clone());
    let mail = users::tx(&st, move |c| {
        Box::pin(async move {
            users::claim_send_slot(&s, c, &email, MailFlow::Recovery).await?;
            let Some(u) = users::find_by_email(c, &email).await? else {
                return Ok(None);
            };
            let mail = users::prepare_email(
                &s,
                c,
                u.id,
                Template::Recovery,
                &email,
                pkce.as_ref(),
                &redirect_to,
            )
            .await?;
            users::audit(
                c,
                "user_recovery_requested",
                Some(u.id),
                &email,
                &ip,
                json!({}),
            )
            .await?;
            Ok(Some(mail))
        })
    })
    .await?;
    send(&st, mail).await?;
    Ok(ok_empty())
}

/// `POST /otp`: a magic link + code. An unknown address signs up; an unconfirmed
/// one gets the sign-up confirmation instead (GoTrue's behaviour). With
/// `create_user: false` (or sign-ups disabled) an unknown address gets the same
/// 200 `{}` and no mail, where GoTrue answers 422 `otp_disabled` and so tells
/// which addresses have accounts.
pub async fn otp(
    State(st): State<AppState>,
    _k: Keyed,
    meta: Meta,
    raw: Bytes,
) -> AuthResult<Json<Value>> {
    let b: EmailBody = body(&raw)?;
    if b.phone.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(AuthApiError::new(
            422,
            "phone_provider_disabled",
            "Phone sign-ins are disabled",
        ));
    }
    let create = b.create_user.unwrap_or(true);
    let email = users::normalize_email(b.email.as_deref())?;
    let data = users::object_or_empty(b.data, "data")?;
    let pkce = tokens::pkce_params(
        b.code_challenge.as_deref(),
        b.code_challenge_method.as_deref(),
    )
    .map_err(AuthApiError::validation)?;
    rate_limit(&st, &meta, Some(&email))?;
    let redirect_to = redirect::resolve(&st.config.auth, meta.redirect_to());
    let (s, ip) = (st.clone(), meta.ip.clone());
    let (autoconfirm, signup_off) = (st.auth.autoconfirm, st.config.auth.disable_signup);
    let mail = users::tx(&st, move |c| {
        Box::pin(async move {
            users::claim_send_slot(&s, c, &email, MailFlow::Otp).await?;
            let (id, confirmed) = match users::find_by_email(c, &email).await? {
                Some(u) => {
                    if !u.confirmed {
                        users::forget_unconfirmed_credentials(c, u.id).await?;
                    }
                    (u.id, u.confirmed)
                }
                None if !create || signup_off => return Ok(None),
                None => {
                    let new = NewUser {
                        email: &email,
                        password_hash: None,
                        user_metadata: data,
                        app_metadata: json!({}),
                        confirmed: autoconfirm,
                        invited: false,
                        id: None,
                    };
                    let id = users::create_user(c, new).await?;
                    users::audit(
                        c,
                        "user_signedup",
                        Some(id),
                        &email,
                        &ip,
                        json!({"provider": "email"}),
                    )
                    .await?;
                    (id, autoconfirm)
                }
            };
            let template = if confirmed {
                Template::MagicLink
            } else {
                Template::Confirmation
            };
            let mail =
                users::prepare_email(&s, c, id, template, &email, pkce.as_ref(), &redirect_to)
                    .await?;
            Ok(Some(mail))
        })
    })
    .await?;
    send(&st, mail).await?;
    Ok(ok_empty())
}

/// `POST /resend` (`type` signup or email_change): sends the pending link again.
pub async fn resend(
    State(st): State<AppState>,
    _k: Keyed,
    meta: Meta,
    raw: Bytes,
) -> AuthResult<Json<Value>> {
    let b: EmailBody = body(&raw)?;
    let kind = match b.kind.as_deref() {
        Some("signup") => TokenKind::Confirmation,
        Some("email_change") => TokenKind::EmailChange,
        _ => {
            return Err(AuthApiError::validation(
                "Missing one of these types: signup, email_change",
            ))
        }
    };
    let email = users::normalize_email(b.email.as_deref())?;
    rate_limit(&st, &meta, Some(&email))?;
    let redirect_to = redirect::resolve(&st.config.auth, meta.redirect_to());
    let s = st.clone();
    let flow = match kind {
        TokenKind::EmailChange => MailFlow::EmailChange,
        _ => MailFlow::Signup,
    };
    let mail = users::tx(&st, move |c| {
        Box::pin(async move {
            users::claim_send_slot(&s, c, &email, flow).await?;
            let Some(u) = users::find_by_email(c, &email).await? else {
                return Ok(None);
            };
            let to = match kind {
                TokenKind::Confirmation if u.confirmed => return Ok(None),
                TokenKind::EmailChange => {
                    let pending: Option<String> = c
                        .query_one(
                            "SELECT email_change FROM auth.users WHERE id = $1",
                            &[&u.id],
                        )
                        .await?
                        .get(0);
                    match pending {
                        Some(p) => p,
                        None => return Ok(None),
                    }
                }
                _ => email.clone(),
            };
            let template = if kind == TokenKind::Confirmation {
                Template::Confirmation
            } else {
                Template::EmailChange
            };
            Ok(Some(
                users::prepare_email(&s, c, u.id, template, &to, None, &redirect_to).await?,
            ))
        })
    })
    .await?;
    send(&st, mail).await?;
    Ok(ok_empty())
}

/// The token kinds a verify `type` may consume.
fn kinds_for(verify_type: &str) -> AuthResult<&'static [TokenKind]> {
    Ok(match verify_type {
        "signup" | "invite" => &[TokenKind::Confirmation],
        "recovery" | "magiclink" => &[TokenKind::Recovery],
        "email" => &[TokenKind::Confirmation, TokenKind::Recovery],
        "email_change" => &[TokenKind::EmailChange],
        _ => {
            return Err(AuthApiError::validation(
                "Verify requires a verification type: signup, invite, recovery, magiclink, email or email_change",
            ))
        }
    })
}

fn invalid_token() -> AuthApiError {
    AuthApiError::new(403, "otp_expired", "Token has expired or is invalid")
}

fn expired() -> AuthApiError {
    AuthApiError::new(403, "otp_expired", "Email link is invalid or has expired")
}

/// How a verification names its token.
enum TokenKey {
    /// SHA-256 of the link token (GET /verify, or `token_hash` in POST).
    Link(String),
    /// The address and the hash of the 6-digit code typed by the user.
    Code { email: String, otp_hash: String },
}

/// Wrong codes a token survives before it is destroyed (10^6 codes, so 5 guesses
/// give an attacker a 1-in-200,000 chance per emailed token).
const MAX_CODE_ATTEMPTS: i32 = 5;

/// What a consumed token was for.
struct Consumed {
    user_id: Uuid,
    /// The PKCE flow the link completes, if it was issued for one.
    flow: Option<Uuid>,
}

/// Consumes a matching, unexpired token and applies it. `Ok(None)`: no live token
/// matches. For a code that is a wrong guess, and it has been counted here, in
/// this transaction (which the caller must commit): the address's tokens are
/// locked first, so parallel guesses queue and each sees the count the ones
/// before it left; no more than [`MAX_CODE_ATTEMPTS`] are ever checked.
async fn consume(
    st: &AppState,
    c: &Client,
    lookup: &TokenKey,
    kinds: &[TokenKind],
) -> AuthResult<Option<Consumed>> {
    let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let ttl = st.config.auth.otp_ttl_secs as f64;
    const RETURNING: &str = "RETURNING user_id, token_type, relates_to, created_at > now() - make_interval(secs => $3), \
         (SELECT u.email_confirmed_at IS NULL FROM auth.users u WHERE u.id = one_time_tokens.user_id), flow_state_id";
    let row = match lookup {
        TokenKey::Link(hash) => {
            c.query_opt(
                &format!(
                    "DELETE FROM auth.one_time_tokens WHERE id = (SELECT id FROM auth.one_time_tokens \
                       WHERE token_hash = $1 AND token_type = ANY($2) LIMIT 1 FOR UPDATE) {RETURNING}"
                ),
                &[hash, &kinds, &ttl],
            )
            .await?
        }
        TokenKey::Code { email, otp_hash } => {
            c.query(
                "SELECT 1 FROM auth.one_time_tokens WHERE relates_to = $1 ORDER BY id FOR UPDATE",
                &[email],
            )
            .await?;
            c.query_opt(
                &format!(
                    "DELETE FROM auth.one_time_tokens WHERE id = (SELECT id FROM auth.one_time_tokens \
                       WHERE relates_to = $1 AND otp_hash = $4 AND token_type = ANY($2) AND failed_attempts < {MAX_CODE_ATTEMPTS} \
                       ORDER BY created_at DESC LIMIT 1 FOR UPDATE) {RETURNING}"
                ),
                &[email, &kinds, &ttl, otp_hash],
            )
            .await?
        }
    };
    let Some(row) = row else {
        if let TokenKey::Code { email, .. } = lookup {
            // A wrong code counts against every live token for the address; a
            // token that has seen MAX_CODE_ATTEMPTS wrong codes is destroyed.
            c.execute(
                "UPDATE auth.one_time_tokens SET failed_attempts = failed_attempts + 1 WHERE relates_to = $1",
                &[email],
            )
            .await?;
            c.execute(
                "DELETE FROM auth.one_time_tokens WHERE relates_to = $1 AND failed_attempts >= $2",
                &[email, &MAX_CODE_ATTEMPTS],
            )
            .await?;
        }
        return Ok(None);
    };
    let (user_id, kind, relates_to, fresh, unconfirmed): (
        Uuid,
        String,
        String,
        bool,
        Option<bool>,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let flow: Option<Uuid> = row.get(5);
    if !fresh {
        return Err(expired());
    }
    if unconfirmed == Some(true) && kind != "confirmation" {
        users::forget_unconfirmed_credentials(c, user_id).await?;
    }
    match kind.as_str() {
        "email_change" => {
            if !users::set_email(c, user_id, &relates_to, true).await? {
                return Err(expired());
            }
            users::confirm_email(c, user_id).await?;
            super::identities::make_permanent(c, user_id, &relates_to).await?;
        }
        _ => users::confirm_email(c, user_id).await?,
    }
    users::audit(
        c,
        "user_verified",
        Some(user_id),
        &relates_to,
        "",
        json!({"type": kind}),
    )
    .await?;
    Ok(Some(Consumed { user_id, flow }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct VerifyBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    email: Option<String>,
    token: Option<String>,
    token_hash: Option<String>,
}

/// `POST /verify`: an OTP code (+ email) or a `token_hash`; returns a session.
pub async fn verify_post(
    State(st): State<AppState>,
    _k: Keyed,
    meta: Meta,
    raw: Bytes,
) -> AuthResult<Json<Value>> {
    let b: VerifyBody = body(&raw)?;
    let vtype = b
        .kind
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AuthApiError::validation("Verify requires a verification type"))?;
    let kinds = kinds_for(&vtype)?;
    let lookup = match (
        b.token.filter(|t| !t.is_empty()),
        b.token_hash.filter(|t| !t.is_empty()),
    ) {
        (Some(code), None) => {
            let email = users::normalize_email(b.email.as_deref()).map_err(|_| {
                AuthApiError::new(
                    422,
                    "validation_failed",
                    "Verify requires an email with a token",
                )
            })?;
            rate_limit(&st, &meta, Some(&email))?;
            let otp_hash = tokens::otp_hash(&email, code.trim());
            TokenKey::Code { email, otp_hash }
        }
        (None, Some(th)) => {
            rate_limit(&st, &meta, None)?;
            TokenKey::Link(tokens::sha256_hex(&th))
        }
        _ => {
            return Err(AuthApiError::validation(
                "Verify requires either a token or a token hash",
            ))
        }
    };
    let (s, m) = (st.clone(), meta.clone());
    let out = users::tx(&st, move |c| {
        Box::pin(async move {
            // No match: commit (a wrong code was counted), then answer 403.
            let Some(done) = consume(&s, c, &lookup, kinds).await? else {
                return Ok(None);
            };
            if let Some(flow) = done.flow {
                // A code typed in completes the PKCE flow directly: no auth code needed.
                c.execute("DELETE FROM auth.flow_state WHERE id = $1", &[&flow])
                    .await?;
            }
            Ok(Some(session::create(&s, c, done.user_id, "otp", &m).await?))
        })
    })
    .await;
    match out {
        Ok(Some(session)) => Ok(Json(session)),
        Ok(None) => Err(invalid_token()),
        Err(e) if e.code == "otp_expired" => Err(invalid_token()),
        Err(e) => Err(e),
    }
}

/// `GET /verify?token&type&redirect_to`: the link in the email. Redirects (303) to
/// the allowed `redirect_to` (else SITE_URL) with the session in the fragment,
/// `?code=` for PKCE, or `#error=…` on failure. Needs no `apikey` (it is followed
/// from a mail client): the route is on the gate's open list.
pub async fn verify_get(State(st): State<AppState>, _k: Keyed, meta: Meta) -> AuthResult<Response> {
    let token = meta.query.get("token").filter(|t| !t.is_empty()).cloned();
    let vtype = meta.query.get("type").filter(|t| !t.is_empty()).cloned();
    let (Some(token), Some(vtype)) = (token, vtype) else {
        return Err(AuthApiError::validation(
            "Verify requires a token and a type",
        ));
    };
    let kinds = kinds_for(&vtype)?;
    let target = redirect::resolve(&st.config.auth, meta.redirect_to());
    if let Err(e) = rate_limit(&st, &meta, None) {
        return Ok(error_redirect(&target, &e));
    }
    let pkce = token.starts_with("pkce_");
    let lookup = TokenKey::Link(tokens::sha256_hex(&token));
    let (s, m, vt) = (st.clone(), meta.clone(), vtype.clone());
    let result = users::tx(&st, move |c| {
        Box::pin(async move {
            let done = consume(&s, c, &lookup, kinds).await?.ok_or_else(expired)?;
            if pkce {
                // The link's own flow (not "the user's latest"), once.
                // The code is made now and stored as its hash: it exists in
                // clear only in this redirect.
                let fresh = uuid::Uuid::new_v4().to_string();
                let code: Option<String> = match done.flow {
                    Some(flow) => c
                        .query_opt(
                            "UPDATE auth.flow_state SET auth_code = $2, auth_code_issued_at = now() \
                             WHERE id = $1 AND auth_code_issued_at IS NULL RETURNING 1",
                            &[&flow, &tokens::sha256_hex(&fresh)],
                        )
                        .await?
                        .map(|_| fresh),
                    None => None,
                };
                let code = code.ok_or_else(|| {
                    AuthApiError::new(
                        404,
                        "flow_state_not_found",
                        "No PKCE flow found for this link",
                    )
                })?;
                return Ok(Err(code));
            }
            Ok(Ok(session::create(&s, c, done.user_id, "otp", &m).await?))
        })
    })
    .await;
    Ok(match result {
        Ok(Ok(session)) => {
            let mut pairs = redirect::session_pairs(&session);
            pairs.push(("type", vt));
            redirect::to_browser(&target, pairs, false, StatusCode::SEE_OTHER)
        }
        Ok(Err(code)) => redirect::with_code(&target, &code, StatusCode::SEE_OTHER),
        Err(e) => error_redirect(&target, &e),
    })
}

fn error_redirect(target: &str, e: &AuthApiError) -> Response {
    redirect::to_browser(
        target,
        redirect::error_pairs(e),
        false,
        StatusCode::SEE_OTHER,
    )
}
