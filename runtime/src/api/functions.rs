//! `/functions/v1/:name[/*rest]` and `/fn/:name[/*rest]`: any method, headers,
//! query and body passed to the function (streamed to a wasi:http handler, or
//! whole to an SDK function's `buffered-handler`).
//!
//! routes → parse (name, principal by the manifest's `verify_jwt`) → admission
//! and exec (`functions::invoke`) → response (the guest's, streamed).

use crate::functions::invoke;
use crate::functions::load::Loaded;
use crate::functions::registry::Availability;
use crate::server::caller::admit;
use crate::server::error::ApiError;
use crate::server::middleware::current_request_id;
use crate::server::state::AppState;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use http::StatusCode;
use std::collections::HashMap;
use std::sync::Arc;
use wasmbase_host_api::Principal;

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/functions/v1/{name}", any(handle))
        .route("/functions/v1/{name}/{*rest}", any(handle))
        .route("/fn/{name}", any(handle))
        .route("/fn/{name}/{*rest}", any(handle))
}

/// The deployed function `name`, or the error a caller gets while it is
/// missing or still starting.
pub fn lookup(st: &AppState, name: &str) -> Result<Arc<Loaded>, ApiError> {
    match st.functions.registry.get(name) {
        Availability::Ready(f) => Ok(f),
        Availability::Starting => {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "function_starting",
                format!("Function {name} is still being built or compiled"),
            );
            e.retry_after = Some(1);
            Err(e)
        }
        Availability::Missing => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "function_not_found",
            format!("No function named {name:?}"),
        )),
    }
}

async fn handle(
    State(st): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
) -> Result<Response, ApiError> {
    let name = params.get("name").cloned().unwrap_or_default();
    let f = lookup(&st, &name)?;
    let (parts, body) = req.into_parts();
    // `verify_jwt = false` waives the key: the gate's open list decides.
    let caller = admit(&parts, &st, !f.manifest.verify_jwt)?;
    invoke_as(&st, f, caller, http::Request::from_parts(parts, body)).await
}

/// Calls `f` with `req` as `caller`, with the grants its manifest gives: what
/// an HTTP request and a cron `call` job both go through.
pub async fn invoke_as(
    st: &AppState,
    f: Arc<Loaded>,
    caller: Principal,
    req: Request,
) -> Result<Response, ApiError> {
    let mut inputs = invoke::inputs(st, &f, caller);
    inputs.request_id = current_request_id().unwrap_or_default();
    invoke::call(f, inputs, req).await
}
