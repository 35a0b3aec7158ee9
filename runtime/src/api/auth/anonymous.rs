//! Anonymous sign-ins (`supabase.auth.signInAnonymously()`): a real user row
//! with `is_anonymous = true` and no identity, signed in at once. The access
//! token says `is_anonymous`, so row-level security can tell guests apart
//! (`(auth.jwt()->>'is_anonymous')::boolean`). A guest becomes permanent by
//! confirming an e-mail address (`updateUser({ email })`) or linking a
//! provider; guests nobody converted are deleted after
//! `auth.anonymous_max_age_days` by the sweeper.

use super::ctx::{anonymous_limit, Meta};
use super::error::{AuthApiError, AuthResult};
use super::{session, users};
use crate::server::state::AppState;
use serde_json::{json, Value};
use uuid::Uuid;

/// `POST /signup` without an e-mail or phone: a new guest and their session.
pub async fn sign_in(st: &AppState, meta: &Meta, data: Option<Value>) -> AuthResult<Value> {
    if !st.auth.anonymous {
        return Err(AuthApiError::new(
            422,
            "anonymous_provider_disabled",
            "Anonymous sign-ins are disabled",
        ));
    }
    let data = users::object_or_empty(data, "data")?;
    anonymous_limit(st, meta)?;
    if st.config.auth.disable_signup {
        return Err(AuthApiError::new(
            422,
            "signup_disabled",
            "Signups not allowed for this instance",
        ));
    }
    let (s, meta) = (st.clone(), meta.clone());
    users::tx(st, move |c| {
        Box::pin(async move {
            let id: Uuid = c
                .query_one(
                    // GoTrue's guests have empty app_metadata and no identity.
                    "INSERT INTO auth.users (raw_user_meta_data, is_anonymous) VALUES ($1, true) RETURNING id",
                    &[&data],
                )
                .await?
                .get(0);
            users::audit(
                c,
                "user_signedup",
                Some(id),
                "",
                &meta.ip,
                json!({"provider": "anonymous"}),
            )
            .await?;
            session::create(&s, c, id, "anonymous", &meta).await
        })
    })
    .await
}
