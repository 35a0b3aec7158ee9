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
use crate::cron::{logs, runs};
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
        .route("/admin/v1/cron/runs/{id}/logs", get(run_logs))
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

fn run_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request("invalid_id", "a run id is a number"))
}

/// `?follow=1` streams; `after` resumes after a line id (SSE's `Last-Event-ID`
/// too).
#[derive(serde::Deserialize)]
struct LogsQuery {
    follow: Option<String>,
    after: Option<i64>,
}

/// `GET /admin/v1/cron/runs/{id}/logs`: the attempt's log lines as JSON
/// (`{"lines": [...], "ended": bool}`), or with `follow=1` as server-sent
/// events — `log` events (id = the line's id) until the attempt ends, then one
/// `end` event with its status — whichever node runs it.
async fn run_logs(
    State(st): State<AppState>,
    _: Service,
    Path(id): Path<String>,
    headers: http::HeaderMap,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let id = run_id(&id)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let follow = matches!(q.follow.as_deref(), Some("1" | "true"));
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or(q.after)
        .unwrap_or(0);
    // Subscribed before the first read, so no wake-up falls in between.
    let wake = st.cron.log_wake.subscribe();
    let c = st.system.get().await?;
    let Some((lines, ended)) = logs::since(&**c, id, after).await? else {
        return Err(ApiError::not_found("No run with that id"));
    };
    drop(c);
    if !follow {
        return Ok(Json(json!({ "lines": lines, "ended": ended })).into_response());
    }
    let stream = follow_stream(st, id, after, lines, ended, wake);
    Ok(axum::response::sse::Sse::new(stream)
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response())
}

/// The `follow` stream: buffered lines first, then a wait for a wake-up about
/// this attempt (or 5 s, in case a NOTIFY was lost to a reconnect), a read of
/// what is new, and so on until the attempt has ended and all is sent.
fn follow_stream(
    st: AppState,
    id: i64,
    after: i64,
    lines: Vec<logs::Line>,
    ended: bool,
    wake: tokio::sync::broadcast::Receiver<i64>,
) -> impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>> {
    use axum::response::sse::Event;
    struct Follow {
        st: AppState,
        id: i64,
        last: i64,
        buf: std::collections::VecDeque<logs::Line>,
        ended: bool,
        /// The attempt ended but a read came back full: read again at once.
        more: bool,
        done: bool,
        wake: tokio::sync::broadcast::Receiver<i64>,
    }
    let full = lines.len() >= logs::PAGE;
    let init = Follow {
        st,
        id,
        last: lines.last().map(|l| l.id).unwrap_or(after),
        buf: lines.into(),
        ended: ended && !full,
        more: ended && full,
        done: false,
        wake,
    };
    futures::stream::unfold(init, |mut f| async move {
        loop {
            if f.done {
                return None;
            }
            if let Some(line) = f.buf.pop_front() {
                f.last = line.id;
                let ev = Event::default()
                    .event("log")
                    .id(line.id.to_string())
                    .json_data(&line)
                    .unwrap_or_default();
                return Some((Ok(ev), f));
            }
            if f.ended {
                f.done = true;
                let status = match f.st.system.get().await {
                    Ok(c) => runs::get(&**c, f.id).await.ok().flatten().map(|r| r.status),
                    Err(_) => None,
                };
                let ev = Event::default()
                    .event("end")
                    .json_data(json!({ "run": f.id, "status": status }))
                    .unwrap_or_default();
                return Some((Ok(ev), f));
            }
            let wait = async {
                loop {
                    match f.wake.recv().await {
                        Ok(r) if r == f.id => return,
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            };
            if !f.more {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), wait).await;
            }
            let read = match f.st.system.get().await {
                Ok(c) => logs::since(&**c, f.id, f.last).await.map_err(drop),
                Err(_) => Err(()),
            };
            match read {
                // The database was busy or away: try again at the next wake-up.
                Err(()) => f.more = false,
                Ok(Some((lines, ended))) => {
                    // The status is read before the lines, so a short read of
                    // an ended attempt holds everything it logged.
                    let full = lines.len() >= logs::PAGE;
                    f.buf.extend(lines);
                    f.ended = ended && !full;
                    f.more = ended && full;
                }
                // The attempt is gone (pruned): nothing more will come.
                Ok(None) => f.ended = true,
            }
        }
    })
}

async fn show_run(
    State(st): State<AppState>,
    _: Service,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = run_id(&id)?;
    let c = st.system.get().await?;
    match runs::get(&**c, id).await? {
        Some(r) => Ok(Json(json!(r))),
        None => Err(ApiError::not_found("No run with that id")),
    }
}
