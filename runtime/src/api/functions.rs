//! `/functions/v1/:name[/*rest]` and `/fn/:name[/*rest]`: any method, headers,
//! query and body passed to the function (streamed to a wasi:http handler, or
//! whole to an SDK function's `buffered-handler`).
//!
//! routes → parse (name, principal by the manifest's `verify_jwt`) → admission
//! and exec (`functions::invoke`) → response (the guest's, streamed).

use crate::functions::invoke::{self, Inputs};
use crate::functions::manifest::DbMode;
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
use std::time::Duration;
use wasmbase_host_api::data::Limits;
use wasmbase_host_api::guest::storage::StorageAccess;
use wasmbase_host_api::guest::DbAccess;
use wasmbase_host_api::{Principal, Role};

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
pub fn lookup(st: &AppState, name: &str) -> Result<Arc<crate::functions::load::Loaded>, ApiError> {
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
    f: Arc<crate::functions::load::Loaded>,
    caller: Principal,
    req: Request,
) -> Result<Response, ApiError> {
    let fx = &st.functions;
    let db = match f.manifest.db {
        DbMode::None => None,
        mode => Some(DbAccess {
            pool: st.pool.clone(),
            principal: if mode == DbMode::Service {
                Principal::for_role(Role::ServiceRole)
            } else {
                caller.clone()
            },
            schema: st.schema.clone(),
            limits: Limits {
                max_rows: st.config.database.max_rows,
                allow_unfiltered_writes: st.config.database.allow_unfiltered_writes,
            },
            cache_size: st.config.database.statement_cache_size,
            statement_timeout: if mode == DbMode::Service {
                st.statement_timeout(&Principal::for_role(Role::ServiceRole))
            } else {
                st.statement_timeout(&caller)
            },
            sql: (mode == DbMode::Service).then(|| fx.sql_pool.clone()),
            permits: fx.db_permits.clone(),
        }),
    };
    let storage = (!f.storage.is_empty()).then(|| {
        // As the caller, or as service_role for a `db = "service"` function.
        let principal = match f.manifest.db {
            DbMode::Service => Principal::for_role(Role::ServiceRole),
            _ => caller.clone(),
        };
        StorageAccess {
            storage: st.storage.clone(),
            pool: st.pool.clone(),
            statement_timeout: st.statement_timeout(&principal),
            principal,
            grants: f.storage.clone(),
            jwt: st.gate.jwt().clone(),
            base_url: st.config.auth.external_url.as_deref().map(Arc::from),
            permits: fx.db_permits.clone(),
        }
    });
    let inputs = Inputs {
        caller,
        storage,
        request_id: current_request_id().unwrap_or_default(),
        db,
        env: fx.env.load_full(),
        global: fx.global.clone(),
        tick: Duration::from_millis(st.config.functions.tick_ms.max(1)),
        state: st.clone(),
        max_timeout: st
            .request_timeout
            .saturating_sub(Duration::from_millis(100))
            .max(Duration::from_millis(1)),
        body_limit: st.body_limit as usize,
    };
    invoke::call(f, inputs, req).await
}
