//! `/rest/v1`: PostgREST-compatible data API, what `supabase.from(…)` and
//! `supabase.rpc(…)` talk to.
//!
//! routes (here) → parse ([`request`]: HTTP → `data::Request`) → plan and exec
//! (host-api's `data`, shared with functions granted `db = "caller"`) →
//! response ([`response`]). Errors render as PostgREST's body ([`error`]).

mod accept;
mod error;
mod openapi;
mod request;
mod response;

use crate::server::caller::authenticate;
use crate::server::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Request as HttpRequest, State};
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use error::RestError;
use std::time::Duration;
use wasmbase_host_api::data::{self, ExecSettings};

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/rest/v1", get(openapi::handler))
        .route("/rest/v1/", get(openapi::handler))
        .route("/rest/v1/rpc/{function}", any(call))
        .route("/rest/v1/{relation}", any(relation))
        .route("/rest/v1/{relation}/{*rest}", any(invalid_path))
}

/// PGRST125: a path below `/rest/v1` that names neither a relation nor a
/// function (`/rest/v1/a/b`).
async fn invalid_path() -> RestError {
    RestError(data::DataError::resource_path())
}

/// GET/HEAD/POST/PATCH/DELETE on a table or view.
async fn relation(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: HttpRequest,
) -> Result<Response, RestError> {
    handle(st, request::Target::Relation(name), req).await
}

/// GET/HEAD/POST on a function.
async fn call(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: HttpRequest,
) -> Result<Response, RestError> {
    handle(st, request::Target::Function(name), req).await
}

async fn handle(
    st: AppState,
    target: request::Target,
    req: HttpRequest,
) -> Result<Response, RestError> {
    let (parts, body) = req.into_parts();
    let principal = authenticate(&parts, &st)?;
    let schema = st.schema.get().ok_or_else(RestError::not_loaded)?;
    let body: Bytes = axum::body::to_bytes(body, st.body_limit as usize)
        .await
        .map_err(|_| {
            RestError(data::DataError::new(
                413,
                "PGRST413",
                "The request body is too large",
            ))
        })?;
    let parsed = request::parse(&parts, &schema, target, &body, st.config.data.plan_enabled)?;
    let settings = ExecSettings {
        timeout: st.statement_timeout(&principal).min(st.request_timeout),
        cache_size: st.config.database.statement_cache_size,
        schema_version: st.schema.version(),
        cost: &st.cost_guard,
    };
    let limits = st.data_limits();
    let (stmt, out) = data::execute(
        &st.pool,
        &schema,
        &principal,
        &settings,
        &limits,
        &parsed.req,
    )
    .await
    .inspect_err(|e| {
        if e.status >= 500 {
            tracing::warn!(code = %e.code, message = %e.message, "data API error");
        }
    })?;
    response::render(&parsed, &stmt, out)
}

/// How long a statement may run (kept for the guest binding, which passes the
/// remaining time of its call instead).
pub fn statement_budget(st: &AppState, p: &wasmbase_host_api::Principal) -> Duration {
    st.statement_timeout(p).min(st.request_timeout)
}
