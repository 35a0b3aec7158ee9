//! Provider identities (`auth.identities`): which user a provider's account
//! signs in as, linking and unlinking, and anonymous users becoming permanent.
//!
//! The linking rule is GoTrue's: an identity already known signs in its user;
//! a new one joins the user that owns its e-mail address only when the provider
//! says the address is verified; otherwise it gets a new user, which is given
//! the address only when it is verified. When a verified address joins an
//! account whose own e-mail was never confirmed, that account's password,
//! metadata, other identities and sessions are dropped, so whoever created it
//! without owning the mailbox cannot sign in next to the real owner
//! (pre-account hijacking).

use super::ctx::{Meta, UserCaller};
use super::error::{AuthApiError, AuthResult};
use super::users;
use crate::oauth::ProviderUser;
use crate::server::state::AppState;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

/// The user a provider identity signs in as, creating or linking it per the
/// rule above. `linking`: the signed-in user of `linkIdentity`, who gets the
/// identity (refused when it belongs to someone else).
pub async fn sign_in(
    st: &AppState,
    c: &Client,
    provider: &str,
    pu: &ProviderUser,
    linking: Option<Uuid>,
    meta: &Meta,
) -> AuthResult<Uuid> {
    if pu.id.is_empty() {
        return Err(AuthApiError::new(
            500,
            "unexpected_failure",
            "The provider did not say who the user is",
        ));
    }
    super::ctx::reject_nul(&pu.data, "identity_data")?;
    let known = c
        .query_opt(
            "SELECT user_id FROM auth.identities WHERE provider = $1 AND provider_id = $2 FOR UPDATE",
            &[&provider, &pu.id],
        )
        .await?;
    if let Some(row) = known {
        let owner: Uuid = row.get(0);
        if let Some(target) = linking {
            let message = if target == owner {
                "Identity is already linked"
            } else {
                "Identity is already linked to another user"
            };
            return Err(AuthApiError::new(422, "identity_already_exists", message));
        }
        c.execute(
            "UPDATE auth.identities SET identity_data = $3, email = $4, last_sign_in_at = now(), updated_at = now() \
             WHERE provider = $1 AND provider_id = $2",
            &[&provider, &pu.id, &pu.data, &pu.email],
        )
        .await?;
        // GoTrue refreshes the profile the app sees from the provider's latest.
        c.execute(
            "UPDATE auth.users SET raw_user_meta_data = raw_user_meta_data || $2, updated_at = now() WHERE id = $1",
            &[&owner, &pu.data],
        )
        .await?;
        return Ok(owner);
    }
    let user = match linking {
        Some(u) => u,
        None => match (&pu.email, pu.email_verified) {
            (Some(email), true) => match users::find_by_email(c, email).await? {
                Some(existing) => {
                    if !existing.confirmed {
                        // Whoever made this account never proved the address:
                        // nothing they set up survives (password, metadata,
                        // other identities, sessions), as GoTrue does.
                        users::forget_unconfirmed_credentials(c, existing.id).await?;
                        c.execute(
                            "DELETE FROM auth.identities WHERE user_id = $1",
                            &[&existing.id],
                        )
                        .await?;
                        c.execute(
                            "DELETE FROM auth.sessions WHERE user_id = $1",
                            &[&existing.id],
                        )
                        .await?;
                        users::confirm_email(c, existing.id).await?;
                    }
                    existing.id
                }
                None => create_user(st, c, provider, pu, Some(email)).await?,
            },
            // An address the provider did not verify is never linked on: that
            // would hand the account to whoever controls the provider account.
            (Some(email), false) => {
                let taken = users::find_by_email(c, email).await?.is_some();
                if taken || !st.auth.autoconfirm {
                    // GoTrue's answer. Unlike GoTrue, nothing is kept: no
                    // half-made user waits for a verification that may never come.
                    return Err(AuthApiError::new(
                        422,
                        "provider_email_needs_verification",
                        format!(
                            "Unverified email with {provider}. Verify the email with {provider} in order to sign in"
                        ),
                    ));
                }
                // With autoconfirm (`dev`), the sign-in works, but the address
                // is not given to the user: it would be a confirmed account for
                // an address nobody proved, which its real owner could later
                // land in next to this provider identity.
                create_user(st, c, provider, pu, None).await?
            }
            (None, _) => create_user(st, c, provider, pu, None).await?,
        },
    };
    c.execute(
        "INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, email, last_sign_in_at) \
         VALUES ($1, $2, $3, $4, $5, now())",
        &[&pu.id, &user, &pu.data, &provider, &pu.email],
    )
    .await?;
    if linking.is_some() {
        // A user without an address (a guest) gets the provider's verified one
        // if nobody has it, and a guest given one is a guest no more (GoTrue's
        // rule: `is_anonymous` follows having a confirmed address).
        if let Some(e) = pu.email.as_deref().filter(|_| pu.email_verified) {
            if users::find_by_email(c, e).await?.is_none() {
                c.execute(
                    "UPDATE auth.users SET email = $2, email_confirmed_at = now(), is_anonymous = false, \
                       updated_at = now() WHERE id = $1 AND email IS NULL",
                    &[&user, &e],
                )
                .await?;
            }
        }
    }
    sync_providers(c, user).await?;
    users::audit(
        c,
        if linking.is_some() {
            "identity_linked"
        } else {
            "login"
        },
        Some(user),
        pu.email.as_deref().unwrap_or(""),
        &meta.ip,
        json!({"provider": provider}),
    )
    .await?;
    Ok(user)
}

