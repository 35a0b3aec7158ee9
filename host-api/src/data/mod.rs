//! The data capability: PostgREST-style reads, writes and calls over the exposed
//! schemas, as a principal, one SQL statement per request.
//!
//! Shaped like PostgREST's ApiRequest → Plan → Query split:
//! [`parse`] (query-string grammar → [`request::Query`]), [`plan`] (request +
//! [`schema::Schema`] → one statement), [`exec`] (run it in the principal's
//! transaction). `/rest/v1` adds HTTP around it; functions granted
//! `db = "caller"` call [`execute`] in-process with their caller's principal.

pub mod cost;
pub mod error;
pub mod exec;
pub mod parse;
pub mod pgrst;
pub mod plan;
pub mod profile;
pub mod request;
pub mod schema;
mod view_origins;

pub use cost::CostGuard;
pub use error::DataError;
pub use exec::{ExecSettings, Outcome};
pub use plan::{Limits, Statement};
pub use profile::not_exposed;
pub use request::Request;
pub use schema::{Schema, SchemaCache};

use crate::Principal;
use deadpool_postgres::Pool;

/// Plans and runs `req` as `principal` against the schema snapshot `schema`.
/// The schema must be exposed; anything not in the snapshot is a 4xx.
pub async fn execute(
    pool: &Pool,
    schema: &Schema,
    principal: &Principal,
    settings: &ExecSettings<'_>,
    limits: &Limits,
    req: &Request,
) -> Result<(Statement, Outcome), DataError> {
    schema.profile(Some(&req.schema))?;
    let stmt = plan::plan(schema, req, limits)?;
    let out = exec::run(pool, principal, settings, req.read_only, &stmt).await?;
    Ok((stmt, out))
}
