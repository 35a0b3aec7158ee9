//! `/admin/v1`: service-only platform administration. For now: API keys.
//!
//! `GET /admin/v1/keys`, `POST /admin/v1/keys {kind, name}`,
//! `POST /admin/v1/keys/{id}/rotate`, `DELETE /admin/v1/keys/{id}`.
//! The same host-api functions back the `wasmbase keys` CLI.

use crate::server::error::ApiError;
use crate::server::middleware::current_request_id;
use crate::server::state::AppState;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use wasmbase_host_api::audit::Actor;
use wasmbase_host_api::keys::{self, KeyKind};
use wasmbase_host_api::Principal;

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/keys", get(list).post(create))
        .route("/admin/v1/keys/{id}/rotate", post(rotate))
        .route("/admin/v1/keys/{id}", axum::routing::delete(revoke))
        .route("/admin/v1/mail", get(mailbox))
        .route("/admin/v1/schema", get(schema_info).post(schema_reload))
}

/// A caller with the service role (secret key, service_role JWT): only it
/// administers the platform.
pub(crate) struct Service(pub Principal);

impl axum::extract::FromRequestParts<AppState> for Service {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        st: &AppState,
    ) -> Result<Self, ApiError> {
        let p = crate::server::caller::authenticate(parts, st)?;
        if !p.is_service() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "This endpoint needs a secret key or a service_role token",
            ));
        }
        Ok(Service(p))
    }
}

/// Who to name in the audit log.
pub fn actor(p: &Principal) -> String {
    match p.user_id() {
        Some(sub) => format!("user:{sub}"),
        None => format!("key:{}", p.role.as_str()),
    }
}

/// The audit log's view of an admin request: the caller's [`actor`] name and
/// the request id its answer carries in `X-Request-Id`.
pub struct AuditActor {
    name: String,
    request_id: Option<String>,
}

impl AuditActor {
    /// `p`, acting in the request this task is handling.
    pub fn of(p: &Principal) -> AuditActor {
        AuditActor {
            name: actor(p),
            request_id: current_request_id(),
        }
    }

    /// As host-api's audit functions take it.
    pub fn actor(&self) -> Actor<'_> {
        Actor::new(&self.name, self.request_id.as_deref())
    }
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id)
        .map_err(|_| ApiError::bad_request("invalid_id", "The key id must be a UUID"))
}

/// Other nodes learn of a key change through NOTIFY; this node applies it before
/// answering, so a caller never sees its own revoke not yet in force here.
async fn reload_local(st: &AppState, c: &tokio_postgres::Client) -> Result<(), ApiError> {
    st.gate.keys().reload(c).await?;
    Ok(())
}

#[derive(Deserialize)]
struct MailQuery {
    to: Option<String>,
    limit: Option<i64>,
}

/// `GET /admin/v1/mail?to=&limit=`: the dev mailbox, newest first.
async fn mailbox(
    State(st): State<AppState>,
    _: Service,
    axum::extract::Query(q): axum::extract::Query<MailQuery>,
) -> Result<Json<Value>, ApiError> {
    let c = st.system.get().await?;
    let mail = crate::api::auth::mail::mailbox(&c, q.to.as_deref(), q.limit.unwrap_or(20)).await?;
    Ok(Json(mail))
}

async fn list(State(st): State<AppState>, _: Service) -> Result<Json<Value>, ApiError> {
    let c = st.system.get().await?;
    let keys = keys::list(&**c).await?;
    Ok(Json(json!(keys)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    kind: String,
    #[serde(default)]
    name: String,
}

async fn create(
    State(st): State<AppState>,
    Service(p): Service,
    body: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    let kind = KeyKind::parse(&body.kind).ok_or_else(|| {
        ApiError::bad_request("invalid_kind", "kind must be 'publishable' or 'secret'")
    })?;
    if body.name.len() > 100 {
        return Err(ApiError::bad_request(
            "invalid_name",
            "name is at most 100 characters",
        ));
    }
    let c = st.system.get().await?;
    let (info, key) = keys::create(&**c, kind, &body.name, AuditActor::of(&p).actor()).await?;
    reload_local(&st, &c).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "key": key, "info": info })),
    ))
}

async fn rotate(
    State(st): State<AppState>,
    Service(p): Service,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let mut c = st.system.get().await?;
    match keys::rotate(&mut c, id, AuditActor::of(&p).actor()).await? {
        Some((info, key)) => {
            reload_local(&st, &c).await?;
            Ok(Json(json!({ "key": key, "info": info })))
        }
        None => Err(ApiError::not_found("No active key with that id")),
    }
}

async fn revoke(
    State(st): State<AppState>,
    Service(p): Service,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let c = st.system.get().await?;
    match keys::revoke(&**c, id, AuditActor::of(&p).actor()).await? {
        Some(info) => {
            reload_local(&st, &c).await?;
            Ok(Json(json!(info)))
        }
        None => Err(ApiError::not_found("No active key with that id")),
    }
}

/// `GET /admin/v1/schema`: the schema cache's version and size, so deploy
/// scripts and tests can wait for a DDL change to be visible.
async fn schema_info(State(st): State<AppState>, _: Service) -> Json<Value> {
    let (relations, functions) = st.schema.get().map(|s| s.counts()).unwrap_or((0, 0));
    Json(json!({
        "version": st.schema.version(),
        "relations": relations,
        "functions": functions,
        "schemas": st.config.database.exposed_schemas,
    }))
}

/// `POST /admin/v1/schema`: reload this node's schema cache now and answer with
/// the new version; a NOTIFY makes every other node reload too.
async fn schema_reload(State(st): State<AppState>, _: Service) -> Result<Json<Value>, ApiError> {
    let c = st.system.get().await?;
    c.execute(
        "SELECT pg_notify($1, '')",
        &[&crate::server::SCHEMA_CHANNEL],
    )
    .await?;
    let version = st
        .schema
        .reload(&**c, &st.config.database.exposed_schemas)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "version": version })))
}
