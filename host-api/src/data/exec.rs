//! Runs a planned statement as a principal (through `db::Tx`), in one round
//! trip when its prepared statement is already known on the connection:
//! `BEGIN`, the role/claims/timeout `set_config`, the statement and `COMMIT`
//! are pipelined, and a failed statement turns the `COMMIT` into a rollback on
//! the server.

use super::error::DataError;
use super::plan::Statement;
use crate::db::{Acting, DbError, PoolKind, Tx};
use crate::Principal;
use bytes::BytesMut;
use deadpool_postgres::Pool;
use std::time::Duration;
use tokio_postgres::types::{Format, IsNull, ToSql, Type};

/// What a statement gave back (see `plan`: one row of total, body, rows, and
/// for merging upserts the rows inserted).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `count(*)` when a count was asked for.
    pub total: Option<i64>,
    /// The JSON text PostgreSQL built (None for minimal writes, HEAD, void calls).
    pub body: Option<String>,
    /// Rows returned (reads) or written (writes).
    pub rows: i64,
    /// Rows a merging upsert inserted (rather than updated): 0 makes it a 200.
    pub inserted: Option<i64>,
}

/// How statements are prepared and run.
#[derive(Debug, Clone, Copy)]
pub struct ExecSettings {
    /// `statement_timeout` of the transaction.
    pub timeout: Duration,
    /// Prepared statements kept per connection; the cache is cleared when full.
    pub cache_size: usize,
    /// Schema-cache version, part of every statement's text so a reload never
    /// reuses a statement prepared against the old schema.
    pub schema_version: u64,
}

/// A parameter sent in text format with the type PostgreSQL inferred, so the
/// server parses the client's text (and a bad value is a 22P02, not a panic).
#[derive(Debug)]
pub struct TextParam<'a>(pub Option<&'a str>);

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Runs `stmt` as `principal`. Reads use a read-only transaction, so a volatile
/// function reached through GET cannot write (PostgREST's rule).
pub async fn run(
    pool: &Pool,
    principal: &Principal,
    settings: &ExecSettings,
    read_only: bool,
    stmt: &Statement,
) -> Result<Outcome, DataError> {
    let db = |e: DbError| DataError::from_db(&e, principal.role);
    let pg = |e: tokio_postgres::Error| db(DbError::Pg(e));
    let tx = Tx::connect(pool, PoolKind::Request).await.map_err(db)?;
    let conn = tx.conn();
    let sql = format!("/* s{} */ {}", settings.schema_version, stmt.sql);
    if conn.statement_cache.size() >= settings.cache_size.max(2) {
        conn.statement_cache.clear();
    }
    // Prepared outside the transaction (as `authenticator`, which can see the
    // exposed schemas but holds no table privileges); only a cache miss costs
    // this extra round trip.
    let prepared = conn.prepare_cached(&sql).await.map_err(pg)?;
    let acting = Acting {
        read_only,
        ..Acting::principal(principal, settings.timeout)
    };
    let values: Vec<TextParam<'_>> = stmt
        .params
        .iter()
        .map(|p| TextParam(p.as_deref()))
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    let decide = (stmt.single && !read_only) || stmt.max_affected.is_some() || stmt.rollback;
    if decide {
        // The row count (or `tx=rollback`) decides between COMMIT and ROLLBACK:
        // two round trips.
        let q = tx
            .begin(Some(&acting), conn.query_one(&prepared, &refs))
            .await
            .map_err(db)?;
        let result = q.map_err(pg).and_then(|row| outcome(&row, stmt));
        tx.end(result.is_ok() && !stmt.rollback).await.map_err(db)?;
        result
    } else {
        // One round trip: the COMMIT rides behind the statement, and a failed
        // statement makes the server roll back at COMMIT; the connection is
        // idle again either way, its session reset.
        let q = tx
            .once(Some(&acting), conn.query_one(&prepared, &refs))
            .await
            .map_err(db)?;
        tx.release();
        q.map_err(pg).and_then(|row| outcome(&row, stmt))
    }
}

fn outcome(row: &tokio_postgres::Row, stmt: &Statement) -> Result<Outcome, DataError> {
    let out = Outcome {
        total: row.try_get(0).ok().flatten(),
        body: row.try_get(1).ok().flatten(),
        rows: row.try_get(2).unwrap_or(0),
        // Only merging upserts have this fourth column.
        inserted: row.try_get(3).ok().flatten(),
    };
    if let Some(max) = stmt.max_affected {
        if out.rows > max {
            return Err(DataError::new(
                400,
                "PGRST124",
                "Query result exceeds max-affected preference constraint",
            )
            .details(format!("The query affects {} rows", out.rows)));
        }
    }
    if stmt.single && !stmt.scalar && out.rows != 1 {
        return Err(DataError::new(
            406,
            "PGRST116",
            "JSON object requested, multiple (or no) rows returned",
        )
        .details(format!("The result contains {} rows", out.rows)));
    }
    Ok(out)
}
