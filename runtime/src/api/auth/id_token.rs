//! `POST /token?grant_type=id_token`: native apps (Sign in with Apple, Google
//! One Tap, an OIDC SDK) get an ID token from the provider themselves and trade
//! it here (`signInWithIdToken`). The token is verified against the issuer's
//! published keys (signature, `iss`, `aud` among the provider's client ids,
//! `exp`) and GoTrue's nonce rule; then it signs in like the browser flow.

use super::ctx::{Meta, UserCaller};
use super::error::{AuthApiError, AuthResult};
use super::{identities, session, users};
use crate::oauth::{IdTokenCheck, ProviderError};
use crate::server::state::AppState;
use serde::Deserialize;
use serde_json::Value;

/// The grant's body (auth-js: `provider`, `id_token`, `access_token`, `nonce`,
/// and `link_identity` for `linkIdentity({ token })`).
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Body {
    provider: Option<String>,
    id_token: Option<String>,
    nonce: Option<String>,
    link_identity: Option<bool>,
}

/// Verifies the token and returns the session. `caller`: the bearer's user,
/// needed (and only looked at) when `link_identity` is set.
pub async fn grant(
    st: &AppState,
    meta: &Meta,
    b: Body,
    caller: AuthResult<UserCaller>,
) -> AuthResult<Value> {
    let token = b
        .id_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AuthApiError::validation("id_token required"))?;
    let name = b
        .provider
        .filter(|p| !p.is_empty())
        .map(|p| p.to_ascii_lowercase())
        .ok_or_else(|| AuthApiError::validation("provider or client_id and issuer required"))?;
    let linking = if b.link_identity == Some(true) {
        if !st.config.auth.manual_linking {
            return Err(identities::manual_linking_disabled());
        }
        // No bearer: GoTrue's words; a bad one: the usual token errors.
        let u = caller.map_err(|e| {
            if e.code == "no_authorization" {
                AuthApiError::validation(
                    "Linking requires a valid user access token in Authorization",
                )
            } else {
                e
            }
        })?;
        users::load_session_user(st, u.user_id, u.session_id).await?;
        Some(u.user_id)
    } else {
        None
    };
    let provider = match st.auth.providers.get(&name) {
        Some(p) => p,
        None if st.config.auth.external.contains_key(&name) => {
            return Err(AuthApiError::new(
                400,
                "provider_disabled",
                format!("Provider \"{name}\" is not enabled"),
            ))
        }
        None => {
            return Err(AuthApiError::validation(format!(
                "Custom OIDC provider \"{name}\" not allowed"
            )))
        }
    };
    super::ctx::rate_limit(st, meta, None)?;
    let who = st
        .auth
        .providers
        .user_from_id_token(&provider, &token, IdTokenCheck::Native(b.nonce.as_deref()))
        .await
        .map_err(|e| match e {
            ProviderError::BadIdToken(m) => AuthApiError::new(400, "invalid_credentials", m),
            other => {
                tracing::warn!(provider = %name, error = %other, "auth: verifying an ID token");
                AuthApiError::new(
                    502,
                    "unexpected_failure",
                    "The sign-in provider's keys could not be read",
                )
            }
        })?;
    if who.id.is_empty() {
        return Err(AuthApiError::new(
            400,
            "invalid_credentials",
            "Missing sub claim in id_token",
        ));
    }
    let (s, m) = (st.clone(), meta.clone());
    users::tx(st, move |c| {
        Box::pin(async move {
            let user = identities::sign_in(&s, c, &name, &who, linking, &m).await?;
            session::create(&s, c, user, "oauth", &m).await
        })
    })
    .await
}
