//! Admin endpoints (secret key or service_role JWT): `/admin/users` (paginated
//! list, create, get, update, delete), `/admin/generate_link`, `/invite`.
//! `app_metadata` — where `role` (admin) and `org_id` (tenant) live — is only
//! writable here.

use super::ctx::{body, AdminCaller, Meta};
use super::error::{AuthApiError, AuthResult};
use super::mail::Template;
use super::{redirect, users};
use crate::server::state::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::HeaderValue;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_postgres::Client;
use users::{NewUser, TokenKind};
use uuid::Uuid;

fn actor(p: &wasmbase_host_api::Principal) -> String {
    crate::api::admin::actor(p)
}

fn parse_id(id: &str) -> AuthResult<Uuid> {
    Uuid::parse_str(id)
        .map_err(|_| AuthApiError::new(404, "validation_failed", "user_id must be an UUID"))
}

fn not_found() -> AuthApiError {
    AuthApiError::new(404, "user_not_found", "User not found")
}

fn page_param(meta: &Meta, key: &str, default: i64) -> AuthResult<i64> {
    match meta.query.get(key).map(String::as_str) {
        None | Some("") => Ok(default),
        Some(v) => {
            v.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                AuthApiError::validation(format!("Bad Pagination Parameters: {key}"))
            })
        }
    }
}

/// `GET /admin/users?page=&per_page=`: `{users, aud}` with `X-Total-Count` and a
/// `Link` header in the exact form auth-js parses (`page` first).
pub async fn list(State(st): State<AppState>, _a: AdminCaller, meta: Meta) -> AuthResult<Response> {
    let page = page_param(&meta, "page", 1)?.min(1_000_000);
    let per_page = page_param(&meta, "per_page", 50)?.min(1000);
    let (users, total) = users::tx(&st, move |c| {
        Box::pin(async move {
            let total: i64 = c
                .query_one(
                    "SELECT count(*) FROM auth.users WHERE deleted_at IS NULL",
                    &[],
                )
                .await?
                .get(0);
            let rows = c
                .query(
                    "SELECT auth.user_json(u) FROM auth.users u WHERE deleted_at IS NULL \
                     ORDER BY created_at DESC, id LIMIT $1 OFFSET $2",
                    &[&per_page, &((page - 1) * per_page)],
                )
                .await?;
            Ok((
                rows.iter()
                    .map(|r| r.get::<_, Value>(0))
                    .collect::<Vec<_>>(),
                total,
            ))
        })
    })
    .await?;
    let last = ((total + per_page - 1) / per_page).max(1);
    let mut links = Vec::new();
    if last > page {
        links.push(format!(
            "</admin/users?page={}&per_page={per_page}>; rel=\"next\"",
            page + 1
        ));
    }
    links.push(format!(
        "</admin/users?page={last}&per_page={per_page}>; rel=\"last\""
    ));
    let mut resp = Json(json!({"users": users, "aud": "authenticated"})).into_response();
    let h = resp.headers_mut();
    h.insert("x-total-count", HeaderValue::from(total));
    if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
        h.insert(http::header::LINK, v);
    }
    Ok(resp)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UserBody {
    id: Option<Uuid>,
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    email_confirm: Option<bool>,
    user_metadata: Option<Value>,
    app_metadata: Option<Value>,
    role: Option<String>,
    ban_duration: Option<String>,
}

/// Users always get the `authenticated` role: a different database role in a
/// token is a privilege an API should not hand out.
fn check_role(role: &Option<String>) -> AuthResult<()> {
    match role.as_deref() {
        None | Some("") | Some("authenticated") => Ok(()),
        Some(_) => Err(AuthApiError::validation(
            "role must be 'authenticated'; use app_metadata for app roles",
        )),
    }
}

/// `"none"` clears a ban; otherwise a duration like `24h`.
fn ban_seconds(v: &Option<String>) -> AuthResult<Option<Option<f64>>> {
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some("none") => Ok(Some(None)),
        Some(d) => humantime::parse_duration(d)
            .map(|d| Some(Some(d.as_secs_f64())))
            .map_err(|_| {
                AuthApiError::validation("ban_duration: invalid format (e.g. '24h' or 'none')")
            }),
    }
}

