//! `/admin/v1/cron`: jobs and their runs, for a secret key or a service_role
//! token only. Every change is audited (`cron.job.*`). The `wasmbase cron` CLI
//! calls the same `cron::job` functions.
//!
//! - `GET /admin/v1/cron/jobs`, `POST /admin/v1/cron/jobs` (answers with the
//!   next five run times), `GET|PATCH|DELETE /admin/v1/cron/jobs/{name}`,
//!   `POST /admin/v1/cron/jobs/{name}/pause|resume|run`;
//! - `GET /admin/v1/cron/runs?job=&status=&since=&until=&limit=`,
//!   `GET /admin/v1/cron/runs/{id}`.

use crate::api::admin::{AuditActor, Service};
use crate::cron::job::{self, Invalid, Job, JobDef, WriteError};
use crate::cron::runs;
use crate::server::error::ApiError;
use crate::server::state::AppState;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde_json::{json, Value};

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/cron/jobs", get(list).post(create))
        .route(
            "/admin/v1/cron/jobs/{name}",
            get(show).patch(update).delete(remove),
        )
        .route("/admin/v1/cron/jobs/{name}/pause", post(pause))
        .route("/admin/v1/cron/jobs/{name}/resume", post(resume))
        .route("/admin/v1/cron/jobs/{name}/run", post(run_now))
        .route("/admin/v1/cron/runs", get(list_runs))
        .route("/admin/v1/cron/runs/{id}", get(show_run))
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> ApiError {
        let mut out = ApiError::bad_request(e.code, e.message);
        if let Some(p) = e.position {
            out = out.with("position", p);
        }
        out
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        match e {
            WriteError::Invalid(i) => i.into(),
            WriteError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "job_exists", e.to_string())
            }
            WriteError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "job_not_found", e.to_string())
            }
            WriteError::Db(e) => e.into(),
        }
    }
}

/// A job with its next five run times (none while paused).
fn with_next(job: &Job) -> Value {
    let mut v = json!(job);
    let next: Vec<String> = match job.def.validate() {
        Ok(s) if !job.def.paused => s
            .upcoming(chrono::Utc::now(), 5)
            .iter()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .collect(),
        _ => Vec::new(),
    };
    v["next_runs"] = json!(next);
    v
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))
}

async fn list(State(st): State<AppState>, _: Service) -> Result<Json<Value>, ApiError> {
    let c = st.system.get().await?;
    let jobs = job::list(&**c).await?;
    Ok(Json(Value::Array(jobs.iter().map(with_next).collect())))
}

async fn create(
    State(st): State<AppState>,
    Service(p): Service,
    b: Result<Json<JobDef>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let def = body(b)?;
    if def.function.is_some() {
        return Err(ApiError::bad_request(
            "invalid_job",
            "handler jobs come from a function's function.toml ([[cron]]); use `call` to call a function",
        ));
    }
    let c = st.system.get().await?;
    let job = job::create(&**c, &def, "api", None, AuditActor::of(&p).actor()).await?;
    Ok((StatusCode::CREATED, Json(with_next(&job))))
}

async fn show(
    State(st): State<AppState>,
    _: Service,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = st.system.get().await?;
    match job::get(&**c, &name).await? {
        Some(j) => Ok(Json(with_next(&j))),
        None => Err(WriteError::NotFound(name).into()),
    }
}

async fn update(
    State(st): State<AppState>,
    Service(p): Service,
    Path(name): Path<String>,
    b: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let patch = body(b)?;
    let c = st.system.get().await?;
    let job = job::patch(&**c, &name, &patch, AuditActor::of(&p).actor()).await?;
    Ok(Json(with_next(&job)))
}

async fn set_paused(
    st: &AppState,
    p: &wasmbase_host_api::Principal,
    name: &str,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    let c = st.system.get().await?;
    let job = job::patch(
        &**c,
        name,
        &json!({ "paused": paused }),
        AuditActor::of(p).actor(),
    )
    .await?;
    Ok(Json(with_next(&job)))
}

async fn pause(
    State(st): State<AppState>,
    Service(p): Service,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&st, &p, &name, true).await
}

async fn resume(
    State(st): State<AppState>,
    Service(p): Service,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&st, &p, &name, false).await
}

async fn remove(
    State(st): State<AppState>,
    Service(p): Service,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = st.system.get().await?;
    let job = job::delete(&**c, &name, AuditActor::of(&p).actor()).await?;
    Ok(Json(json!(job)))
}

/// Queues a run now; any node with cron enabled takes it. Answers 202 with
/// the attempt's id (follow it at `runs/{id}`).
async fn run_now(
    State(st): State<AppState>,
    Service(p): Service,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let c = st.system.get().await?;
    let id = job::trigger(&**c, &name, AuditActor::of(&p).actor()).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "run": id }))))
}

async fn list_runs(
    State(st): State<AppState>,
    _: Service,
    q: Result<Query<runs::Filter>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(f) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    f.times()
        .map_err(|m| ApiError::bad_request("invalid_query", m))?;
    let c = st.system.get().await?;
    Ok(Json(json!(runs::list(&**c, &f).await?)))
}

async fn show_run(
    State(st): State<AppState>,
    _: Service,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_id", "a run id is a number"))?;
    let c = st.system.get().await?;
    match runs::get(&**c, id).await? {
        Some(r) => Ok(Json(json!(r))),
        None => Err(ApiError::not_found("No run with that id")),
    }
}
