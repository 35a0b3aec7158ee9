//! Sessions: issuing access + refresh tokens, and refresh-token rotation with
//! GoTrue's reuse rules.
//!
//! Rotation: each refresh revokes the presented token and issues a child. Reusing
//! a revoked token within `refresh_token_reuse_interval_secs` (two tabs refreshing
//! at once) returns the session's current token — found by following the chain of
//! sealed children (`child_enc`: each token decrypts its own child, since only
//! hashes are stored) from the presented token down to the one still live. It
//! never mints a second live token, so a token stolen inside the window cannot
//! fork the family (GoTrue does mint one when the presented token is two or more
//! rotations old); if no live token is found, the reuse is refused. Any reuse of
//! a revoked token after the interval ends the whole session (the token family
//! is presumed stolen).
//!
//! Sessions also end by time when configured (GoTrue's session time-box and
//! inactivity timeout); [`super::sweep_once`] deletes what has ended.

use super::ctx::Meta;
use super::error::{AuthApiError, AuthResult};
use super::{tokens, users};
use crate::server::state::AppState;
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Signs the access token of `user` for `session_id`; returns (token, expires_at).
fn access_token(
    st: &AppState,
    user: &Value,
    session_id: Uuid,
    amr: &Value,
) -> AuthResult<(String, i64)> {
    let now = now_secs();
    let exp = now + st.config.auth.access_token_ttl_secs as i64;
    let claims = json!({
        "iss": st.auth.issuer,
        "sub": user["id"],
        // The configured audience, which the key layer checks on every route.
        "aud": if st.config.auth.jwt_audience.is_empty() { user["aud"].clone() } else { json!(st.config.auth.jwt_audience) },
        "exp": exp,
        "iat": now,
        "email": user["email"],
        "phone": user["phone"],
        "app_metadata": user["app_metadata"],
        "user_metadata": user["user_metadata"],
        "role": "authenticated",
        "aal": "aal1",
        "amr": amr,
        "session_id": session_id.to_string(),
        "is_anonymous": user["is_anonymous"],
    });
    let token = st
        .gate
        .jwt()
        .sign(&claims)
        .map_err(AuthApiError::internal)?;
    Ok((token, exp))
}

fn response(st: &AppState, access: String, exp: i64, refresh: String, user: Value) -> Value {
    json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": st.config.auth.access_token_ttl_secs,
        "expires_at": exp,
        "refresh_token": refresh,
        "user": user,
    })
}

/// Creates a session for `user_id` signed in by `method` (GoTrue's amr method:
/// password, otp, magiclink, recovery, email/signup, invite, email_change) and
/// returns GoTrue's session response.
pub async fn create(
    st: &AppState,
    c: &Client,
    user_id: Uuid,
    method: &str,
    meta: &Meta,
) -> AuthResult<Value> {
    // First, so a banned (or deleted) user gets no session by any route: password,
    // email code or link, PKCE exchange.
    let user: Value = c
        .query_opt(
            "UPDATE auth.users u SET last_sign_in_at = now(), updated_at = now() \
             WHERE id = $1 AND deleted_at IS NULL AND NOT coalesce(banned_until > now(), false) \
             RETURNING auth.user_json(u)",
            &[&user_id],
        )
        .await?
        .ok_or_else(|| AuthApiError::new(403, "user_banned", "User is banned"))?
        .get(0);
    let row = c
        .query_one(
            "INSERT INTO auth.sessions (user_id, amr, ip, user_agent) \
             VALUES ($1, jsonb_build_array(jsonb_build_object('method', $2::text, 'timestamp', extract(epoch FROM now())::bigint)), $3, $4) \
             RETURNING id, amr",
            &[&user_id, &method, &meta.ip, &meta.user_agent],
        )
        .await?;
    let (session_id, amr): (Uuid, Value) = (row.get(0), row.get(1));
    let refresh = tokens::new_refresh_token();
    c.execute(
        "INSERT INTO auth.refresh_tokens (token_hash, session_id) VALUES ($1, $2)",
        &[&tokens::sha256_hex(&refresh), &session_id],
    )
    .await?;
    c.execute(
        "UPDATE auth.identities SET last_sign_in_at = now() WHERE user_id = $1 AND provider = 'email'",
        &[&user_id],
    )
    .await?;
    let (access, exp) = access_token(st, &user, session_id, &amr)?;
    Ok(response(st, access, exp, refresh, user))
}

enum Refreshed {
    Session {
        user: Value,
        session_id: Uuid,
        amr: Value,
        refresh: String,
    },
    /// Reuse outside the interval: the session was revoked (and that committed).
    Revoked,
}

/// Most rotations followed from a reused token to the session's live one. Within
/// a reuse interval of seconds, a chain longer than this means a client spinning.
const MAX_CHAIN: usize = 32;

/// The session's live refresh token, reached from the revoked `token` by opening
/// each sealed child in turn (each row locked, so a concurrent rotation is seen
/// once it commits). `None` when the chain ends without a live token.
async fn live_descendant(
    c: &Client,
    session_id: Uuid,
    token: &str,
    child_enc: Option<String>,
) -> AuthResult<Option<String>> {
    let (mut token, mut sealed) = (token.to_string(), child_enc);
    for _ in 0..MAX_CHAIN {
        let Some(child) = sealed
            .as_deref()
            .and_then(|s| tokens::open_child(&token, s))
        else {
            return Ok(None);
        };
        let Some(row) = c
            .query_opt(
                "SELECT revoked, child_enc FROM auth.refresh_tokens \
                 WHERE token_hash = $1 AND session_id = $2 FOR UPDATE",
                &[&tokens::sha256_hex(&child), &session_id],
            )
            .await?
        else {
            return Ok(None);
        };
        let revoked: bool = row.get(0);
        if !revoked {
            return Ok(Some(child));
        }
        (token, sealed) = (child, row.get(1));
    }
    Ok(None)
}