async fn apply_ban(c: &Client, id: Uuid, ban: Option<Option<f64>>) -> AuthResult<()> {
    match ban {
        None => {}
        Some(None) => {
            c.execute(
                "UPDATE auth.users SET banned_until = NULL WHERE id = $1",
                &[&id],
            )
            .await?;
        }
        Some(Some(secs)) => {
            c.execute("UPDATE auth.users SET banned_until = now() + make_interval(secs => $2) WHERE id = $1", &[&id, &secs])
                .await?;
            c.execute("DELETE FROM auth.sessions WHERE user_id = $1", &[&id])
                .await?;
        }
    }
    Ok(())
}

/// `POST /admin/users`.
pub async fn create(
    State(st): State<AppState>,
    AdminCaller(p): AdminCaller,
    meta: Meta,
    raw: Bytes,
) -> AuthResult<Json<Value>> {
    let b: UserBody = body(&raw)?;
    if b.phone.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(AuthApiError::new(
            422,
            "phone_provider_disabled",
            "Phone is not supported",
        ));
    }
    check_role(&b.role)?;
    let email = users::normalize_email(b.email.as_deref())?;
    let user_metadata = users::object_or_empty(b.user_metadata, "user_metadata")?;
    let app_metadata = users::object_or_empty(b.app_metadata, "app_metadata")?;
    let ban = ban_seconds(&b.ban_duration)?;
    let hash = match b.password.filter(|p| !p.is_empty()) {
        Some(pw) => {
            users::check_password(&st, &pw)?;
            Some(st.auth.hasher.hash(pw).await?)
        }
        None => None,
    };
    let (who, ip) = (actor(&p), meta.ip.clone());
    let user = users::tx(&st, move |c| {
        Box::pin(async move {
            let id = users::create_user(
                c,
                NewUser {
                    email: &email,
                    password_hash: hash,
                    user_metadata,
                    app_metadata,
                    confirmed: b.email_confirm.unwrap_or(false),
                    invited: false,
                    id: b.id,
                },
            )
            .await?;
            apply_ban(c, id, ban).await?;
            users::audit(
                c,
                "user_signedup",
                Some(id),
                &email,
                &ip,
                json!({"by": who, "provider": "email"}),
            )
            .await?;
            users::user_json(c, id).await?.ok_or_else(not_found)
        })
    })
    .await?;
    Ok(Json(user))
}

/// `GET /admin/users/{id}`.
pub async fn get(
    State(st): State<AppState>,
    _a: AdminCaller,
    Path(id): Path<String>,
) -> AuthResult<Json<Value>> {
    let id = parse_id(&id)?;
    let u = users::tx(&st, move |c| {
        Box::pin(async move { users::user_json(c, id).await })
    })
    .await?;
    u.map(Json).ok_or_else(not_found)
}

