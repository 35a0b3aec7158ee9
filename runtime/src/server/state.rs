//! Shared server state, cloned into every handler.

use crate::config::Config;
use crate::server::metrics::Metrics;
use deadpool_postgres::Pool;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmbase_host_api::gate::Gate;
use wasmbase_host_api::{Principal, Role};

/// Cheap-to-clone handle to the server's shared state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What handlers share.
pub struct Inner {
    /// The validated configuration.
    pub config: Config,
    /// Key and token checks.
    pub gate: Gate,
    /// Request pool: logs in as `authenticator`; every use goes through `db::run_as` or `data::exec` (both `db::Tx`).
    pub pool: Pool,
    /// Platform bookkeeping pool, as the owner (migrations, key cache, admin writes);
    /// never used to run a client's query.
    pub system: Pool,
    /// Request metrics.
    pub metrics: Metrics,
    /// Set once migrations are applied and keys are loaded.
    pub ready: AtomicBool,
    /// Response-head deadline of every request.
    pub request_timeout: Duration,
    /// Largest accepted body.
    pub body_limit: u64,
    /// The auth API's hasher, limiters and mailer.
    pub auth: crate::api::auth::AuthState,
    /// The data API's schema cache (reloaded after DDL, versioned); shared with
    /// function invocations.
    pub schema: Arc<wasmbase_host_api::data::SchemaCache>,
    /// Edge functions.
    pub functions: crate::functions::Functions,
    /// Image transformations: this node's limit and result cache.
    pub render: Arc<crate::api::storage::Renderer>,
    /// File storage: the backend and upload limits.
    pub storage: wasmbase_host_api::storage::Storage,
    /// Realtime: this node's channels and the bus to the others.
    pub realtime: Arc<crate::api::realtime::Hub>,
    /// Cron: this node's scheduler inbox, leases and HTTP client.
    pub cron: Arc<crate::cron::Cron>,
    /// The aggregate cost guard (`data.aggregate_max_cost`), with its estimate
    /// cache; shared by `/rest/v1` and functions' data calls.
    pub cost_guard: Arc<wasmbase_host_api::data::CostGuard>,
    /// Wakes the schema reloader; notifications arriving during a reload fold
    /// into one more reload.
    pub schema_dirty: tokio::sync::Notify,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Wraps the state.
    pub fn new(inner: Inner) -> AppState {
        AppState(Arc::new(inner))
    }

    /// Whether startup (migrations, keys) has finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// What the data planner allows (`database.max_rows`, unfiltered writes,
    /// `data.aggregates`): one place for `/rest/v1` and functions.
    pub fn data_limits(&self) -> wasmbase_host_api::data::Limits {
        wasmbase_host_api::data::Limits {
            max_rows: self.config.database.max_rows,
            allow_unfiltered_writes: self.config.database.allow_unfiltered_writes,
            aggregates: self.config.data.aggregates,
        }
    }

    /// The `statement_timeout` a principal's transactions get.
    pub fn statement_timeout(&self, p: &Principal) -> Duration {
        let ms = match p.role {
            Role::Anon => self.config.database.anon_statement_timeout_ms,
            _ => self.config.database.statement_timeout_ms,
        };
        Duration::from_millis(ms)
    }
}
