//! Runs a planned statement as a principal (through `db::Tx`), in one round
//! trip when its prepared statement is already known on the connection:
//! `BEGIN`, the role/claims/timeout `set_config`, the statement and `COMMIT`
//! are pipelined, and a failed statement turns the `COMMIT` into a rollback on
//! the server.

use super::cost::{total_cost, CostGuard};
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
#[derive(Clone, Copy)]
pub struct ExecSettings<'a> {
    /// `statement_timeout` of the transaction.
    pub timeout: Duration,
    /// Prepared statements kept per connection; the cache is cleared when full.
    pub cache_size: usize,
    /// Schema-cache version, part of every statement's text so a reload never
    /// reuses a statement prepared against the old schema.
    pub schema_version: u64,
    /// The node's aggregate cost guard.
    pub cost: &'a CostGuard,
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
    settings: &ExecSettings<'_>,
    read_only: bool,
    stmt: &Statement,
) -> Result<Outcome, DataError> {
    let db = |e: DbError| DataError::from_db(&e, principal.role);
    let pg = |e: tokio_postgres::Error| db(DbError::Pg(e));
    let sql = format!("/* s{} */ {}", settings.schema_version, stmt.sql);
    // An aggregate's estimated cost is checked first (see `cost`): from the
    // guard's cache, or with EXPLAIN in this transaction on a miss.
    // A plan that is not analyzed runs nothing: no guard.
    let runs = stmt.explain.is_none_or(|p| p.analyze);
    let g = settings.cost;
    let guard = (runs && stmt.aggregate && g.applies(principal.role))
        .then(|| (g, g.key(principal.role, &sql, &stmt.params)));
    let explain = match guard {
        Some((g, key)) => match g.cached(key) {
            Some(cost) => {
                g.check(cost)?;
                None
            }
            None => Some((g, key)),
        },
        None => None,
    };
    let tx = Tx::connect(pool, PoolKind::Request).await.map_err(db)?;
    let conn = tx.conn();
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
    let values = text_params(&stmt.params);
    let refs = as_params(&values);
    let decide = (stmt.single && !read_only) || stmt.max_affected.is_some() || stmt.rollback;
    if !decide && explain.is_none() && stmt.estimate.is_none() {
        // One round trip: the COMMIT rides behind the statement, and a failed
        // statement makes the server roll back at COMMIT; the connection is
        // idle again either way, its session reset.
        let q = tx
            .once(Some(&acting), conn.query_one(&prepared, &refs))
            .await
            .map_err(db)?;
        tx.release();
        return q.map_err(pg).and_then(|row| outcome(&row, stmt));
    }
    // The row count, `tx=rollback`, the cost estimate, a count estimate or a
    // plan decides between COMMIT and ROLLBACK: two round trips or more.
    let mut steps = Steps {
        tx: &tx,
        acting: &acting,
        opened: false,
    };
    let result = async {
        if let Some((g, key)) = explain {
            steps.check_cost(g, key, &sql, &refs).await?;
        }
        if let Some(plan) = stmt.explain {
            return Ok(Outcome {
                total: None,
                body: Some(steps.plan(plan, &sql, &refs).await?),
                rows: 0,
                inserted: None,
            });
        }
        let row = steps.query(&prepared, &refs).await?;
        let mut out = outcome(&row, stmt)?;
        if let Some(est) = &stmt.estimate {
            // `count=planned`, or `count=estimated` past its exact threshold:
            // the planner's row estimate of the filtered relation.
            if est
                .exact_up_to
                .is_none_or(|max| out.total.unwrap_or(0) > max)
            {
                let values = text_params(&est.params);
                let refs = as_params(&values);
                let sql = format!("/* s{} */ {}", settings.schema_version, est.sql);
                let plan = steps.explain(&sql, &refs).await?;
                let rows = plan_rows(&plan).unwrap_or(0);
                // Never below what this response itself holds.
                out.total = Some(if out.rows > 0 {
                    rows.max(est.offset + out.rows)
                } else {
                    rows
                });
            }
        }
        Ok::<_, Step>(out)
    }
    .await;
    match result {
        Ok(out) => {
            tx.end(!stmt.rollback).await.map_err(db)?;
            Ok(out)
        }
        Err(e) => {
            let opened = steps.opened;
            Err(abandon(tx, opened, e, db, pg).await)
        }
    }
}

