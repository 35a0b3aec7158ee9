//! Raw parameterised SQL (needs `db = "service"`): runs as a role that is a
//! member of `service_role` only. Parameters are `$1`, `$2`, …
//!
//! ```ignore
//! use wasmbase_sdk::sql::{self, Value};
//! let rows = sql::query("select count(*) from todos where done = $1", &[Value::Boolean(true)])?;
//! ```

use crate::bindings::wasmbase::platform::sql as wit;
use crate::Error;

pub use wit::{Rows, Statement, Value};

/// Runs a query and returns its rows.
pub fn query(sql: &str, params: &[Value]) -> Result<Rows, Error> {
    wit::query(sql, params)
}

/// Runs a statement and returns how many rows it affected.
pub fn execute(sql: &str, params: &[Value]) -> Result<u64, Error> {
    wit::execute(sql, params)
}

/// Runs statements in one transaction (all or nothing).
pub fn transaction(statements: &[Statement]) -> Result<Vec<Rows>, Error> {
    wit::transaction(statements)
}
