//! The `Caller` extractor: runs the key-and-token rule (host-api's `Gate`) on the
//! request and yields the `Principal`. Each API uses it; the error is the typed
//! `AuthError`, which the API renders in its own client's shape.

use super::error::ApiError;
use super::state::AppState;
use axum::extract::FromRequestParts;
use http::request::Parts;
use wasmbase_host_api::{AuthError, Principal};

/// The authenticated principal of a request.
pub struct Caller(pub Principal);

/// Reads `apikey` from the header, or from the query string (realtime and some
/// webhooks can only send it there).
fn apikey(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get("apikey") {
        return v.to_str().ok().map(str::to_string);
    }
    let q = parts.uri.query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "apikey")
        .map(|(_, v)| v.into_owned())
}

/// Runs the key-and-token rule on request parts; APIs with their own error shape
/// call this and render the `AuthError` themselves.
pub fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, AuthError> {
    let key = apikey(parts);
    let auth = match parts.headers.get(http::header::AUTHORIZATION) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| AuthError::InvalidJwt("Authorization header is not text"))?,
        ),
        None => None,
    };
    state.gate.authenticate(key.as_deref(), auth)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Caller(authenticate(parts, state)?))
    }
}
