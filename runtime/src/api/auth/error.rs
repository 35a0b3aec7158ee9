//! Errors in GoTrue's shape, because auth-js parses them.
//!
//! auth-js sends `X-Supabase-Api-Version: 2024-01-01`; then the body is
//! `{"code": "<error_code>", "message": …}` and the response echoes the header
//! (auth-js only trusts `code` when the header comes back). Without the header the
//! legacy body `{"code": <status>, "error_code": …, "msg": …}` is sent.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};
use wasmbase_host_api::db::DbError;
use wasmbase_host_api::password::HashError;
use wasmbase_host_api::sqlstate::{self, Kind};
use wasmbase_host_api::AuthError;

tokio::task_local! {
    /// Whether the current request asked for the 2024-01-01 error format.
    pub static API_2024: bool;
}

/// An auth API error: HTTP status, GoTrue `error_code`, message.
#[derive(Debug)]
pub struct AuthApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// GoTrue's `error_code`.
    pub code: &'static str,
    /// Human-readable message (GoTrue's wording where auth-js or apps match on it).
    pub message: String,
    /// `weak_password.reasons`, for `weak_password`.
    pub weak_reasons: Vec<&'static str>,
    /// `Retry-After` seconds, for 429/503.
    pub retry_after: Option<u64>,
}

/// Shorthand for handler results.
pub type AuthResult<T> = Result<T, AuthApiError>;

impl AuthApiError {
    /// Builds an error.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> AuthApiError {
        AuthApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            message: message.into(),
            weak_reasons: Vec::new(),
            retry_after: None,
        }
    }
    /// 400 `validation_failed`.
    pub fn validation(message: impl Into<String>) -> AuthApiError {
        AuthApiError::new(400, "validation_failed", message)
    }
    /// 500 `unexpected_failure`; the cause is logged, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> AuthApiError {
        tracing::error!(error = %cause, "auth: unexpected failure");
        AuthApiError::new(
            500,
            "unexpected_failure",
            "Unexpected failure, please check server logs for more information",
        )
    }
    /// Adds `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> AuthApiError {
        self.retry_after = Some(secs.max(1));
        self
    }
}

impl From<DbError> for AuthApiError {
    fn from(e: DbError) -> AuthApiError {
        match e {
            DbError::Pool(p) => {
                tracing::warn!(error = %p, "auth: database pool");
                AuthApiError::new(503, "unexpected_failure", "Database unavailable").retry_after(1)
            }
            // Data exceptions (class 22: a NUL in text, a value out of range) are
            // the client's input, not a server fault.
            DbError::Pg(pg) => match pg.code().map(|c| c.code()) {
                Some(code) if sqlstate::classify(code) == Kind::InvalidInput => {
                    AuthApiError::validation(sqlstate::input_message(code))
                }
                _ => AuthApiError::internal(wasmbase_host_api::db::describe(&pg)),
            },
        }
    }
}

impl From<tokio_postgres::Error> for AuthApiError {
    fn from(e: tokio_postgres::Error) -> AuthApiError {
        DbError::Pg(e).into()
    }
}

impl From<HashError> for AuthApiError {
    fn from(e: HashError) -> AuthApiError {
        match e {
            HashError::Busy => AuthApiError::new(
                503,
                "over_request_rate_limit",
                "Too many sign-ins in progress, retry shortly",
            )
            .retry_after(1),
            HashError::Internal(m) => AuthApiError::internal(m),
        }
    }
}

impl From<AuthError> for AuthApiError {
    /// Key problems keep the gateway's wording (Kong answers these on Supabase);
    /// token problems on user endpoints are GoTrue's 403 `bad_jwt`.
    fn from(e: AuthError) -> AuthApiError {
        match e {
            AuthError::NoApiKey => AuthApiError::new(401, "no_api_key", "No API key found in request"),
            AuthError::InvalidApiKey => AuthApiError::new(401, "invalid_api_key", "Invalid API key"),
            AuthError::JwtExpired => AuthApiError::new(403, "bad_jwt", "invalid JWT: unable to parse or verify signature, token has invalid claims: token is expired"),
            AuthError::InvalidJwt(why) => AuthApiError::new(403, "bad_jwt", format!("invalid JWT: unable to parse or verify signature, {why}")),
            AuthError::SecretKeyInQuery => AuthApiError::new(401, e.code(), e.to_string()),
            AuthError::NotReady => AuthApiError::new(503, "unexpected_failure", "Service not ready").retry_after(1),
        }
    }
}

impl IntoResponse for AuthApiError {
    fn into_response(self) -> Response {
        let modern = API_2024.try_with(|v| *v).unwrap_or(false);
        let mut body = if modern {
            json!({ "code": self.code, "message": self.message })
        } else {
            json!({ "code": self.status.as_u16(), "error_code": self.code, "msg": self.message })
        };
        if !self.weak_reasons.is_empty() {
            body["weak_password"] = json!({ "reasons": self.weak_reasons });
        }
        if self.status.is_server_error() {
            if let Some(id) = crate::server::middleware::current_request_id() {
                body["error_id"] = Value::String(id);
            }
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(self.code) {
            h.insert("x-sb-error-code", v);
        }
        if let Some(s) = self.retry_after {
            h.insert(http::header::RETRY_AFTER, s.into());
        }
        resp
    }
}
