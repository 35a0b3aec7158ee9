//! PostgREST's error body for every failure under `/rest/v1`, including the
//! key/JWT check (which supabase-js reads from the same fields).

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use wasmbase_host_api::data::DataError;
use wasmbase_host_api::AuthError;

/// A data-API error on its way to the client.
#[derive(Debug)]
pub struct RestError(pub DataError);

impl RestError {
    /// 503 before the first schema load finished.
    pub fn not_loaded() -> RestError {
        let mut e = DataError::new(
            503,
            "PGRST002",
            "Could not query the database for the schema cache. Retrying.",
        );
        e.retry_after = Some(1);
        RestError(e)
    }
}

impl From<DataError> for RestError {
    fn from(e: DataError) -> RestError {
        RestError(e)
    }
}

impl From<AuthError> for RestError {
    fn from(e: AuthError) -> RestError {
        let code = match e {
            AuthError::JwtExpired => "PGRST303",
            AuthError::InvalidJwt(_) => "PGRST301",
            _ => e.code(),
        };
        let mut out = DataError::new(e.status(), code, e.to_string());
        if matches!(e, AuthError::NotReady) {
            out.retry_after = Some(1);
        }
        RestError(out)
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut resp = (status, axum::Json(e.body_json())).into_response();
        if let Some(s) = e.retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, s.into());
        }
        resp
    }
}
