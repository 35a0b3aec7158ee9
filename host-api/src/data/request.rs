//! A data request, parsed but not yet checked against the schema: what to read
//! or write, with which filters, order and range. HTTP (`/rest/v1`) and the
//! guest binding both produce one of these; the planner turns it into SQL.

use std::collections::BTreeMap;

/// One step of a JSON path: `->key` (JSON) or `->>key` (text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonStep {
    /// Object key or array index.
    pub key: String,
    /// `->>` (the value as text) rather than `->`.
    pub text: bool,
}

/// A column, optionally followed by a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Column name.
    pub column: String,
    /// JSON path into the column.
    pub path: Vec<JsonStep>,
}

impl Field {
    /// A plain column.
    pub fn col(name: &str) -> Field {
        Field {
            column: name.to_string(),
            path: Vec::new(),
        }
    }

    /// The key PostgREST gives this field in the output: the last JSON key, or
    /// the column name.
    pub fn output_name(&self) -> &str {
        self.path
            .last()
            .map(|s| s.key.as_str())
            .unwrap_or(&self.column)
    }
}

/// An item of `select=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectItem {
    /// `*`: every column.
    Star,
    /// `alias:column->path::cast[.aggregate()[::cast]]`.
    Field {
        /// Output key, when renamed.
        alias: Option<String>,
        /// The column and path.
        field: Field,
        /// `::type` of the column (before any aggregate).
        cast: Option<String>,
        /// `.sum()` etc.: the level's rows are grouped by its other fields.
        aggregate: Option<Aggregate>,
        /// `::type` of the aggregate's result.
        agg_cast: Option<String>,
    },
    /// `count()` (or legacy `count` where no column has that name): the rows
    /// of the level (or of its group).
    CountAll {
        /// Output key, when renamed (else `count`).
        alias: Option<String>,
        /// `::type` of the count.
        cast: Option<String>,
    },
    /// `alias:relation!hint!inner(items)` or `...relation(items)`.
    Embed(Embed),
}

/// The aggregate functions PostgREST 12 allows in `select=` (a closed set,
/// written into SQL as keywords).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// `count(col)`: non-null values.
    Count,
    /// `sum(col)`.
    Sum,
    /// `avg(col)`.
    Avg,
    /// `max(col)`.
    Max,
    /// `min(col)`.
    Min,
}

impl Aggregate {
    /// The aggregate called `name` (`sum`, `avg`, `count`, `max`, `min`).
    pub fn parse(name: &str) -> Option<Aggregate> {
        Some(match name {
            "count" => Aggregate::Count,
            "sum" => Aggregate::Sum,
            "avg" => Aggregate::Avg,
            "max" => Aggregate::Max,
            "min" => Aggregate::Min,
            _ => return None,
        })
    }

    /// Its name: the SQL function and the default output key.
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Sum => "sum",
            Aggregate::Avg => "avg",
            Aggregate::Max => "max",
            Aggregate::Min => "min",
        }
    }
}

/// How an embedded resource joins its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Parents without a match are kept (default).
    Left,
    /// `!inner`: parents without a match are dropped.
    Inner,
}

/// An embedded resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embed {
    /// Output key, when renamed.
    pub alias: Option<String>,
    /// Relation (or foreign-key column / constraint) name.
    pub name: String,
    /// `!hint`: the foreign key (constraint or column name) to use.
    pub hint: Option<String>,
    /// `!inner` / `!left`.
    pub join: JoinKind,
    /// `...`: the embedded (to-one) columns are merged into the parent.
    pub spread: bool,
    /// What to select from it.
    pub select: Vec<SelectItem>,
}

impl Embed {
    /// The key in the output, also the name filters use (`alias.col=eq.1`).
    pub fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

/// Filter operators (PostgREST's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    Ilike,
    Match,
    Imatch,
    In,
    Is,
    IsDistinct,
    Cs,
    Cd,
    Ov,
    Sl,
    Sr,
    Nxl,
    Nxr,
    Adj,
    Fts,
    Plfts,
    Phfts,
    Wfts,
}

