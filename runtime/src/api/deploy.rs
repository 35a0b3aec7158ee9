//! `/admin/v1/functions`: deploy, list, versions, rollback, delete and logs of
//! functions (secret key or service_role JWT), backing `wasmbase deploy` and
//! `wasmbase functions …`.
//!
//! `POST /admin/v1/functions/{name}` `{"manifest": "<function.toml>",
//! "component": "<base64 wasm>"}` validates first (a component, exporting the
//! handler, importing only what the manifest grants) and records nothing when
//! that fails.

use super::admin::{AuditActor, Service};
use crate::functions::deploy;
use crate::functions::registry::Availability;
use crate::server::error::ApiError;
use crate::server::state::AppState;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/functions", get(list))
        .route("/admin/v1/functions/{name}", post(create).delete(remove))
        .route("/admin/v1/functions/{name}/versions", get(versions))
        .route("/admin/v1/functions/{name}/rollback", post(rollback))
        .route("/admin/v1/functions/{name}/logs", get(logs))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if crate::functions::manifest::valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_function_name",
            "Function names are lower-case letters, digits, - or _, starting with a letter",
        ))
    }
}

#[derive(Deserialize)]
struct DeployBody {
    manifest: String,
    component: String,
}

/// Deploys a new version and makes it active.
async fn create(
    State(st): State<AppState>,
    Service(p): Service,
    Path(name): Path<String>,
    body: Result<Json<DeployBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_name(&name)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(body.component.trim())
        .map_err(|_| ApiError::bad_request("invalid_component", "`component` must be base64"))?;
    let m = crate::functions::manifest::Manifest::parse(&body.manifest)
        .map_err(|e| ApiError::bad_request("invalid_manifest", e))?;
    if m.name != name {
        return Err(ApiError::bad_request(
            "invalid_manifest",
            format!("function.toml names {:?}, the URL {name:?}", m.name),
        ));
    }
    let (name, version, hash) =
        deploy::deploy(&st, &body.manifest, wasm, AuditActor::of(&p).actor())
            .await
            .map_err(|e| match e {
                deploy::DeployError::Invalid(e) => ApiError::bad_request("invalid_component", e.0),
                deploy::DeployError::Database(m) => {
                    let mut e =
                        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", m);
                    e.retry_after = Some(1);
                    e
                }
            })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": name, "version": version, "hash": hash})),
    ))
}

/// Functions this node serves plus every deployed one.
async fn list(State(st): State<AppState>, _: Service) -> Result<Json<Value>, ApiError> {
    let c = st.system.get().await?;
    let rows = c
        .query(
            "SELECT f.name, f.active_version, (SELECT count(*) FROM wasmbase.function_versions v WHERE v.name = f.name),
                    to_char(f.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM wasmbase.functions f ORDER BY f.name",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in &rows {
        let name: String = r.get(0);
        let serving = matches!(st.functions.registry.get(&name), Availability::Ready(_));
        seen.insert(name.clone());
        out.push(json!({
            "name": name, "source": "deployed", "active_version": r.get::<_, i32>(1),
            "versions": r.get::<_, i64>(2), "updated_at": r.get::<_, String>(3), "serving": serving,
        }));
    }
    let errors: std::collections::HashMap<String, String> =
        st.functions.registry.errors().into_iter().collect();
    for name in st.functions.registry.names() {
        if !seen.contains(&name) {
            out.push(json!({"name": name, "source": "local", "serving": true, "error": errors.get(&name)}));
            seen.insert(name);
        }
    }
    // Local functions whose first build failed are not served, but say why.
    for (name, e) in &errors {
        if !seen.contains(name) {
            out.push(json!({"name": name, "source": "local", "serving": false, "error": e}));
        }
    }
    Ok(Json(
        json!({"functions": out, "registry_version": st.functions.registry.version()}),
    ))
}

async fn versions(
    State(st): State<AppState>,
    _: Service,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let c = st.system.get().await?;
    let v = deploy::versions(&**c, &name).await?;
    if v.is_empty() {
        return Err(ApiError::not_found(format!(
            "No deployed function named {name:?}"
        )));
    }
    Ok(Json(json!({"name": name, "versions": v})))
}

#[derive(Deserialize, Default)]
struct RollbackBody {
    version: Option<i32>,
}

async fn rollback(
    State(st): State<AppState>,
    Service(p): Service,
    Path(name): Path<String>,
    body: Option<Json<RollbackBody>>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let want = body.map(|b| b.0).unwrap_or_default().version;
    match deploy::rollback(&st, &name, want, AuditActor::of(&p).actor()).await? {
        Some(v) => Ok(Json(json!({"name": name, "version": v}))),
        None => Err(ApiError::not_found(match want {
            Some(v) => format!("{name} has no version {v}"),
            None => format!("{name} has no version before the active one"),
        })),
    }
}

async fn remove(
    State(st): State<AppState>,
    Service(p): Service,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_name(&name)?;
    if deploy::delete(&st, &name, AuditActor::of(&p).actor()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "No deployed function named {name:?}"
        )))
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    limit: Option<i64>,
}

async fn logs(
    State(st): State<AppState>,
    _: Service,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let c = st.system.get().await?;
    let rows = c
        .query(
            // The newest `limit` batches hold at least the newest `limit` records.
            "SELECT coalesce(json_agg(e.r ORDER BY e.at DESC, e.ord DESC), '[]')::text FROM (
               SELECT x.r, x.r->>'at' AS at, x.ord
               FROM (SELECT records FROM wasmbase.function_log_batches WHERE name = $1
                     ORDER BY last_at DESC LIMIT $2) b,
                    json_array_elements(b.records::json) WITH ORDINALITY AS x(r, ord)
               ORDER BY x.r->>'at' DESC, x.ord DESC LIMIT $2) e",
            &[&name, &limit],
        )
        .await?;
    let text: String = rows[0].get(0);
    let entries: Value = serde_json::from_str(&text).unwrap_or(Value::Array(vec![]));
    Ok(Json(json!({
        "name": name,
        "logs": entries,
        "dropped": st.functions.logs.dropped.load(std::sync::atomic::Ordering::Relaxed),
    })))
}
