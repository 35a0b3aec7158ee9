//! Database access as a principal: the pools, and (in `tx`) the one
//! transaction primitive every API uses.
//!
//! API traffic logs in as `authenticator` (NOINHERIT, member of anon, authenticated
//! and service_role) and every unit of work runs in a transaction that first does
//! `SET LOCAL ROLE`, sets `request.jwt.claims` and a `statement_timeout` — so
//! PostgreSQL row-level security decides what the caller sees, and nothing the
//! caller sends can change role or claims afterwards (the closure gets no way to
//! issue SQL text of the caller's choosing; each API builds its own statements).

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::time::Duration;
use tokio_postgres::NoTls;

mod tx;
pub use tx::{in_transaction, run_as, Acting, PoolKind, Tx};

/// Errors of a principal's database work.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had in time (pool exhausted or database down).
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// PostgreSQL refused the statement (carries SQLSTATE for the API to map).
    #[error(transparent)]
    Pg(#[from] tokio_postgres::Error),
}

/// Settings of a connection pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections the pool opens.
    pub max_size: usize,
    /// How long a request waits for a free connection before failing.
    pub wait_timeout: Duration,
    /// `application_name` shown in `pg_stat_activity`.
    pub application_name: &'static str,
}

/// Builds a lazily-connecting pool. Connections are opened on first use, so a
/// database that is down at start does not stop the server from starting.
pub fn pool(cfg: tokio_postgres::Config, settings: &PoolSettings) -> anyhow::Result<Pool> {
    Ok(builder(cfg, settings, RecyclingMethod::Fast).build()?)
}

/// A pool whose connections are reset with `DISCARD ALL` before each reuse,
/// for SQL text the platform did not write (functions' raw SQL), so nothing one
/// caller left in the session (settings, prepared statements, temp tables,
/// LISTENs, advisory locks) reaches the next. Its users must not cache prepared
/// statements (they would be discarded): they use unnamed ones.
pub fn isolated_pool(cfg: tokio_postgres::Config, settings: &PoolSettings) -> anyhow::Result<Pool> {
    Ok(builder(cfg, settings, RecyclingMethod::Custom("DISCARD ALL".into())).build()?)
}

fn builder(
    cfg: tokio_postgres::Config,
    settings: &PoolSettings,
    recycling_method: RecyclingMethod,
) -> deadpool_postgres::PoolBuilder {
    let mut cfg = cfg;
    cfg.application_name(settings.application_name);
    cfg.connect_timeout(Duration::from_secs(5));
    let mgr = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method });
    Pool::builder(mgr)
        .max_size(settings.max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.wait_timeout))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
}

/// A pool for one of the platform's own services (e.g. the auth API, logging in as
/// its own `wasmbase_auth` role, which no request role can switch to). Each
/// connection gets a session `statement_timeout` and a fixed `search_path`
/// (`pg_catalog, auth`), so nothing in `public` can shadow what its SQL calls.
/// Never used for a client's principal: those go through [`run_as`].
pub fn service_pool(
    cfg: tokio_postgres::Config,
    settings: &PoolSettings,
    timeout: Duration,
) -> anyhow::Result<Pool> {
    let setup = format!(
        "SET statement_timeout = {}; SET search_path = pg_catalog, auth",
        timeout.as_millis().max(1)
    );
    let hook = Hook::async_fn(move |client: &mut deadpool_postgres::ClientWrapper, _| {
        let setup = setup.clone();
        Box::pin(async move {
            client
                .batch_execute(&setup)
                .await
                .map_err(HookError::Backend)
        })
    });
    Ok(builder(cfg, settings, RecyclingMethod::Fast)
        .post_create(hook)
        .build()?)
}

/// Explicit, so a server whose default isolation is stricter does not turn the
/// row-lock protocols here (refresh-token rotation) into serialization failures.
pub(crate) const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// What ends every principal transaction, in the same simple-query message
/// (so the same round trip) as its `COMMIT`/`ROLLBACK`: nothing a request's
/// SQL left in the session reaches the next request on this pooled connection —
/// settings made with `set_config(.., false)` or `SET` (`RESET ALL`; `role` is
/// not covered by it, hence `RESET ROLE`), session advisory locks, `LISTEN`s and
/// temporary tables (which would shadow unqualified names in the next caller's
/// functions). Not `DISCARD ALL`: that would also drop the driver's prepared
/// statements. Named statements a function `PREPARE`d through dynamic SQL
/// remain (they hold no data). If `COMMIT` fails the rest does not run, and the
/// caller discards the connection instead.
macro_rules! reset_session {
    () => {
        "; RESET ALL; RESET ROLE; SELECT pg_advisory_unlock_all(); UNLISTEN *; DISCARD TEMP"
    };
}

/// `COMMIT` plus the session reset (see `reset_session!`); a failed
/// transaction's `COMMIT` rolls back.
pub(crate) const COMMIT_AND_RESET: &str = concat!("COMMIT", reset_session!());

/// `ROLLBACK` plus the session reset (see `reset_session!`).
pub(crate) const ROLLBACK_AND_RESET: &str = concat!("ROLLBACK", reset_session!());

/// `SELECT`ing the role (`$1`) and the claims (`$2`, JSON text) into the
/// transaction: `request.jwt.claims`, and its `sub` and `role` as the
/// single-claim settings Supabase's `auth.uid()`/`auth.role()` read first
/// (`migrations/0018`), so a policy evaluated per row reads a setting rather
/// than parsing the claims each time. Shared with realtime's visibility check,
/// which switches principals inside one transaction.
macro_rules! set_role_and_claims {
    () => {
        "SELECT set_config('role', $1, true), \
         set_config('request.jwt.claims', $2, true), \
         set_config('request.jwt.claim.sub', coalesce($2::json ->> 'sub', ''), true), \
         set_config('request.jwt.claim.role', coalesce($2::json ->> 'role', ''), true)"
    };
}

/// [`set_role_and_claims!`] alone, for a caller that switches principals
/// within one transaction (realtime), outside [`Tx::begin`].
pub const SET_ROLE_AND_CLAIMS: &str = set_role_and_claims!();

pub(crate) const SET_PRINCIPAL: &str = concat!(
    set_role_and_claims!(),
    ", set_config('statement_timeout', $3, true)"
);

/// Removes the connection from the pool unless the transaction finished: a future
/// dropped mid-transaction (client went away, timeout) must never hand a connection
/// that is still inside someone's role and claims back to the pool.
pub(crate) struct Guard(pub(crate) Option<deadpool_postgres::Object>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(obj) = self.0.take() {
            // Closing the socket does not stop a statement that is running:
            // cancel it too, so a timed-out call never keeps a backend busy.
            let token = obj.cancel_token();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = token.cancel_query(NoTls).await;
                });
            }
            drop(deadpool_postgres::Object::take(obj));
        }
    }
}

/// A PostgreSQL error as "message (SQLSTATE xxxxx); hint: …", for logs (`Display`
/// of the driver's error says only "db error"). The `detail` part is left out: it
/// can quote row values (emails, token hashes) that do not belong in logs.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => match std::error::Error::source(e) {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        },
    }
}

impl DbError {
    /// [`describe`] for either kind of failure.
    pub fn describe(&self) -> String {
        match self {
            DbError::Pg(e) => describe(e),
            DbError::Pool(p) => p.to_string(),
        }
    }
}

/// The SQLSTATE of a database error, if PostgreSQL sent one.
pub fn sqlstate(e: &DbError) -> Option<&str> {
    match e {
        DbError::Pg(e) => e.code().map(|c| c.code()),
        DbError::Pool(_) => None,
    }
}