/// Ends a transaction whose step failed and gives the step's error (a
/// failed rollback is logged, never put in its place): rolled back when it
/// was opened; dropped (and so discarded) when opening it failed.
async fn abandon(
    tx: Tx,
    opened: bool,
    e: Step,
    db: impl Fn(DbError) -> DataError,
    pg: impl Fn(tokio_postgres::Error) -> DataError,
) -> DataError {
    let e = match e {
        Step::Db(e) => return db(e),
        Step::Pg(e) => pg(e),
        Step::Failed(e) => e,
    };
    if opened {
        if let Err(end) = tx.end(false).await {
            tracing::warn!(error = %end, "data API: rollback after a failed statement failed");
        }
    }
    e
}

/// Parameters as text, typed by PostgreSQL (see [`TextParam`]).
fn text_params(params: &[Option<String>]) -> Vec<TextParam<'_>> {
    params.iter().map(|p| TextParam(p.as_deref())).collect()
}

/// The driver's view of [`text_params`].
fn as_params<'a>(values: &'a [TextParam<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// Why a step of a multi-statement request stopped.
enum Step {
    /// Opening the transaction failed (the connection is not reused).
    Db(DbError),
    /// A statement failed: roll back.
    Pg(tokio_postgres::Error),
    /// The answer is an error (estimate too high, wrong row count): roll back.
    Failed(DataError),
}

impl From<DataError> for Step {
    fn from(e: DataError) -> Step {
        Step::Failed(e)
    }
}

impl From<tokio_postgres::Error> for Step {
    fn from(e: tokio_postgres::Error) -> Step {
        Step::Pg(e)
    }
}

/// The statements of one request's transaction: the first opens it (as the
/// principal, pipelined behind `BEGIN`), the others follow on the connection.
struct Steps<'t> {
    tx: &'t Tx,
    acting: &'t Acting<'t>,
    opened: bool,
}

impl Steps<'_> {
    /// The one row of a statement (see [`Steps::all`]).
    async fn query(
        &mut self,
        st: &tokio_postgres::Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, Step> {
        let mut rows = self.all(st, params).await?;
        match (rows.pop(), rows.is_empty()) {
            (Some(row), true) => Ok(row),
            _ => Err(Step::Failed(DataError::new(
                500,
                "PGRST000",
                "the statement did not return one row",
            ))),
        }
    }

    /// Every row of a statement: the first opens the transaction (pipelined
    /// behind `BEGIN` and the principal's settings), the others follow.
    async fn all(
        &mut self,
        st: &tokio_postgres::Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, Step> {
        let conn = self.tx.conn();
        if self.opened {
            return Ok(conn.query(st, params).await?);
        }
        let q = self
            .tx
            .begin(Some(self.acting), conn.query(st, params))
            .await
            .map_err(Step::Db)?;
        self.opened = true;
        Ok(q?)
    }

    /// `Accept: application/vnd.pgrst.plan`: the `EXPLAIN` of `sql` as the
    /// body (JSON, or the text lines), as the principal.
    async fn plan(
        &mut self,
        plan: crate::data::request::Explain,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<String, Step> {
        let st = self
            .tx
            .conn()
            .prepare_cached(&format!("{}{sql}", plan.prefix()))
            .await?;
        let rows = self.all(&st, params).await?;
        if plan.text {
            let lines: Vec<String> = rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
            return Ok(lines.join("\n"));
        }
        let v: serde_json::Value = rows
            .first()
            .ok_or_else(|| DataError::new(500, "PGRST000", "EXPLAIN gave no plan"))?
            .try_get(0)?;
        Ok(v.to_string())
    }

    /// The cost guard's check of `sql` (a cache miss): its estimate, as the
    /// principal, remembered under `key`.
    async fn check_cost(
        &mut self,
        g: &CostGuard,
        key: u64,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(), Step> {
        let plan = self.explain(sql, params).await?;
        let cost = total_cost(&plan)
            .ok_or_else(|| DataError::new(500, "PGRST000", "EXPLAIN gave no total cost"))?;
        g.remember(key, cost);
        Ok(g.check(cost)?)
    }

    /// `EXPLAIN (FORMAT JSON)` of `sql` (prepared outside the transaction,
    /// like every statement), run as the principal.
    async fn explain(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<serde_json::Value, Step> {
        let st = self
            .tx
            .conn()
            .prepare_cached(&format!("EXPLAIN (FORMAT JSON) {sql}"))
            .await?;
        let row = self.query(&st, params).await?;
        Ok(row.try_get(0)?)
    }
}

/// The row estimate of an `EXPLAIN (FORMAT JSON)` result's top node.
fn plan_rows(plan: &serde_json::Value) -> Option<i64> {
    Some(plan.get(0)?.get("Plan")?.get("Plan Rows")?.as_f64()? as i64)
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
            return Err(DataError::max_affected(out.rows));
        }
    }
    if stmt.single && !stmt.scalar && out.rows != 1 {
        return Err(DataError::singularity(out.rows));
    }
    Ok(out)
}