impl Op {
    /// The operator called `name` in a query string.
    pub fn parse(name: &str) -> Option<Op> {
        use Op::*;
        Some(match name {
            "eq" => Eq,
            "neq" => Neq,
            "gt" => Gt,
            "gte" => Gte,
            "lt" => Lt,
            "lte" => Lte,
            "like" => Like,
            "ilike" => Ilike,
            "match" => Match,
            "imatch" => Imatch,
            "in" => In,
            "is" => Is,
            "isdistinct" => IsDistinct,
            "cs" => Cs,
            "cd" => Cd,
            "ov" => Ov,
            "sl" => Sl,
            "sr" => Sr,
            "nxl" => Nxl,
            "nxr" => Nxr,
            "adj" => Adj,
            "fts" => Fts,
            "plfts" => Plfts,
            "phfts" => Phfts,
            "wfts" => Wfts,
            _ => return None,
        })
    }
}

/// The right-hand side of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// One value (sent as a bind parameter).
    Value(String),
    /// `in.(a,b,c)` (sent as one array parameter).
    List(Vec<String>),
    /// `is.null|not_null|true|false|unknown`.
    Is(IsValue),
}

/// What `is.` compares with (a closed set, written into SQL as keywords).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum IsValue {
    Null,
    NotNull,
    True,
    False,
    Unknown,
}

/// `column.op.value`, possibly negated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Column (and JSON path) compared.
    pub field: Field,
    /// `not.`.
    pub negate: bool,
    /// The operator.
    pub op: Op,
    /// Full-text-search configuration: `fts(english)`.
    pub config: Option<String>,
    /// `eq(any)`, `like(all)`…: compare with each element of an array value.
    pub quantifier: Option<Quantifier>,
    /// The value.
    pub operand: Operand,
}

/// `(any)` / `(all)` on a comparison (supabase-js `likeAnyOf`, `likeAllOf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantifier {
    /// Holds for at least one element.
    Any,
    /// Holds for every element.
    All,
}

/// A condition tree: filters joined by `and(...)` / `or(...)`, nestable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// A single filter.
    Filter(Filter),
    /// All must hold (negated with `not.and`).
    And(bool, Vec<Condition>),
    /// Any must hold (negated with `not.or`).
    Or(bool, Vec<Condition>),
}

/// `order=` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTerm {
    /// `rel(col)`: order by a column of a many-to-one embedded resource.
    pub embed: Option<String>,
    /// What to order by.
    pub field: Field,
    /// Descending.
    pub desc: bool,
    /// `nullsfirst` (Some(true)) / `nullslast` (Some(false)).
    pub nulls_first: Option<bool>,
}

/// Filters, order and range of one level: the root (path `[]`) or an embedded
/// resource (path of embed keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modifiers {
    /// Conditions, all of which must hold.
    pub conditions: Vec<Condition>,
    /// Order terms.
    pub order: Vec<OrderTerm>,
    /// `limit`.
    pub limit: Option<i64>,
    /// `offset`.
    pub offset: Option<i64>,
}

/// A read's shape: select tree and per-level modifiers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// `select=` (empty means `*`).
    pub select: Vec<SelectItem>,
    /// Modifiers keyed by embed path (`[]` is the root).
    pub levels: BTreeMap<Vec<String>, Modifiers>,
}

impl Query {
    /// The root level's modifiers.
    pub fn root(&self) -> Option<&Modifiers> {
        self.levels.get(&Vec::new())
    }

    /// The root level's modifiers, created if missing.
    pub fn root_mut(&mut self) -> &mut Modifiers {
        self.levels.entry(Vec::new()).or_default()
    }
}

/// `Prefer: count=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// `count(*)` with the same filters.
    Exact,
    /// The planner's estimate (answered with the exact count here; see DATA.md).
    Planned,
    /// Exact up to a threshold, estimated above (answered exactly here).
    Estimated,
}

/// `Prefer: return=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Return {
    /// No body (PostgREST's default for writes).
    #[default]
    Minimal,
    /// The written rows, shaped by `select=`.
    Representation,
    /// No body, but a `Location` header for the (first) row.
    HeadersOnly,
}

/// Upsert behaviour (`Prefer: resolution=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// `merge-duplicates`: update the conflicting row.
    Merge,
    /// `ignore-duplicates`: keep the existing row.
    Ignore,
}

