//! `POST /auth/v1/token?grant_type=password|refresh_token|pkce`.

use super::ctx::{
    body, ip_limit, password_failures_limited, rate_limit, record_password_failure, IdTokenCaller,
    Keyed, Meta,
};
use super::error::{AuthApiError, AuthResult};
use super::{external, id_token, session, tokens, users};
use crate::server::state::AppState;
use axum::extract::State;
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Body {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    auth_code: Option<String>,
    code_verifier: Option<String>,
}

/// `POST /token`: one route for every grant, as GoTrue's. `caller` is the
/// bearer's user, which only `id_token` with `link_identity` looks at.
pub async fn token(
    State(st): State<AppState>,
    _k: Keyed,
    meta: Meta,
    caller: IdTokenCaller,
    raw: Bytes,
) -> AuthResult<Json<Value>> {
    if let Some(caller) = caller.0 {
        let b: id_token::Body = body(&raw)?;
        return id_token::grant(&st, &meta, b, caller).await.map(Json);
    }
    let b: Body = body(&raw)?;
    match meta.query.get("grant_type").map(String::as_str) {
        Some("password") => password(&st, &meta, b).await.map(Json),
        Some("refresh_token") => {
            let t = b
                .refresh_token
                .filter(|t| !t.is_empty())
                .ok_or_else(|| AuthApiError::validation("refresh_token required"))?;
            session::refresh(&st, t, &meta).await.map(Json)
        }
        Some("pkce") => pkce(&st, &meta, b).await.map(Json),
        _ => Err(AuthApiError::new(
            400,
            "invalid_credentials",
            "unsupported_grant_type",
        )),
    }
}

fn invalid() -> AuthApiError {
    AuthApiError::new(400, "invalid_credentials", "Invalid login credentials")
}

/// Unknown email and wrong password give the same answer after the same work
/// (a dummy hash is verified for unknown users).
async fn password(st: &AppState, meta: &Meta, b: Body) -> AuthResult<Value> {
    if b.phone.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(AuthApiError::new(
            422,
            "phone_provider_disabled",
            "Phone logins are disabled",
        ));
    }
    let email = users::normalize_email(b.email.as_deref())?;
    let pw = b.password.unwrap_or_default();
    ip_limit(st, meta)?;
    password_failures_limited(st, &email)?;
    let e = email.clone();
    let found = users::tx(st, move |c| {
        Box::pin(async move { users::find_by_email(c, &e).await })
    })
    .await?;
    let stored = found.as_ref().and_then(|u| u.password_hash.clone());
    let ok = st.auth.hasher.verify(pw, stored).await?;
    let (Some(user), true) = (found, ok) else {
        record_password_failure(st, &email);
        let (ip, e) = (meta.ip.clone(), email.clone());
        users::tx(st, move |c| {
            Box::pin(async move {
                users::audit(
                    c,
                    "login_failed",
                    None,
                    &e,
                    &ip,
                    json!({"provider": "email"}),
                )
                .await
            })
        })
        .await?;
        return Err(invalid());
    };
    if user.banned {
        return Err(AuthApiError::new(400, "user_banned", "User is banned"));
    }
    if !user.confirmed {
        return Err(AuthApiError::new(
            400,
            "email_not_confirmed",
            "Email not confirmed",
        ));
    }
    let (s, meta) = (st.clone(), meta.clone());
    users::tx(st, move |c| {
        Box::pin(async move {
            let out = session::create(&s, c, user.id, "password", &meta).await?;
            users::audit(
                c,
                "login",
                Some(user.id),
                &email,
                &meta.ip,
                json!({"provider": "email"}),
            )
            .await?;
            Ok(out)
        })
    })
    .await
}

/// Exchanges a PKCE auth code (issued by a verified email link) for a session.
async fn pkce(st: &AppState, meta: &Meta, b: Body) -> AuthResult<Value> {
    let (code, verifier) = match (
        b.auth_code.filter(|s| !s.is_empty()),
        b.code_verifier.filter(|s| !s.is_empty()),
    ) {
        (Some(c), Some(v)) => (c, v),
        _ => {
            return Err(AuthApiError::validation(
                "invalid request: both auth code and code verifier should be non-empty",
            ))
        }
    };
    rate_limit(st, meta, None)?;
    let (s, meta) = (st.clone(), meta.clone());
    users::tx(st, move |c| {
        Box::pin(async move {
            let row = c
                .query_opt(
                    "SELECT id, user_id, code_challenge, code_challenge_method, authentication_method, \
                            coalesce(auth_code_issued_at, created_at) < now() - interval '10 minutes', \
                            provider_tokens_sealed, pending_identity \
                     FROM auth.flow_state WHERE auth_code = $1 AND auth_code_issued_at IS NOT NULL FOR UPDATE",
                    &[&tokens::sha256_hex(&code)],
                )
                .await?;
            let Some(row) = row else {
                return Err(AuthApiError::new(404, "flow_state_not_found", "invalid flow state, no valid flow state found"));
            };
            let (flow_id, user_id): (Uuid, Option<Uuid>) = (row.get(0), row.get(1));
            let (challenge, method, auth_method, expired): (String, String, String, bool) = (row.get(2), row.get(3), row.get(4), row.get(5));
            let Some(user_id) = user_id else {
                return Err(AuthApiError::new(404, "flow_state_not_found", "invalid flow state, no valid flow state found"));
            };
            if expired {
                return Err(AuthApiError::new(422, "flow_state_expired", "invalid flow state, flow state has expired"));
            }
            if !tokens::pkce_matches(&method, &challenge, &verifier) {
                return Err(AuthApiError::new(400, "bad_code_verifier", "code challenge does not match previously saved code verifier"));
            }
            c.execute("DELETE FROM auth.flow_state WHERE id = $1", &[&flow_id]).await?;
            let pending: Option<Value> = row.get(7);
            if let Some(p) = pending {
                external::finish_link(&s, c, user_id, &p, &meta).await?;
            }
            let mut out = session::create(&s, c, user_id, &auth_method, &meta).await?;
            // An OAuth flow's provider tokens, sealed with this code (GoTrue's
            // provider_token / provider_refresh_token).
            let sealed: Option<String> = row.get(6);
            if let Some(v) = sealed.and_then(|t| tokens::open(&code, external::SEAL_PROVIDER_TOKENS, &t)) {
                if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&v) {
                    for (k, v) in m {
                        if v.as_str().is_some_and(|s| !s.is_empty()) {
                            out[k.as_str()] = v;
                        }
                    }
                }
            }
            users::audit(c, "login", Some(user_id), "", &meta.ip, json!({"provider": if auth_method == "oauth" { "oauth" } else { "email" }, "flow": "pkce"})).await?;
            Ok(out)
        })
    })
    .await
}
