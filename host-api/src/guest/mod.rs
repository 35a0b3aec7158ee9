//! The `wasmbase:platform` interfaces as a WebAssembly guest sees them, one file
//! per interface ([`data`], [`sql`], [`storage`], [`realtime`], [`auth`],
//! [`log`]). Each is a
//! thin binding over the same host-api code the HTTP APIs use (the data
//! planner, storage's metadata and write steps, the principal, the
//! run-as-principal transaction), so a guest can do nothing a client of
//! `/rest/v1` or `/storage/v1` with the same principal could not, unless its
//! manifest grants `db = "service"`.

pub mod auth;
pub mod data;
pub mod log;
pub mod realtime;
pub mod sql;
pub mod storage;

use crate::data::{Limits, SchemaCache};
use crate::Principal;
use deadpool_postgres::Pool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Generated host bindings of `wit/platform.wit` (world `host`: imports only).
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasmbase:platform/host",
        imports: { default: async },
        with: {
            // Storage's byte streams are WASI's own, in the store's table.
            "wasi:io": wasmtime_wasi_io::bindings::wasi::io,
            "wasmbase:platform/storage.upload": crate::guest::storage::UploadState,
        },
    });
}

pub use bindings::wasmbase::platform::types::Error as GuestError;

/// Database access granted to one invocation.
#[derive(Clone)]
pub struct DbAccess {
    /// Request pool (`authenticator`): the data capability runs here, as `principal`.
    pub pool: Pool,
    /// The principal data calls run as: the caller (`db = "caller"`) or
    /// service_role (`db = "service"`).
    pub principal: Principal,
    /// The data API's schema cache.
    pub schema: Arc<SchemaCache>,
    /// Planner limits (max rows, unfiltered writes).
    pub limits: Limits,
    /// Prepared statements kept per connection.
    pub cache_size: usize,
    /// The aggregate cost guard (checks `db = "caller"` calls by anon and
    /// authenticated callers, as on `/rest/v1`).
    pub cost: Arc<crate::data::CostGuard>,
    /// Longest statement timeout (further capped by the call's remaining time).
    pub statement_timeout: Duration,
    /// Raw SQL pool (`wasmbase_functions`, member of service_role alone); only
    /// with `db = "service"`.
    pub sql: Option<Pool>,
    /// Bounds the share of the database pool guests may hold at once.
    pub permits: Arc<tokio::sync::Semaphore>,
}

/// One log line written by a guest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogLine {
    /// `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The message.
    pub message: String,
    /// Key/value fields.
    pub fields: Vec<(String, String)>,
}

/// Per-invocation state behind the platform interfaces.
pub struct GuestCtx {
    /// The caller, as the key/JWT layer resolved it.
    pub caller: Principal,
    /// Function name (for logs).
    pub function: Arc<str>,
    /// Request id (for logs).
    pub request_id: String,
    /// Database access, if granted.
    pub db: Option<DbAccess>,
    /// Storage access, if any bucket is granted.
    pub storage: Option<storage::StorageAccess>,
    /// Realtime access, if any topic is granted.
    pub realtime: Option<realtime::RealtimeAccess>,
    /// When the call's wall-clock budget ends; database calls get a
    /// `statement_timeout` no longer than what is left.
    pub deadline: Instant,
    /// Log lines captured so far (bounded by `log_budget`).
    pub logs: Vec<LogLine>,
    /// Bytes of log text still allowed for this invocation.
    pub log_budget: usize,
    /// Log lines dropped because the budget ran out.
    pub logs_dropped: u64,
    /// Where each kept line also goes as it is written (a cron run's live
    /// log); None for HTTP calls, whose lines are recorded when they end.
    pub log_tap: Option<tokio::sync::mpsc::UnboundedSender<LogLine>>,
}

impl GuestCtx {
    /// Time left for a database call, capped by the statement timeout; errors
    /// when the call is out of time.
    pub fn db_timeout(&self, cap: Duration) -> Result<Duration, GuestError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(error(504, "57014", "the function's time is up"));
        }
        Ok(left.min(cap))
    }
}

/// Builds a guest-visible error.
pub fn error(status: u16, code: &str, message: impl Into<String>) -> GuestError {
    GuestError {
        code: code.to_string(),
        message: message.into(),
        details: None,
        hint: None,
        status,
    }
}

impl From<crate::data::DataError> for GuestError {
    fn from(e: crate::data::DataError) -> GuestError {
        GuestError {
            code: e.code,
            message: e.message,
            details: e.details,
            hint: e.hint,
            status: e.status,
        }
    }
}

impl bindings::wasmbase::platform::types::Host for GuestCtx {}

/// Adds the platform interfaces to `linker`; `get` finds the [`GuestCtx`] in
/// the store's data, `view` it with the store's resource table (storage's
/// streams are WASI streams). Linking them all is safe: every call checks the
/// function's grant itself (no database access without `db`, raw SQL only
/// with `db = "service"`, buckets and topics by their grants), whatever the loader let
/// through. (`wasi:io` itself comes from WASI's own linker.)
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> &mut GuestCtx,
    view: fn(&mut T) -> storage::StorageView<'_>,
) -> wasmtime::Result<()> {
    use bindings::wasmbase::platform as p;
    type Own = wasmtime::component::HasSelf<GuestCtx>;
    p::types::add_to_linker::<T, Own>(linker, get)?;
    p::data::add_to_linker::<T, Own>(linker, get)?;
    p::sql::add_to_linker::<T, Own>(linker, get)?;
    p::auth::add_to_linker::<T, Own>(linker, get)?;
    p::log::add_to_linker::<T, Own>(linker, get)?;
    p::realtime::add_to_linker::<T, Own>(linker, get)?;
    p::storage::add_to_linker::<T, storage::StorageData>(linker, view)
}