/// `PUT /admin/users/{id}`: metadata merges (null deletes); a new password ends
/// all of the user's sessions and voids pending email links and codes
/// ([`users::set_password`], as when users change their own).
pub async fn update(
    State(st): State<AppState>,
    AdminCaller(p): AdminCaller,
    meta: Meta,
    Path(id): Path<String>,
    raw: Bytes,
) -> AuthResult<Json<Value>> {
    let id = parse_id(&id)?;
    let b: UserBody = body(&raw)?;
    check_role(&b.role)?;
    let email = match b.email.as_deref().filter(|e| !e.is_empty()) {
        Some(e) => Some(users::normalize_email(Some(e))?),
        None => None,
    };
    let ban = ban_seconds(&b.ban_duration)?;
    let hash = match b.password.filter(|p| !p.is_empty()) {
        Some(pw) => {
            users::check_password(&st, &pw)?;
            Some(st.auth.hasher.hash(pw).await?)
        }
        None => None,
    };
    for (v, f) in [
        (&b.user_metadata, "user_metadata"),
        (&b.app_metadata, "app_metadata"),
    ] {
        if v.as_ref().is_some_and(|v| !v.is_null() && !v.is_object()) {
            return Err(AuthApiError::validation(format!(
                "{f} must be a JSON object"
            )));
        }
    }
    let (who, ip) = (actor(&p), meta.ip.clone());
    let user = users::tx(&st, move |c| {
        Box::pin(async move {
            let row = c
                .query_opt(
                    "SELECT raw_user_meta_data, raw_app_meta_data FROM auth.users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
                    &[&id],
                )
                .await?
                .ok_or_else(not_found)?;
            let (um, am): (Value, Value) = (row.get(0), row.get(1));
            let um = b.user_metadata.as_ref().map(|p| users::merge_metadata(&um, p)).unwrap_or(um);
            let am = b.app_metadata.as_ref().map(|p| users::merge_metadata(&am, p)).unwrap_or(am);
            c.execute(
                "UPDATE auth.users SET raw_user_meta_data = $2, raw_app_meta_data = $3, updated_at = now() WHERE id = $1",
                &[&id, &um, &am],
            )
            .await?;
            if let Some(e) = &email {
                users::set_email(c, id, e, false).await?;
            }
            if b.email_confirm == Some(true) {
                users::confirm_email(c, id).await?;
            }
            if let Some(h) = &hash {
                users::set_password(c, id, h, None, &ip).await?;
            }
            apply_ban(c, id, ban).await?;
            users::audit(c, "user_modified", Some(id), "", &ip, json!({"by": who})).await?;
            users::user_json(c, id).await?.ok_or_else(not_found)
        })
    })
    .await?;
    Ok(Json(user))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DeleteBody {
    should_soft_delete: Option<bool>,
}

/// `DELETE /admin/users/{id}`: hard delete cascades to sessions, identities and
/// rows that reference the user with ON DELETE CASCADE; soft delete keeps the row,
/// frees the email and ends the sessions. Answers `{}` like GoTrue.
pub async fn delete(
    State(st): State<AppState>,
    AdminCaller(p): AdminCaller,
    meta: Meta,
    Path(id): Path<String>,
    raw: Bytes,
) -> AuthResult<Json<Value>> {
    let id = parse_id(&id)?;
    let b: DeleteBody = body(&raw)?;
    let (who, ip) = (actor(&p), meta.ip.clone());
    users::tx(&st, move |c| {
        Box::pin(async move {
            let n = if b.should_soft_delete.unwrap_or(false) {
                c.execute("DELETE FROM auth.sessions WHERE user_id = $1", &[&id]).await?;
                c.execute(
                    "UPDATE auth.users SET deleted_at = now(), email = NULL, encrypted_password = NULL, \
                       raw_user_meta_data = '{}' WHERE id = $1 AND deleted_at IS NULL",
                    &[&id],
                )
                .await?
            } else {
                c.execute("DELETE FROM auth.users WHERE id = $1", &[&id]).await?
            };
            if n == 0 {
                return Err(not_found());
            }
            users::audit(c, "user_deleted", Some(id), "", &ip, json!({"by": who, "soft": b.should_soft_delete.unwrap_or(false)})).await
        })
    })
    .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LinkBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    email: Option<String>,
    new_email: Option<String>,
    password: Option<String>,
    data: Option<Value>,
    redirect_to: Option<String>,
}

/// `POST /admin/generate_link`: makes the link an email would carry, without
/// sending it. Answers the user's fields flattened, plus `action_link`,
/// `email_otp`, `hashed_token`, `verification_type`, `redirect_to`.
pub async fn generate_link(
    State(st): State<AppState>,
    AdminCaller(p): AdminCaller,
    meta: Meta,
    raw: Bytes,
) -> AuthResult<Json<Value>> {
    let b: LinkBody = body(&raw)?;
    let email = users::normalize_email(b.email.as_deref())?;
    let kind = b.kind.unwrap_or_default();
    let redirect_to = redirect::resolve(
        &st.config.auth,
        b.redirect_to.as_deref().or(meta.redirect_to()),
    );
    let new_email = match b.new_email.as_deref().filter(|e| !e.is_empty()) {
        Some(e) => Some(users::normalize_email(Some(e))?),
        None => None,
    };
    let data = users::object_or_empty(b.data, "data")?;
    let hash = match b.password.filter(|p| !p.is_empty()) {
        Some(pw) if kind == "signup" => {
            users::check_password(&st, &pw)?;
            Some(st.auth.hasher.hash(pw).await?)
        }
        _ => None,
    };
    if !matches!(
        kind.as_str(),
        "signup"
            | "invite"
            | "magiclink"
            | "recovery"
            | "email_change_current"
            | "email_change_new"
    ) {
        return Err(AuthApiError::validation("Invalid link type: signup, invite, magiclink, recovery, email_change_current or email_change_new"));
    }
    if kind == "signup" && hash.is_none() {
        return Err(AuthApiError::validation("Signup requires a valid password"));
    }
    let (s, who, ip) = (st.clone(), actor(&p), meta.ip.clone());
    let out = users::tx(&st, move |c| {
        Box::pin(async move {
            let existing = users::find_by_email(c, &email).await?;
            let (user_id, vtype, token_kind, relates_to) = match (kind.as_str(), existing) {
                ("signup" | "invite", Some(u)) if u.confirmed => {
                    return Err(AuthApiError::new(
                        422,
                        "email_exists",
                        "A user with this email address has already been registered",
                    ))
                }
                ("signup" | "invite", Some(u)) => {
                    (u.id, kind.clone(), TokenKind::Confirmation, email.clone())
                }
                ("signup" | "invite" | "magiclink", None) => {
                    let invited = kind == "invite";
                    let id = users::create_user(
                        c,
                        NewUser {
                            email: &email,
                            password_hash: hash,
                            user_metadata: data,
                            app_metadata: json!({}),
                            confirmed: false,
                            invited,
                            id: None,
                        },
                    )
                    .await?;
                    users::audit(
                        c,
                        if invited {
                            "user_invited"
                        } else {
                            "user_signedup"
                        },
                        Some(id),
                        &email,
                        &ip,
                        json!({"by": who}),
                    )
                    .await?;
                    let vtype = if invited { "invite" } else { "signup" };
                    (
                        id,
                        vtype.to_string(),
                        TokenKind::Confirmation,
                        email.clone(),
                    )
                }
                ("magiclink" | "recovery", Some(u)) => {
                    (u.id, kind.clone(), TokenKind::Recovery, email.clone())
                }
                ("email_change_current" | "email_change_new", Some(u)) => {
                    let ne = new_email
                        .clone()
                        .ok_or_else(|| AuthApiError::validation("new_email is required"))?;
                    c.execute(
                        "UPDATE auth.users SET email_change = $2 WHERE id = $1",
                        &[&u.id, &ne],
                    )
                    .await?;
                    (u.id, "email_change".to_string(), TokenKind::EmailChange, ne)
                }
                _ => return Err(not_found()),
            };
            let (otp, link_token) =
                users::issue_email_token(c, user_id, token_kind, &relates_to, None).await?;
            let link = users::verify_link(&s, &link_token, &vtype, &redirect_to);
            let mut user = users::user_json(c, user_id).await?.ok_or_else(not_found)?;
            user["action_link"] = json!(link);
            user["email_otp"] = json!(otp);
            user["hashed_token"] = json!(link_token);
            user["verification_type"] = json!(vtype);
            user["redirect_to"] = json!(redirect_to);
            Ok(user)
        })
    })
    .await?;
    Ok(Json(out))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InviteBody {
    email: Option<String>,
    data: Option<Value>,
}

/// `POST /invite`: creates an invited user and emails the invitation.
pub async fn invite(
    State(st): State<AppState>,
    AdminCaller(p): AdminCaller,
    meta: Meta,
    raw: Bytes,
) -> AuthResult<Json<Value>> {
    let b: InviteBody = body(&raw)?;
    let email = users::normalize_email(b.email.as_deref())?;
    let data = users::object_or_empty(b.data, "data")?;
    let redirect_to = redirect::resolve(&st.config.auth, meta.redirect_to());
    let (s, who, ip) = (st.clone(), actor(&p), meta.ip.clone());
    let (user, mail) = users::tx(&st, move |c| {
        Box::pin(async move {
            users::claim_send_slot(&s, c, &email, users::MailFlow::Invite).await?;
            let id = match users::find_by_email(c, &email).await? {
                Some(u) if u.confirmed => {
                    return Err(AuthApiError::new(
                        422,
                        "email_exists",
                        "A user with this email address has already been registered",
                    ))
                }
                Some(u) => u.id,
                None => {
                    let new = NewUser {
                        email: &email,
                        password_hash: None,
                        user_metadata: data,
                        app_metadata: json!({}),
                        confirmed: false,
                        invited: true,
                        id: None,
                    };
                    users::create_user(c, new).await?
                }
            };
            users::audit(c, "user_invited", Some(id), &email, &ip, json!({"by": who})).await?;
            let mail =
                users::prepare_email(&s, c, id, Template::Invite, &email, None, &redirect_to)
                    .await?;
            let user = users::user_json(c, id).await?.ok_or_else(not_found)?;
            Ok((user, mail))
        })
    })
    .await?;
    st.auth.mailer.send(&st, mail).await?;
    Ok(Json(user))
}
