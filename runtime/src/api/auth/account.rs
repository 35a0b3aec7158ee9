//! The signed-in user's own endpoints: `GET|PUT /auth/v1/user`, `POST /auth/v1/logout`.

use super::ctx::{body, Meta, UserCaller};
use super::error::{AuthApiError, AuthResult};
use super::mail::{self, Template};
use super::{identities, redirect, tokens, users};
use crate::server::state::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use users::MailFlow;

/// The user object goes out as PostgreSQL rendered it (cached per row version):
/// no parse and re-serialise on the hottest auth path.
pub async fn get_user(State(st): State<AppState>, u: UserCaller) -> AuthResult<Response> {
    let json = users::load_session_user(&st, u.user_id, u.session_id).await?;
    Ok(([(http::header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// `scope=global` (default) ends every session of the user, `local` this one,
/// `others` all but this one. Refresh tokens go with their sessions.
pub async fn logout(State(st): State<AppState>, u: UserCaller, meta: Meta) -> AuthResult<Response> {
    let scope = meta
        .query
        .get("scope")
        .map(String::as_str)
        .unwrap_or("global")
        .to_string();
    if !matches!(scope.as_str(), "global" | "local" | "others") {
        return Err(AuthApiError::validation("Unsupported logout scope"));
    }
    users::load_session_user(&st, u.user_id, u.session_id).await?;
    let (user_id, session_id, ip) = (u.user_id, u.session_id, meta.ip.clone());
    users::tx(&st, move |c| {
        Box::pin(async move {
            match (scope.as_str(), session_id) {
                ("local", Some(s)) => {
                    c.execute("DELETE FROM auth.sessions WHERE id = $1", &[&s])
                        .await?
                }
                ("others", Some(s)) => {
                    c.execute(
                        "DELETE FROM auth.sessions WHERE user_id = $1 AND id <> $2",
                        &[&user_id, &s],
                    )
                    .await?
                }
                _ => {
                    c.execute("DELETE FROM auth.sessions WHERE user_id = $1", &[&user_id])
                        .await?
                }
            };
            users::audit(c, "logout", Some(user_id), "", &ip, json!({"scope": scope})).await
        })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UpdateBody {
    email: Option<String>,
    password: Option<String>,
    data: Option<Value>,
    app_metadata: Option<Value>,
    phone: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// `data` merges into user_metadata; `password` changes it, ends the user's
/// other sessions and voids pending email links and codes ([`users::set_password`]);
/// `email` starts an email change (confirmed through the new address; an address
/// another account has gets the same answer and no mail). `app_metadata` is for admins only (403 `not_admin`).
pub async fn update_user(
    State(st): State<AppState>,
    u: UserCaller,
    meta: Meta,
    raw: Bytes,
) -> AuthResult<Json<Value>> {
    let b: UpdateBody = body(&raw)?;
    let current: Value =
        serde_json::from_slice(&users::load_session_user(&st, u.user_id, u.session_id).await?)
            .map_err(|e| AuthApiError::internal(format!("user object: {e}")))?;
    if b.app_metadata.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(AuthApiError::new(
            403,
            "not_admin",
            "Only admins may update app_metadata",
        ));
    }
    if b.phone.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(AuthApiError::new(
            422,
            "phone_provider_disabled",
            "Phone is not supported",
        ));
    }
    if current["is_anonymous"] == json!(true)
        && b.password.as_deref().is_some_and(|p| !p.is_empty())
        && b.email.as_deref().unwrap_or("").is_empty()
        && current["email"].as_str().unwrap_or("").is_empty()
    {
        return Err(AuthApiError::new(
            422,
            "validation_failed",
            "Updating password of an anonymous user without an email or phone is not allowed",
        ));
    }
    let new_hash = match b.password.filter(|p| !p.is_empty()) {
        Some(pw) => {
            users::check_password(&st, &pw)?;
            let uid = u.user_id;
            let old: Option<String> = users::tx(&st, move |c| {
                Box::pin(async move {
                    Ok(c.query_one(
                        "SELECT encrypted_password FROM auth.users WHERE id = $1",
                        &[&uid],
                    )
                    .await?
                    .get(0))
                })
            })
            .await?;
            if old.is_some() && st.auth.hasher.verify(pw.clone(), old).await? {
                return Err(AuthApiError::new(
                    422,
                    "same_password",
                    "New password should be different from the old password.",
                ));
            }
            Some(st.auth.hasher.hash(pw).await?)
        }
        None => None,
    };
    let new_email = match b.email.as_deref().filter(|e| !e.is_empty()) {
        Some(e) => {
            let e = users::normalize_email(Some(e))?;
            (current["email"].as_str() != Some(e.as_str())).then_some(e)
        }
        None => None,
    };
    let pkce = tokens::pkce_params(
        b.code_challenge.as_deref(),
        b.code_challenge_method.as_deref(),
    )
    .map_err(AuthApiError::validation)?;
    let data = b.data.filter(|d| !d.is_null());
    if data.as_ref().is_some_and(|d| !d.is_object()) {
        return Err(AuthApiError::validation("data must be a JSON object"));
    }
    if let Some(d) = &data {
        super::ctx::reject_nul(d, "data")?;
    }
    let redirect_to = redirect::resolve(&st.config.auth, meta.redirect_to());
    let guest = current["is_anonymous"] == json!(true);
    let (s, uid, sid, ip) = (st.clone(), u.user_id, u.session_id, meta.ip.clone());
    let (user, mail) = users::tx(&st, move |c| {
        Box::pin(async move {
            let mut mail = None;
            if let Some(d) = data {
                let cur: Value = c.query_one("SELECT raw_user_meta_data FROM auth.users WHERE id = $1 FOR UPDATE", &[&uid]).await?.get(0);
                let merged = users::merge_metadata(&cur, &d);
                c.execute("UPDATE auth.users SET raw_user_meta_data = $2, updated_at = now() WHERE id = $1", &[&uid, &merged])
                    .await?;
            }
            if let Some(h) = new_hash {
                users::set_password(c, uid, &h, sid, &ip).await?;
            }
            if let (Some(e), true) = (&new_email, guest && s.auth.autoconfirm) {
                // A guest's first address, with confirmation off (as sign-up):
                // theirs at once, and the guest becomes a permanent user.
                users::set_email(c, uid, e, false).await?;
                users::confirm_email(c, uid).await?;
                identities::make_permanent(c, uid, e).await?;
            } else if let Some(e) = new_email {
                users::claim_send_slot(&s, c, &e, MailFlow::EmailChange).await?;
                c.execute("UPDATE auth.users SET email_change = $2, updated_at = now() WHERE id = $1", &[&uid, &e]).await?;
                if users::find_by_email(c, &e).await?.is_some() {
                    // Taken: the same answer as for a free address (no account
                    // enumeration), but no mail, and no link that could confirm it.
                    c.execute(
                        "DELETE FROM auth.one_time_tokens WHERE user_id = $1 AND token_type = 'email_change'",
                        &[&uid],
                    )
                    .await?;
                    c.execute("UPDATE auth.users SET email_change_sent_at = now() WHERE id = $1", &[&uid]).await?;
                } else {
                    let m = users::prepare_email(&s, c, uid, Template::EmailChange, &e, pkce.as_ref(), &redirect_to).await?;
                    mail = Some(m);
                }
            }
            users::audit(c, "user_modified", Some(uid), "", &ip, json!({})).await?;
            let user = users::user_json(c, uid).await?.ok_or_else(|| AuthApiError::new(403, "user_not_found", "User not found"))?;
            Ok((user, mail))
        })
    })
    .await?;
    if let Some(m) = mail {
        mail::deliver(&st, m).await?;
    }
    Ok(Json(user))
}
