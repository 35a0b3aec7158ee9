//! Runs a planned statement as a principal, in one round trip when its prepared
//! statement is already known on the connection: `BEGIN`, the role/claims/timeout
//! `set_config`, the statement and `COMMIT` are pipelined, and a failed
//! statement turns the `COMMIT` into a rollback on the server.

use super::error::DataError;
use super::plan::Statement;
use crate::db::{DbError, Guard, BEGIN, COMMIT_AND_RESET, ROLLBACK_AND_RESET, SET_PRINCIPAL};
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
    let obj = pool.get().await.map_err(|e| db(DbError::Pool(e)))?;
    let mut guard = Guard(Some(obj));
    let conn = guard.0.as_ref().expect("guard holds the connection");
    let set = conn.prepare_cached(SET_PRINCIPAL).await.map_err(pg)?;
    let sql = format!("/* s{} */ {}", settings.schema_version, stmt.sql);
    if conn.statement_cache.size() >= settings.cache_size.max(2) {
        conn.statement_cache.clear();
    }
    // Prepared outside the transaction (as `authenticator`, which can see the
    // exposed schemas but holds no table privileges); only a cache miss costs
    // this extra round trip.
    let prepared = conn.prepare_cached(&sql).await.map_err(pg)?;
    let ms = settings.timeout.as_millis().max(1).to_string();
    let role = principal.role.as_str();
    let claims: &str = &principal.claims_json;
    let set_params: [&(dyn ToSql + Sync); 3] = [&role, &claims, &ms];
    let values: Vec<TextParam<'_>> = stmt
        .params
        .iter()
        .map(|p| TextParam(p.as_deref()))
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    let begin = if read_only {
        "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY"
    } else {
        BEGIN
    };
    let client: &tokio_postgres::Client = conn;
    let decide = (stmt.single && !read_only) || stmt.max_affected.is_some() || stmt.rollback;
    let result = if decide {
        // The row count (or `tx=rollback`) decides between COMMIT and ROLLBACK:
        // two round trips.
        let (b, s, q) = futures::join!(
            client.batch_execute(begin),
            client.query_one(&set, &set_params),
            client.query_one(&prepared, &refs)
        );
        b.map_err(pg)?;
        s.map_err(pg)?;
        let result = q.map_err(pg).and_then(|row| outcome(&row, stmt));
        let end = if result.is_ok() && !stmt.rollback {
            COMMIT_AND_RESET
        } else {
            ROLLBACK_AND_RESET
        };
        client.batch_execute(end).await.map_err(pg)?;
        result
    } else {
        let (b, s, q, c) = futures::join!(
            client.batch_execute(begin),
            client.query_one(&set, &set_params),
            client.query_one(&prepared, &refs),
            client.batch_execute(COMMIT_AND_RESET)
        );
        b.map_err(pg)?;
        s.map_err(pg)?;
        // A failed statement made the server roll back at COMMIT; the connection
        // is idle again either way, its session reset (`db::COMMIT_AND_RESET`).
        c.map_err(pg)?;
        q.map_err(pg).and_then(|row| outcome(&row, stmt))
    };
    // The transaction is over (committed or rolled back): reuse the connection.
    drop(guard.0.take());
    result
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
