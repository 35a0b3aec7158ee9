//! The one transaction primitive: every unit of work that reaches PostgreSQL
//! for a caller — the data API, a guest's data and SQL calls, the auth API,
//! platform endpoints — takes a pooled connection through [`Tx`], so the rules
//! below hold in one place:
//!
//! - the role, JWT claims and `statement_timeout` are `SET LOCAL` in the same
//!   round trip as `BEGIN` (and as the work's first statement), and nothing
//!   sent afterwards can outlive the transaction;
//! - the transaction ends with `COMMIT` on success and `ROLLBACK` otherwise,
//!   and, on the request pool, with the session reset in the same message;
//! - a `Tx` dropped before it ended (client gone, timeout, panic) cancels the
//!   running statement and never returns its connection to the pool.

use super::{DbError, Guard, BEGIN, COMMIT_AND_RESET, ROLLBACK_AND_RESET, SET_PRINCIPAL};
use crate::Principal;
use deadpool_postgres::{ClientWrapper, Pool};
use futures::future::BoxFuture;
use std::future::Future;
use std::time::Duration;
use tokio_postgres::types::{ToSql, Type};

/// How the pool a transaction runs on keeps its sessions clean; this decides
/// how the role is set and what ends the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// API traffic, logged in as `authenticator`: the role/claims statement is
    /// prepared once per connection, and `COMMIT`/`ROLLBACK` carry the session
    /// reset in the same message (see `reset_session!` in `db`).
    Request,
    /// A pool reset with `DISCARD ALL` before each reuse (functions' raw SQL):
    /// unnamed statements only, so a guest's `DEALLOCATE` cannot break them.
    Isolated,
    /// A platform service's own login role (auth): the role is fixed per
    /// connection, so no role switch.
    Service,
}

/// Whom a transaction acts as: what it `SET LOCAL`s before the work runs.
#[derive(Debug, Clone, Copy)]
pub struct Acting<'a> {
    /// Database role (`anon`, `authenticated`, `service_role`).
    pub role: &'a str,
    /// `request.jwt.claims` as JSON text, read by `auth.uid()` and policies.
    pub claims: &'a str,
    /// `statement_timeout` of the transaction.
    pub timeout: Duration,
    /// A read-only transaction (reads through GET cannot write, as in PostgREST).
    pub read_only: bool,
}

impl<'a> Acting<'a> {
    /// Acts as a request's principal, read-write.
    pub fn principal(p: &'a Principal, timeout: Duration) -> Acting<'a> {
        Acting {
            role: p.role.as_str(),
            claims: &p.claims_json,
            timeout,
            read_only: false,
        }
    }
}

/// One pooled connection on its way through one transaction (see the module
/// doc for what it guarantees).
pub struct Tx {
    guard: Guard,
    kind: PoolKind,
}

impl Tx {
    /// Takes a connection from `pool`; no SQL is sent yet, so the caller may
    /// prepare statements (outside the transaction) or compute its timeout
    /// once the connection is in hand.
    pub async fn connect(pool: &Pool, kind: PoolKind) -> Result<Tx, DbError> {
        let obj = pool.get().await?;
        Ok(Tx {
            guard: Guard(Some(obj)),
            kind,
        })
    }

    /// The connection (with the driver's prepared-statement cache).
    pub fn conn(&self) -> &ClientWrapper {
        self.guard.0.as_ref().expect("a Tx holds its connection")
    }

    /// Opens the transaction — as `acting` on role-switching pools — and runs
    /// `first` right behind it in the same round trip: `BEGIN` and the
    /// `set_config` are sent before `first` is polled. If opening fails, that
    /// error wins; whatever `first` sent ran in an aborted transaction (or on
    /// a dead connection) and did nothing.
    ///
    /// # Panics
    /// When `acting` is missing on a role-switching pool, or given on a
    /// service pool (a programming error either way).
    pub async fn begin<F: Future>(
        &self,
        acting: Option<&Acting<'_>>,
        first: F,
    ) -> Result<F::Output, DbError> {
        let conn = self.conn();
        let read_only = acting.is_some_and(|a| a.read_only);
        let begin = if read_only {
            "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY"
        } else {
            BEGIN
        };
        let Some(a) = acting else {
            assert_eq!(self.kind, PoolKind::Service, "a role pool needs Acting");
            let (b, out) = futures::join!(conn.batch_execute(begin), first);
            b?;
            return Ok(out);
        };
        assert_ne!(self.kind, PoolKind::Service, "a service pool cannot act");
        let ms = a.timeout.as_millis().max(1).to_string();
        let (b, s, out) = if self.kind == PoolKind::Request {
            // Prepared before anything is pipelined, so the role is set before
            // `first`'s statements reach the server.
            let set = conn.prepare_cached(SET_PRINCIPAL).await?;
            let params: [&(dyn ToSql + Sync); 3] = [&a.role, &a.claims, &ms];
            futures::join!(
                conn.batch_execute(begin),
                async { conn.query_one(&set, &params).await.map(drop) },
                first
            )
        } else {
            let params: [(&(dyn ToSql + Sync), Type); 3] = [
                (&a.role, Type::TEXT),
                (&a.claims, Type::TEXT),
                (&ms, Type::TEXT),
            ];
            futures::join!(
                conn.batch_execute(begin),
                async { conn.query_typed(SET_PRINCIPAL, &params).await.map(drop) },
                first
            )
        };
        b?;
        s?;
        Ok(out)
    }

