//! Admission: whether a call may start now, decided before it costs a store or
//! an instance. A node runs at most `functions.max_concurrency` calls at once
//! over all functions, and each function at most its `limits.max_concurrency`
//! (counted per name, see `registry::InFlight`); a call past either cap is
//! answered 503 `function_busy` with `Retry-After: 1` at once rather than
//! queued, so a burst cannot pile up memory or hold connections behind a slow
//! function. The database share is granted here too: a function whose manifest
//! says `db = "none"` gets no database access whatever the server prepared
//! (guest database calls are further bounded by `Functions::db_permits`, a
//! share of the pool, taken per database call in the host API).

use super::load::Loaded;
use super::manifest::DbMode;
use super::registry::Admitted;
use crate::server::error::ApiError;
use http::StatusCode;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmbase_host_api::guest::DbAccess;

/// The two slots a running call holds (node-wide and per function); dropping
/// it when the guest is done, not when the response head is sent, keeps a
/// streaming body counted.
pub(super) struct Admission {
    _global: OwnedSemaphorePermit,
    _own: Admitted,
}

/// Takes a node-wide slot from `global` and one of `f`'s own, or answers 503
/// with Retry-After (the node-wide slot is given back when the function's
/// own cap is what is full).
pub(super) fn admit(f: &Loaded, global: Arc<Semaphore>) -> Result<Admission, ApiError> {
    let global = global.try_acquire_owned().map_err(|_| busy("in flight"))?;
    let own = f
        .inflight
        .try_admit(f.manifest.limits.max_concurrency)
        .ok_or_else(|| busy("to this function"))?;
    Ok(Admission {
        _global: global,
        _own: own,
    })
}

/// The database access `f` may use: none unless its manifest asks for it.
pub(super) fn db_share(f: &Loaded, db: Option<DbAccess>) -> Option<DbAccess> {
    match f.manifest.db {
        DbMode::None => None,
        _ => db,
    }
}

/// 503 with `Retry-After: 1`: the caps are momentary, a retry soon succeeds.
fn busy(what: &str) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "function_busy",
        format!("Too many calls {what}; retry shortly"),
    );
    e.retry_after = Some(1);
    e
}
