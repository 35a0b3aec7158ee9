//! The data API's error: PostgREST's `{code, details, hint, message}` with its
//! HTTP status, because supabase-js reads exactly those fields. The same value
//! reaches WebAssembly guests that use the data capability.

use crate::db::DbError;
use crate::Role;

/// An error of a data request, in PostgREST's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct DataError {
    /// HTTP status PostgREST would answer with.
    pub status: u16,
    /// `PGRSTnnn` for request/schema errors, the SQLSTATE for database errors.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// More context (PostgreSQL's DETAIL; it is sent to the caller, never logged).
    pub details: Option<String>,
    /// What to do about it.
    pub hint: Option<String>,
    /// Seconds for `Retry-After` (pool exhausted).
    pub retry_after: Option<u32>,
    /// `details` as JSON when PostgREST sends more than a string (the list of
    /// candidates of PGRST201 and PGRST203); `details` then holds its text.
    pub details_json: Option<Box<serde_json::Value>>,
}

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for DataError {}

impl DataError {
    /// An error with a code, status and message.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> DataError {
        DataError {
            status,
            code: code.to_string(),
            message: message.into(),
            details: None,
            hint: None,
            retry_after: None,
            details_json: None,
        }
    }

    /// Adds `details`.
    pub fn details(mut self, d: impl Into<String>) -> DataError {
        self.details = Some(d.into());
        self
    }

    /// Adds `details` that PostgREST sends as JSON (a list of objects).
    pub fn details_json(mut self, d: serde_json::Value) -> DataError {
        self.details = Some(d.to_string());
        self.details_json = Some(Box::new(d));
        self
    }

    /// Adds `hint`.
    pub fn hint(mut self, h: impl Into<String>) -> DataError {
        self.hint = Some(h.into());
        self
    }

    /// The body PostgREST sends: `{"code","details","hint","message"}`.
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::json!({
            "code": self.code,
            "details": match &self.details_json {
                Some(d) => (**d).clone(),
                None => self.details.clone().into(),
            },
            "hint": self.hint,
            "message": self.message,
        })
    }

    /// Maps a database failure the way PostgREST does; `role` decides 401 vs 403
    /// for a permission error (anon gets 401 so the client knows to sign in).
    pub fn from_db(e: &DbError, role: Role) -> DataError {
        match e {
            DbError::Pool(p) => DataError::from_pool(p),
            DbError::Pg(pg) => match pg.as_db_error() {
                Some(db) => {
                    let code = db.code().code();
                    let mut out = DataError::new(status_of(code, role), code, db.message());
                    out.details = db.detail().map(str::to_string);
                    out.hint = db.hint().map(str::to_string);
                    out
                }
                None => {
                    tracing::error!(error = %crate::db::describe(pg), "data API: database connection failed");
                    let mut out = DataError::new(503, "PGRST001", "Database connection error");
                    out.retry_after = Some(1);
                    out
                }
            },
        }
    }
}

impl DataError {
    /// A pool failure the way PostgREST tells them apart: every connection busy
    /// past `database.pool_timeout_ms` is 504 `PGRST003`; a connection that
    /// could not be opened (database down, refused, its login failing, a
    /// connect that timed out) is 503 `PGRST001`.
    pub fn from_pool(p: &deadpool_postgres::PoolError) -> DataError {
        use deadpool_postgres::{PoolError, TimeoutType};
        let mut out = match p {
            PoolError::Timeout(TimeoutType::Wait) => {
                tracing::warn!(error = %p, "data API: no free database connection");
                DataError::new(
                    504,
                    "PGRST003",
                    "Timed out acquiring connection from connection pool.",
                )
            }
            _ => {
                tracing::error!(error = %p, "data API: database connection failed");
                DataError::new(503, "PGRST001", "Database connection error")
            }
        };
        out.retry_after = Some(1);
        out
    }
}

/// The status PostgREST answers a SQLSTATE with, from the platform's one table
/// ([`crate::sqlstate`]); `role` decides 401 vs 403 for a permission error.
pub fn status_of(code: &str, role: Role) -> u16 {
    crate::sqlstate::classify(code).status(role == Role::Anon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_postgrest() {
        assert_eq!(status_of("23505", Role::Authenticated), 409);
        assert_eq!(status_of("42501", Role::Anon), 401);
        assert_eq!(status_of("42501", Role::Authenticated), 403);
        assert_eq!(status_of("22P02", Role::Anon), 400);
        assert_eq!(status_of("23502", Role::Anon), 400);
        assert_eq!(status_of("40001", Role::Anon), 500);
        assert_eq!(status_of("42883", Role::Anon), 404);
        assert_eq!(status_of("22P05", Role::Anon), 400);
    }

    #[test]
    fn a_busy_pool_is_pgrst003_and_a_failed_connection_pgrst001() {
        use deadpool_postgres::{PoolError, TimeoutType};
        let busy = DataError::from_pool(&PoolError::Timeout(TimeoutType::Wait));
        assert_eq!((busy.status, busy.code.as_str()), (504, "PGRST003"));
        for down in [
            PoolError::Timeout(TimeoutType::Create),
            PoolError::Timeout(TimeoutType::Recycle),
            PoolError::Closed,
        ] {
            let e = DataError::from_pool(&down);
            assert_eq!((e.status, e.code.as_str()), (503, "PGRST001"), "{down:?}");
        }
    }
}
