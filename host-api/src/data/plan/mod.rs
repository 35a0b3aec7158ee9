//! Request + schema cache → ONE SQL statement with bind parameters.
//!
//! Every identifier written here comes from a schema-cache entry and is quoted
//! by [`ident`]; every value a client sent is a `$n` parameter (sent in text
//! format, typed by PostgreSQL from its context). JSON keys are parameters too,
//! so the statement text depends only on the request's shape, and PostgreSQL
//! builds the whole response body (`json_build_object` / `json_agg`).
//!
//! Every statement returns one row: `(total int8, body text, rows int8)`, and
//! merging upserts a fourth column, `inserted int8`.
//!
//! Split by concern, each module adding `impl Builder` methods: `select`
//! (the object/row shape, order, range), `embed` (relationships and their
//! subqueries), `filter` (`WHERE`), `write` (INSERT/UPDATE/DELETE, their
//! `RETURNING` a parameter), `call` (RPC); `sql` holds the helpers they share
//! (identifier quoting, bind parameters, aliases, CSV).

mod call;
mod embed;
mod filter;
mod relationship;
mod select;
pub mod sql;
pub mod suggest;
mod write;

#[cfg(test)]
mod fixtures;

pub use embed::check_levels;
pub use sql::ident;

use super::error::DataError;
use super::request::{Action, Request};
use super::schema::{Column, Relation, Schema};
use write::Returning;

/// A planned statement: SQL text and its parameters (text format; `None` is NULL).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Statement {
    /// The SQL.
    pub sql: String,
    /// Parameter values in `$1..$n` order.
    pub params: Vec<Option<String>>,
    /// The response must be exactly one row (single object), checked before commit.
    pub single: bool,
    /// A scalar function result: the body is the value itself, not an array.
    pub scalar: bool,
    /// Primary-key columns of the written relation (for `Location`).
    pub pk: Vec<String>,
    /// A `void` function: no body (204).
    pub void: bool,
    /// A function returning one composite row (not `SETOF`): the body is sent
    /// as that object, or `null` when filters removed it, without the 406 a
    /// single-object `Accept` would give.
    pub object: bool,
    /// The body is CSV text (`Accept: text/csv`), built by PostgreSQL.
    pub csv: bool,
    /// `Prefer: handling=strict, max-affected=N`: more rows is an error (rolled back).
    pub max_affected: Option<i64>,
    /// `Prefer: tx=rollback`, or a plan (always rolled back): run, answer,
    /// and roll back.
    pub rollback: bool,
    /// `Accept: application/vnd.pgrst.plan`: answer this `EXPLAIN` of the
    /// statement instead of running it (rolled back, even with `analyze`).
    pub explain: Option<crate::data::request::Explain>,
    /// `Prefer: count=planned|estimated`: the statement whose row estimate
    /// is the count (run with `EXPLAIN` in the same transaction).
    pub estimate: Option<CountEstimate>,
    /// The statement aggregates (`count()`, `sum()`…): callers other than
    /// service_role have its estimated cost checked first (see `exec`).
    pub aggregate: bool,
}

/// How `count=planned` and `count=estimated` are answered (PostgREST): the
/// planner's row estimate of `SELECT 1 FROM <relation> WHERE <filters>`; for
/// `estimated` only when the exact count (which the statement computes up to
/// `exact_up_to + 1`) is above `exact_up_to` (`database.max_rows`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CountEstimate {
    /// The statement to estimate.
    pub sql: String,
    /// Its own parameters.
    pub params: Vec<Option<String>>,
    /// `estimated`: the exact count is kept up to this many rows.
    pub exact_up_to: Option<i64>,
    /// The response's offset (the estimate is never below what it holds).
    pub offset: i64,
}

/// Limits the planner enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most rows a read returns (PostgREST's `db-max-rows`).
    pub max_rows: i64,
    /// Allow PATCH/DELETE without any filter.
    pub allow_unfiltered_writes: bool,
    /// Allow aggregates in `select=` (PostgREST's `db-aggregates-enabled`;
    /// refused with PGRST123 when off).
    pub aggregates: bool,
}

