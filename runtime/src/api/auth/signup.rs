//! `POST /auth/v1/signup`.
//!
//! With autoconfirm (the dev default) a new user gets a session at once; without
//! it a confirmation email is sent and the bare user object is returned. An
//! existing confirmed email gives 422 `user_already_exists` with autoconfirm, and
//! otherwise a look-alike fake user, so sign-up cannot enumerate accounts when
//! confirmation is on (GoTrue's behaviour).

use super::ctx::{body, rate_limit, Keyed, Meta};
use super::error::{AuthApiError, AuthResult};
use super::mail::{self, Template};
use super::{redirect, session, tokens, users};
use crate::server::state::AppState;
use axum::extract::State;
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use users::NewUser;
use uuid::Uuid;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Body {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    data: Option<Value>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

enum Outcome {
    Session(Value),
    User(Value, Option<mail::Mail>),
}

pub async fn signup(
    State(st): State<AppState>,
    _k: Keyed,
    meta: Meta,
    raw: Bytes,
) -> AuthResult<Json<Value>> {
    let b: Body = body(&raw)?;
    // No address at all: a guest (GoTrue checks this before disable_signup).
    if b.email.as_deref().unwrap_or("").is_empty() && b.phone.as_deref().unwrap_or("").is_empty() {
        return super::anonymous::sign_in(&st, &meta, b.data)
            .await
            .map(Json);
    }
    if st.config.auth.disable_signup {
        return Err(AuthApiError::new(
            422,
            "signup_disabled",
            "Signups not allowed for this instance",
        ));
    }
    if b.phone.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(AuthApiError::new(
            422,
            "phone_provider_disabled",
            "Phone signups are disabled",
        ));
    }
    let password = b
        .password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| AuthApiError::validation("Signup requires a valid password"))?;
    users::check_password(&st, &password)?;
    let pkce = tokens::pkce_params(
        b.code_challenge.as_deref(),
        b.code_challenge_method.as_deref(),
    )
    .map_err(AuthApiError::validation)?;
    let email = users::normalize_email(b.email.as_deref())?;
    let data = users::object_or_empty(b.data, "data")?;
    rate_limit(&st, &meta, Some(&email))?;
    let hash = st.auth.hasher.hash(password).await?;
    let autoconfirm = st.auth.autoconfirm;
    let redirect_to = redirect::resolve(&st.config.auth, meta.redirect_to());

    let s = st.clone();
    let m = meta.clone();
    let outcome = users::tx(&st, move |c| {
        Box::pin(async move {
            if !autoconfirm {
                // Before the lookup: the interval answers alike for every address.
                users::claim_send_slot(&s, c, &email, users::MailFlow::Signup).await?;
            }
            let existing = users::find_by_email(c, &email).await?;
            let user_id = match existing {
                Some(u) if u.confirmed => {
                    if autoconfirm {
                        return Err(AuthApiError::new(
                            422,
                            "user_already_exists",
                            "User already registered",
                        ));
                    }
                    return Ok(Outcome::User(fake_user(&email, &data), None));
                }
                // Unconfirmed (invited, or made by an OTP request): confirming it here
                // would hand the account to whoever typed the address. Only the
                // mailbox owner may confirm it, through a link.
                Some(_) if autoconfirm => {
                    return Err(AuthApiError::new(
                        422,
                        "user_already_exists",
                        "User already registered",
                    ));
                }
                // A second sign-up for an address nobody has confirmed: whoever set
                // the first password may not own the mailbox, so it is dropped; the
                // owner claims the account through the link and sets a password.
                Some(u) => {
                    users::forget_unconfirmed_credentials(c, u.id).await?;
                    u.id
                }
                None => {
                    let id = users::create_user(
                        c,
                        NewUser {
                            email: &email,
                            password_hash: Some(hash),
                            user_metadata: data,
                            app_metadata: json!({}),
                            confirmed: autoconfirm,
                            invited: false,
                            id: None,
                        },
                    )
                    .await?;
                    users::audit(
                        c,
                        "user_signedup",
                        Some(id),
                        &email,
                        &m.ip,
                        json!({"provider": "email"}),
                    )
                    .await?;
                    id
                }
            };
            if autoconfirm {
                return Ok(Outcome::Session(
                    session::create(&s, c, user_id, "password", &m).await?,
                ));
            }
            let mail = users::prepare_email(
                &s,
                c,
                user_id,
                Template::Confirmation,
                &email,
                pkce.as_ref(),
                &redirect_to,
            )
            .await?;
            users::audit(
                c,
                "user_confirmation_requested",
                Some(user_id),
                &email,
                &m.ip,
                json!({"provider": "email"}),
            )
            .await?;
            let user = users::user_json(c, user_id)
                .await?
                .ok_or_else(|| AuthApiError::internal("user vanished"))?;
            Ok(Outcome::User(user, Some(mail)))
        })
    })
    .await?;
    match outcome {
        Outcome::Session(s) => Ok(Json(s)),
        Outcome::User(u, mail) => {
            if let Some(m) = mail {
                mail::deliver(&st, m).await?;
            }
            Ok(Json(u))
        }
    }
}

/// What an existing, confirmed address gets when confirmation is on: the shape of
/// a fresh unconfirmed user (random id, no identities), so it reveals nothing.
fn fake_user(email: &str, data: &Value) -> Value {
    let now = chrono_like_now();
    json!({
        "id": Uuid::new_v4(), "aud": "authenticated", "role": "", "email": email, "phone": "",
        "confirmation_sent_at": now, "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": data, "identities": [], "created_at": now, "updated_at": now, "is_anonymous": false
    })
}

/// "Now" as GoTrue writes a timestamp here: RFC 3339, whole seconds, `Z`.
fn chrono_like_now() -> String {
    wasmbase_host_api::time::rfc3339_seconds(std::time::SystemTime::now())
}