    /// One statement as the whole transaction, in one round trip: `BEGIN`,
    /// the `set_config`, `statement` and `COMMIT` are pipelined (a failed
    /// statement makes the server roll back at `COMMIT`). The outer error is
    /// the transaction's (opening or ending it), the inner one the
    /// statement's. On `Ok`, hand the connection back with [`Tx::release`].
    pub async fn once<T>(
        &self,
        acting: Option<&Acting<'_>>,
        statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<Result<T, tokio_postgres::Error>, DbError> {
        let (out, end) = self
            .begin(
                acting,
                futures::future::join(statement, self.conn().batch_execute(self.end_sql(true))),
            )
            .await?;
        end?;
        Ok(out)
    }

    /// What ends the transaction on this pool, for a caller that pipelines it
    /// behind its last statement (then [`Tx::release`]): `COMMIT` or
    /// `ROLLBACK` (a failed transaction's `COMMIT` rolls back), with the
    /// session reset on the request pool.
    pub fn end_sql(&self, commit: bool) -> &'static str {
        match (self.kind, commit) {
            (PoolKind::Request, true) => COMMIT_AND_RESET,
            (PoolKind::Request, false) => ROLLBACK_AND_RESET,
            (_, true) => "COMMIT",
            (_, false) => "ROLLBACK",
        }
    }

    /// Returns the connection to the pool once the caller's own
    /// [`Tx::end_sql`] succeeded.
    pub fn release(mut self) {
        drop(self.guard.0.take());
    }

    /// Commits (or rolls back) and returns the connection to the pool; if
    /// that fails the connection is discarded.
    pub async fn end(self, commit: bool) -> Result<(), DbError> {
        self.conn().batch_execute(self.end_sql(commit)).await?;
        self.release();
        Ok(())
    }

    /// Runs `work` as the whole transaction: opened as `acting` (see
    /// [`Tx::begin`]; the first statement `work` sends shares the round trip),
    /// committed when `work` returns `Ok`, rolled back otherwise. `work`'s own
    /// error wins over a failed `ROLLBACK`.
    pub async fn run<T, E, F>(self, acting: Option<&Acting<'_>>, work: F) -> Result<T, E>
    where
        E: From<DbError>,
        F: for<'c> FnOnce(&'c ClientWrapper) -> BoxFuture<'c, Result<T, E>>,
    {
        let result = self.begin(acting, work(self.conn())).await?;
        let ended = self.end(result.is_ok()).await;
        let value = result?;
        ended?;
        Ok(value)
    }
}

/// Runs `work` in one transaction on the request pool as `acting`: what every
/// API uses to reach the database as a caller.
pub async fn run_as<T, E, F>(pool: &Pool, acting: &Acting<'_>, work: F) -> Result<T, E>
where
    E: From<DbError>,
    F: for<'c> FnOnce(&'c ClientWrapper) -> BoxFuture<'c, Result<T, E>>,
{
    Tx::connect(pool, PoolKind::Request)
        .await?
        .run(Some(acting), work)
        .await
}

/// Runs `work` in one plain transaction on a [`super::service_pool`] (whose
/// role is fixed), with the guarantees of [`Tx`].
pub async fn in_transaction<T, E, F>(pool: &Pool, work: F) -> Result<T, E>
where
    E: From<DbError>,
    F: for<'c> FnOnce(&'c ClientWrapper) -> BoxFuture<'c, Result<T, E>>,
{
    Tx::connect(pool, PoolKind::Service)
        .await?
        .run(None, work)
        .await
}