/// Builds the statement for `req`.
pub fn plan(schema: &Schema, req: &Request, limits: &Limits) -> Result<Statement, DataError> {
    check_levels(&req.query)?;
    let mut b = Builder::new(schema, limits.aggregates);
    let mut stmt = match &req.action {
        Action::Call { function, .. } => b.call(req, function, limits)?,
        _ => {
            let rel = schema.relation(&req.schema, &req.relation).ok_or_else(|| {
                let names = schema.relations_in(&req.schema);
                DataError::no_table_among(
                    &req.schema,
                    &req.relation,
                    names.iter().map(|r| r.name.as_str()),
                )
            })?;
            match &req.action {
                Action::Read => b.read(req, rel, limits)?,
                _ => b.write(req, rel, limits, Returning::of(req.returning, rel))?,
            }
        }
    };
    stmt.params = b.params;
    stmt.aggregate = b.aggregated;
    stmt.single = stmt.single || req.single;
    stmt.max_affected = req.max_affected;
    // A plan is always rolled back, even an analyzed write.
    stmt.rollback = req.rollback || req.explain.is_some();
    stmt.explain = req.explain;
    Ok(stmt)
}

/// What a level of the query reads from: a relation or a function's rows.
#[derive(Clone, Copy)]
struct Source<'s> {
    /// Columns visible at this level.
    columns: &'s [Column],
    /// The relation, when embedding through its foreign keys is possible.
    rel: Option<&'s Relation>,
    /// Name for messages.
    label: &'s str,
}

impl<'s> Source<'s> {
    fn of(rel: &'s Relation) -> Source<'s> {
        Source {
            columns: &rel.columns,
            rel: Some(rel),
            label: &rel.name,
        }
    }

    fn column(&self, name: &str) -> Result<&'s Column, DataError> {
        self.columns.iter().find(|c| c.name == name).ok_or_else(|| {
            DataError::new(
                400,
                "42703",
                format!("column {}.{name} does not exist", self.label),
            )
        })
    }

    /// A column named in a write's body, `columns=` or `on_conflict=`.
    fn write_column(&self, name: &str) -> Result<&'s Column, DataError> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| DataError::no_column(self.label, name))
    }
}

/// The planner's state while it builds one statement: the schema it resolves
/// names in, the bind parameters collected so far and the next table alias.
struct Builder<'s> {
    schema: &'s Schema,
    params: Vec<Option<String>>,
    aliases: usize,
    /// Aggregates may be used ([`Limits::aggregates`]).
    aggregates: bool,
    /// An aggregate was planned.
    aggregated: bool,
    /// JSON-path keys already bound (see `sql::path_key`).
    path_keys: std::collections::HashMap<String, String>,
}

impl<'s> Builder<'s> {
    /// A builder with no parameter bound yet.
    fn new(schema: &'s Schema, aggregates: bool) -> Builder<'s> {
        Builder {
            schema,
            params: Vec::new(),
            aliases: 0,
            aggregates,
            aggregated: false,
            path_keys: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::read;

    #[test]
    fn hostile_names_never_reach_sql() {
        for qs in [
            "select=id;drop table items",
            "select=%22id%22",
            "select=nope",
            "order=id;drop",
            "id%22--=eq.1",
            "select=name::text;drop",
            "select=name::nosuchtype",
            "select=authors!x(name)",
            "select=nope(name)",
            "nope.name=eq.1",
        ] {
            let e = read(qs).expect_err(qs);
            assert!(e.status >= 400 && e.status < 500, "{qs}: {e:?}");
        }
        // Values are parameters, whatever they contain.
        let s = read("name=eq.'; drop table items; --").unwrap();
        assert!(!s.sql.contains("drop"), "{}", s.sql);
        assert_eq!(
            s.params.last().unwrap().as_deref(),
            Some("'; drop table items; --")
        );
        // JSON path keys too.
        let s = read("select=data->>x'; drop table items --").unwrap();
        assert!(!s.sql.contains("drop"), "{}", s.sql);
    }
}
