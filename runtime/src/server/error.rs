//! The platform's error type and body: `{"code","message","requestId"}`.
//!
//! Other APIs (PostgREST, GoTrue, storage) render the same causes in their own
//! client's shape; this is the shape for `/admin`, `/platform`, ops and fallbacks.

use super::middleware::current_request_id;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{json, Value};
use wasmbase_host_api::db::DbError;
use wasmbase_host_api::sqlstate::{self, Kind};
use wasmbase_host_api::AuthError;

/// An error answered to the client with a stable `code`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable message (never secrets, never internals).
    pub message: String,
    /// Seconds for a `Retry-After` header (503/429).
    pub retry_after: Option<u32>,
    /// More fields for the body (e.g. the `position` of a schedule error).
    pub details: Option<Box<serde_json::Map<String, Value>>>,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }
    /// Adds `key: value` to the body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.details
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value.into());
        self
    }
    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 500 `internal_error`; the cause is logged, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error",
        )
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let mut out = ApiError::new(status, e.code(), e.to_string());
        if matches!(e, AuthError::NotReady) {
            out.retry_after = Some(1);
        }
        out
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        match &e {
            DbError::Pool(p) => {
                tracing::warn!(error = %p, "database pool");
                let mut out = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "Database unavailable",
                );
                out.retry_after = Some(1);
                out
            }
            // The platform's callers are operators and services, never told to
            // sign in: a permission error is 403 for them (`anon = false`).
            DbError::Pg(pg) => match pg.code().map(|c| (c.code(), sqlstate::classify(c.code()))) {
                Some((_, kind @ Kind::Timeout)) => ApiError::new(
                    status(kind),
                    "statement_timeout",
                    "The database statement took too long",
                ),
                Some((_, kind @ Kind::PermissionDenied)) => {
                    ApiError::new(status(kind), "permission_denied", "Permission denied")
                }
                // Data exceptions are the caller's input: e.g. auth.uid() on a
                // token whose `sub` is not a UUID (22P02) or holds a NUL (22P05).
                Some((code, kind @ Kind::InvalidInput)) => {
                    ApiError::new(status(kind), "invalid_input", sqlstate::input_message(code))
                }
                _ => ApiError::internal(wasmbase_host_api::db::describe(pg)),
            },
        }
    }
}

/// A [`Kind`]'s status for a platform caller.
fn status(kind: Kind) -> StatusCode {
    StatusCode::from_u16(kind.status(false)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> ApiError {
        DbError::Pool(e).into()
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> ApiError {
        DbError::Pg(e).into()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::internal(format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code, "message": self.message });
        for (k, v) in self.details.map(|d| *d).into_iter().flatten() {
            body[k] = v;
        }
        if let Some(id) = current_request_id() {
            body["requestId"] = Value::String(id.to_string());
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, s.into());
        }
        resp
    }
}