/// A user made from a provider identity: no password, the provider's profile as
/// `user_metadata`, the e-mail confirmed when the provider verified it.
async fn create_user(
    st: &AppState,
    c: &Client,
    provider: &str,
    pu: &ProviderUser,
    email: Option<&String>,
) -> AuthResult<Uuid> {
    if st.config.auth.disable_signup {
        return Err(AuthApiError::new(
            422,
            "signup_disabled",
            "Signups not allowed for this instance",
        ));
    }
    let app = json!({"provider": provider, "providers": [provider]});
    let row = c
        .query_one(
            "INSERT INTO auth.users (email, raw_user_meta_data, raw_app_meta_data, email_confirmed_at) \
             VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END) RETURNING id",
            &[&email, &pu.data, &app, &(email.is_some() && (pu.email_verified || st.auth.autoconfirm))],
        )
        .await
        .map_err(users::email_taken)?;
    let id: Uuid = row.get(0);
    users::audit(
        c,
        "user_signedup",
        Some(id),
        email.map(String::as_str).unwrap_or(""),
        "",
        json!({"provider": provider}),
    )
    .await?;
    Ok(id)
}

/// Keeps `app_metadata.providers` the user's identities' providers, oldest
/// first, and `provider` the oldest, as GoTrue does.
pub async fn sync_providers(c: &Client, user: Uuid) -> AuthResult<()> {
    c.execute(
        "UPDATE auth.users u SET raw_app_meta_data = u.raw_app_meta_data || jsonb_build_object( \
           'provider', coalesce((SELECT i.provider FROM auth.identities i WHERE i.user_id = u.id \
             ORDER BY i.created_at, i.id LIMIT 1), u.raw_app_meta_data->>'provider'), \
           'providers', coalesce((SELECT jsonb_agg(p.provider ORDER BY p.first) FROM \
             (SELECT i.provider, min(i.created_at) AS first FROM auth.identities i \
               WHERE i.user_id = u.id GROUP BY i.provider) p), '[]'::jsonb)), \
           updated_at = now() \
         WHERE u.id = $1",
        &[&user],
    )
    .await?;
    Ok(())
}

/// An anonymous user whose new e-mail is confirmed becomes permanent: it gets an
/// e-mail identity (so e-mail sign-in works) and loses `is_anonymous`. A no-op
/// for users who are not anonymous.
pub async fn make_permanent(c: &Client, user: Uuid, email: &str) -> AuthResult<()> {
    let n = c
        .execute(
            "UPDATE auth.users SET is_anonymous = false, updated_at = now() WHERE id = $1 AND is_anonymous",
            &[&user],
        )
        .await?;
    if n == 0 {
        return Ok(());
    }
    let data = json!({"sub": user.to_string(), "email": email, "email_verified": true, "phone_verified": false});
    c.execute(
        "INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, email) \
         VALUES ($1, $2, $3, 'email', $4) ON CONFLICT (provider_id, provider) DO NOTHING",
        &[&user.to_string(), &user, &data, &email],
    )
    .await?;
    sync_providers(c, user).await
}

/// `DELETE /user/identities/{id}`: removes one of the caller's identities, never
/// the last (the user could no longer sign in).
pub async fn unlink(
    State(st): State<AppState>,
    u: UserCaller,
    meta: Meta,
    Path(identity): Path<String>,
) -> AuthResult<Json<Value>> {
    if !st.config.auth.manual_linking {
        return Err(manual_linking_disabled());
    }
    users::load_session_user(&st, u.user_id, u.session_id).await?;
    // GoTrue's order and answers: the id's shape, then "at least one left",
    // then whether the identity is the caller's.
    let identity = Uuid::parse_str(&identity)
        .map_err(|_| AuthApiError::new(404, "validation_failed", "identity_id must be an UUID"))?;
    let (uid, ip) = (u.user_id, meta.ip.clone());
    users::tx(&st, move |c| {
        Box::pin(async move {
            // The user's row first: concurrent unlinks of one user serialise here,
            // so two of them cannot both see "another one is left".
            c.execute("SELECT 1 FROM auth.users WHERE id = $1 FOR UPDATE", &[&uid])
                .await?;
            let rows = c
                .query(
                    "SELECT id, provider FROM auth.identities WHERE user_id = $1",
                    &[&uid],
                )
                .await?;
            if rows.len() <= 1 {
                return Err(AuthApiError::new(
                    422,
                    "single_identity_not_deletable",
                    "User must have at least 1 identity after unlinking",
                ));
            }
            let Some(row) = rows.iter().find(|r| r.get::<_, Uuid>(0) == identity) else {
                return Err(AuthApiError::new(
                    422,
                    "identity_not_found",
                    "Identity doesn't exist",
                ));
            };
            let provider: String = row.get(1);
            c.execute("DELETE FROM auth.identities WHERE id = $1", &[&identity])
                .await?;
            sync_providers(c, uid).await?;
            users::audit(
                c,
                "identity_unlinked",
                Some(uid),
                "",
                &ip,
                json!({"provider": provider}),
            )
            .await
        })
    })
    .await?;
    Ok(Json(json!({})))
}

/// GoTrue's answer when `linkIdentity`/`unlinkIdentity` are turned off.
pub fn manual_linking_disabled() -> AuthApiError {
    AuthApiError::new(404, "manual_linking_disabled", "Manual linking is disabled")
}
