//! The data API as the caller (needs `db = "caller"` or `"service"`): a
//! supabase-js-like builder whose requests run through the platform's planner
//! with the caller's role and claims, so row-level security applies.
//!
//! ```ignore
//! let rows = data::from("todos").select("id,task").eq("done", false).order("id", true).execute()?;
//! let todos: Vec<Todo> = rows.parse()?;
//! ```

use crate::bindings::wasmbase::platform::data::{
    self as wit, Action, Filter, OnConflict, Order, Request,
};
use crate::Error;

pub use crate::bindings::wasmbase::platform::data::Rows;

impl Rows {
    /// The rows deserialized (e.g. into `Vec<T>`).
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.json)
    }
}

/// A request on `table`, a select until a write method is called.
pub fn from(table: &str) -> Query {
    Query {
        req: Request {
            schema: None,
            table: table.to_string(),
            action: Action::Select,
            columns: None,
            filters: Vec::new(),
            order: Vec::new(),
            limit: None,
            offset: None,
            count: false,
            body: None,
            conflict: OnConflict::Error,
            conflict_columns: Vec::new(),
            returning: false,
        },
    }
}

/// Calls a function of an exposed schema with JSON arguments.
pub fn rpc<A: serde::Serialize + ?Sized>(function: &str, args: &A) -> Result<Rows, Error> {
    let args = serde_json::to_string(args).unwrap_or_else(|_| "{}".into());
    wit::rpc(None, function, &args, &[])
}

/// A data request being built.
#[derive(Clone)]
pub struct Query {
    req: Request,
}

impl Query {
    /// Columns to return (PostgREST `select=` syntax, embedding included).
    pub fn select(mut self, columns: &str) -> Query {
        self.req.columns = Some(columns.to_string());
        if self.req.action != Action::Select {
            self.req.returning = true;
        }
        self
    }

    /// Another exposed schema.
    pub fn schema(mut self, schema: &str) -> Query {
        self.req.schema = Some(schema.to_string());
        self
    }

    /// A raw PostgREST filter: `filter("age", "gte.18")`, `filter("or", "(a.eq.1,b.eq.2)")`.
    pub fn filter(mut self, column: &str, condition: impl Into<String>) -> Query {
        self.req.filters.push(Filter {
            column: column.to_string(),
            condition: condition.into(),
        });
        self
    }

    /// `column = value`.
    pub fn eq(self, column: &str, value: impl std::fmt::Display) -> Query {
        self.filter(column, format!("eq.{value}"))
    }
    /// `column <> value`.
    pub fn neq(self, column: &str, value: impl std::fmt::Display) -> Query {
        self.filter(column, format!("neq.{value}"))
    }
    /// `column > value`.
    pub fn gt(self, column: &str, value: impl std::fmt::Display) -> Query {
        self.filter(column, format!("gt.{value}"))
    }
    /// `column >= value`.
    pub fn gte(self, column: &str, value: impl std::fmt::Display) -> Query {
        self.filter(column, format!("gte.{value}"))
    }
    /// `column < value`.
    pub fn lt(self, column: &str, value: impl std::fmt::Display) -> Query {
        self.filter(column, format!("lt.{value}"))
    }
    /// `column <= value`.
    pub fn lte(self, column: &str, value: impl std::fmt::Display) -> Query {
        self.filter(column, format!("lte.{value}"))
    }
    /// `column LIKE pattern` (`*` or `%` as wildcard).
    pub fn like(self, column: &str, pattern: &str) -> Query {
        self.filter(column, format!("like.{pattern}"))
    }
    /// `column ILIKE pattern`.
    pub fn ilike(self, column: &str, pattern: &str) -> Query {
        self.filter(column, format!("ilike.{pattern}"))
    }
    /// `column IS NULL`.
    pub fn is_null(self, column: &str) -> Query {
        self.filter(column, "is.null")
    }
    /// `column = ANY(values)`.
    pub fn in_list<V: std::fmt::Display>(self, column: &str, values: &[V]) -> Query {
        let items: Vec<String> = values
            .iter()
            .map(|v| format!("\"{}\"", v.to_string().replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        self.filter(column, format!("in.({})", items.join(",")))
    }

    /// Order by `column`.
    pub fn order(mut self, column: &str, ascending: bool) -> Query {
        self.req.order.push(Order {
            column: column.to_string(),
            descending: !ascending,
            nulls_first: None,
        });
        self
    }
    /// At most `n` rows.
    pub fn limit(mut self, n: u64) -> Query {
        self.req.limit = Some(n);
        self
    }
    /// Skip `n` rows.
    pub fn offset(mut self, n: u64) -> Query {
        self.req.offset = Some(n);
        self
    }
    /// Also count all matching rows (`Rows::total`).
    pub fn count(mut self) -> Query {
        self.req.count = true;
        self
    }

    /// Insert `rows` (a struct or a slice of them).
    pub fn insert<T: serde::Serialize + ?Sized>(mut self, rows: &T) -> Query {
        self.req.action = Action::Insert;
        self.req.body = serde_json::to_string(rows).ok();
        self
    }
    /// Insert, or merge into the row with the same key (`on` columns, default the primary key).
    pub fn upsert<T: serde::Serialize + ?Sized>(self, rows: &T, on: &[&str]) -> Query {
        let mut q = self.insert(rows);
        q.req.conflict = OnConflict::Merge;
        q.req.conflict_columns = on.iter().map(|s| s.to_string()).collect();
        q
    }
    /// Update matching rows with the fields of `patch`.
    pub fn update<T: serde::Serialize + ?Sized>(mut self, patch: &T) -> Query {
        self.req.action = Action::Update;
        self.req.body = serde_json::to_string(patch).ok();
        self
    }
    /// Delete matching rows.
    pub fn delete(mut self) -> Query {
        self.req.action = Action::Delete;
        self
    }

    /// Runs the request.
    pub fn execute(self) -> Result<Rows, Error> {
        wit::run(&self.req)
    }
}