/// `grant_type=refresh_token`.
pub async fn refresh(st: &AppState, presented: String, meta: &Meta) -> AuthResult<Value> {
    if presented.len() < 12 {
        return Err(AuthApiError::validation("Refresh token is not valid"));
    }
    let reuse_secs = st.config.auth.refresh_token_reuse_interval_secs as f64;
    // 0 turns a limit off (GoTrue's default).
    let timebox = st.config.auth.sessions_timebox_secs as f64;
    let inactivity = st.config.auth.sessions_inactivity_timeout_secs as f64;
    let ip = meta.ip.clone();
    let ua = meta.user_agent.clone();
    let outcome = users::tx(st, move |c| {
        Box::pin(async move {
            let row = c
                .query_opt(
                    "SELECT rt.id, rt.revoked, rt.child_enc, rt.session_id, s.user_id, \
                            extract(epoch FROM now() - rt.updated_at)::float8, \
                            (s.not_after IS NOT NULL AND s.not_after <= now()) \
                              OR ($2::float8 > 0 AND s.created_at + make_interval(secs => $2::float8) <= now()), \
                            coalesce(u.banned_until > now(), false), s.amr, \
                            $3::float8 > 0 AND coalesce(s.refreshed_at, s.created_at) + make_interval(secs => $3::float8) <= now() \
                     FROM auth.refresh_tokens rt JOIN auth.sessions s ON s.id = rt.session_id \
                     JOIN auth.users u ON u.id = s.user_id \
                     WHERE rt.token_hash = $1 AND u.deleted_at IS NULL FOR UPDATE OF rt",
                    &[&tokens::sha256_hex(&presented), &timebox, &inactivity],
                )
                .await?;
            let Some(row) = row else {
                return Err(AuthApiError::new(400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"));
            };
            let (id, revoked, child_enc): (i64, bool, Option<String>) = (row.get(0), row.get(1), row.get(2));
            let (session_id, user_id, age): (Uuid, Uuid, f64) = (row.get(3), row.get(4), row.get(5));
            let (expired, banned, amr, idle): (bool, bool, Value, bool) = (row.get(6), row.get(7), row.get(8), row.get(9));
            if banned {
                return Err(AuthApiError::new(400, "user_banned", "User is banned"));
            }
            if expired {
                return Err(AuthApiError::new(400, "session_expired", "Invalid Refresh Token: Session Expired"));
            }
            if idle {
                return Err(AuthApiError::new(400, "session_expired", "Invalid Refresh Token: Session Expired (Inactivity)"));
            }
            let refresh = if revoked {
                if age > reuse_secs {
                    c.execute("DELETE FROM auth.sessions WHERE id = $1", &[&session_id]).await?;
                    users::audit(c, "token_revoked", Some(user_id), "", &ip, json!({"reason": "refresh_token_reuse", "session_id": session_id})).await?;
                    return Ok(Refreshed::Revoked);
                }
                // Within the reuse interval: hand back the session's live token,
                // however many rotations ago the presented one was revoked.
                match live_descendant(c, session_id, &presented, child_enc).await? {
                    Some(live) => live,
                    None => {
                        return Err(AuthApiError::new(400, "refresh_token_already_used", "Invalid Refresh Token: Already Used"));
                    }
                }
            } else {
                let child = tokens::new_refresh_token();
                c.execute(
                    "UPDATE auth.refresh_tokens SET revoked = true, updated_at = now(), child_enc = $2 WHERE id = $1",
                    &[&id, &tokens::seal_child(&presented, &child)],
                )
                .await?;
                c.execute(
                    "INSERT INTO auth.refresh_tokens (token_hash, session_id, parent_id) VALUES ($1, $2, $3)",
                    &[&tokens::sha256_hex(&child), &session_id, &id],
                )
                .await?;
                child
            };
            c.execute(
                "UPDATE auth.sessions SET refreshed_at = now(), updated_at = now(), ip = $2, user_agent = coalesce($3, user_agent) WHERE id = $1",
                &[&session_id, &ip, &ua],
            )
            .await?;
            users::audit(c, "token_refreshed", Some(user_id), "", &ip, json!({"session_id": session_id})).await?;
            let user = users::user_json(c, user_id)
                .await?
                .ok_or_else(|| AuthApiError::new(400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"))?;
            Ok(Refreshed::Session { user, session_id, amr, refresh })
        })
    })
    .await?;
    match outcome {
        Refreshed::Revoked => Err(AuthApiError::new(
            400,
            "refresh_token_already_used",
            "Invalid Refresh Token: Already Used",
        )),
        Refreshed::Session {
            user,
            session_id,
            amr,
            refresh,
        } => {
            let (access, exp) = access_token(st, &user, session_id, &amr)?;
            Ok(response(st, access, exp, refresh, user))
        }
    }
}