/// What a request does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// GET / HEAD on a relation.
    Read,
    /// POST on a relation.
    Insert {
        /// Upsert behaviour.
        resolution: Option<Resolution>,
        /// `on_conflict=` columns (default: the primary key).
        on_conflict: Option<Vec<String>>,
        /// `columns=`: which keys of the body to insert.
        columns: Option<Vec<String>>,
        /// `Prefer: missing=default`.
        missing_default: bool,
    },
    /// PATCH on a relation.
    Update,
    /// DELETE on a relation.
    Delete,
    /// `/rpc/:name` with arguments (a JSON object, or a raw body).
    Call {
        /// Function name.
        function: String,
        /// How the body reaches the function.
        body: CallBody,
    },
}

/// How a call's body reaches the function (PostgREST's `findProc` and
/// `callPlan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallBody {
    /// A JSON object of named arguments; a POSTed JSON body is also the whole
    /// argument of a function with a single unnamed json/jsonb parameter.
    #[default]
    Named,
    /// `Prefer: params=single-object` (PostgREST before 13): the whole JSON
    /// body is the argument of a function with one json/jsonb parameter.
    SingleObject,
    /// A `text/plain`, `text/xml` or `application/octet-stream` body: the
    /// argument of a function with a single unnamed text, xml or bytea
    /// parameter (bytea as `\x` hex text).
    Raw(RawType),
}

/// The parameter type a raw call body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawType {
    /// `text/plain` → `text`.
    Text,
    /// `text/xml` → `xml`.
    Xml,
    /// `application/octet-stream` → `bytea`.
    Bytea,
}

impl RawType {
    /// The PostgreSQL type it fills.
    pub fn type_name(&self) -> &'static str {
        match self {
            RawType::Text => "text",
            RawType::Xml => "xml",
            RawType::Bytea => "bytea",
        }
    }
}

/// A complete data request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Schema (already checked to be exposed by the caller or the planner).
    pub schema: String,
    /// Relation name (empty for calls).
    pub relation: String,
    /// What to do.
    pub action: Action,
    /// Select, filters, order, range.
    pub query: Query,
    /// JSON body: rows to write, or call arguments.
    pub body: Option<String>,
    /// Count rows.
    pub count: Option<Count>,
    /// What writes give back.
    pub returning: Return,
    /// Exactly one row expected (`Accept: application/vnd.pgrst.object+json`).
    pub single: bool,
    /// Run in a read-only transaction (GET and HEAD).
    pub read_only: bool,
    /// Skip the body (HEAD).
    pub head: bool,
    /// `Prefer: handling=strict, max-affected=N`.
    pub max_affected: Option<i64>,
    /// `Prefer: tx=rollback`.
    pub rollback: bool,
    /// `Accept: text/csv`: PostgreSQL builds the body as CSV (its own text
    /// output and quoting, as PostgREST), not JSON.
    pub csv: bool,
    /// `nulls=stripped` (PostgREST's `vnd.pgrst.array+json` and
    /// `vnd.pgrst.object+json` parameter): null-valued keys are left out.
    pub strip_nulls: bool,
    /// `Accept: application/vnd.pgrst.plan`: answer the statement's plan.
    pub explain: Option<Explain>,
    /// `Accept: application/geo+json`: a GeoJSON FeatureCollection (PostGIS).
    pub geojson: bool,
}

/// An `EXPLAIN` asked for with `Accept: application/vnd.pgrst.plan[+json|+text]`
/// (PostgREST's `db-plan-enabled`): the format and the options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Explain {
    /// `+text` (else JSON).
    pub text: bool,
    /// `options=analyze`: run it (in a transaction that is rolled back).
    pub analyze: bool,
    /// `options=verbose`.
    pub verbose: bool,
    /// `options=settings`.
    pub settings: bool,
    /// `options=buffers` (with analyze).
    pub buffers: bool,
    /// `options=wal` (with analyze).
    pub wal: bool,
}

impl Explain {
    /// `EXPLAIN (…) ` in front of a statement: options from this closed set.
    pub fn prefix(&self) -> String {
        let mut o = vec![if self.text {
            "FORMAT TEXT"
        } else {
            "FORMAT JSON"
        }];
        for (on, name) in [
            (self.analyze, "ANALYZE"),
            (self.verbose, "VERBOSE"),
            (self.settings, "SETTINGS"),
            (self.buffers && self.analyze, "BUFFERS"),
            (self.wal && self.analyze, "WAL"),
        ] {
            if on {
                o.push(name);
            }
        }
        format!("EXPLAIN ({}) ", o.join(", "))
    }
}
