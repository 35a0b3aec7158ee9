//! The request side of host-api's `Gate`: the one place that reads `apikey`
//! (header, else query string) and `Authorization` from a request, borrowed, and
//! asks the gate, which also knows the routes that need no key. Every API goes
//! through here; the error is the typed `AuthError`, which each API renders in its
//! own client's shape.

use super::error::ApiError;
use super::state::AppState;
use axum::extract::{FromRequestParts, MatchedPath};
use axum::response::IntoResponse;
use http::request::Parts;
use std::marker::PhantomData;
use wasmbase_host_api::gate::{self, ApiKey, KeyFrom};
use wasmbase_host_api::{AuthError, Principal};

/// The authenticated principal of a request.
pub struct Caller(pub Principal);

/// Runs `f` on the request's `apikey`: the header, or the query parameter when
/// the header is absent (realtime-js and some webhooks can only send it there).
/// Borrowed from the request; only a percent-encoded query value is copied.
fn with_apikey<R>(parts: &Parts, f: impl FnOnce(Option<ApiKey<'_>>) -> R) -> R {
    if let Some(v) = parts.headers.get("apikey") {
        return f(v.to_str().ok().map(ApiKey::header));
    }
    let found = parts.uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "apikey")
            .map(|(_, v)| v)
    });
    f(found.as_deref().map(|key| ApiKey {
        key,
        from: KeyFrom::Query,
    }))
}

/// The `Authorization` header; an error when it is not text.
fn authorization(parts: &Parts) -> Result<Option<&str>, AuthError> {
    parts
        .headers
        .get(http::header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .map_err(|_| AuthError::InvalidJwt("Authorization header is not text"))
        })
        .transpose()
}

/// Whether the matched route is on the gate's open list (`gate::OPEN_ROUTES`).
fn is_open(parts: &Parts, waived: bool) -> bool {
    parts
        .extensions
        .get::<MatchedPath>()
        .is_some_and(|m| gate::is_open(parts.method.as_str(), m.as_str(), waived))
}

/// Runs the key-and-token rule on request parts; APIs with their own error shape
/// call this and render the `AuthError` themselves.
pub fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, AuthError> {
    admit(parts, state, false)
}

/// [`authenticate`] for a route whose resource may waive the key itself
/// (`waived`: a function's `verify_jwt = false`); the gate's open list decides.
pub fn admit(parts: &Parts, state: &AppState, waived: bool) -> Result<Principal, AuthError> {
    let open = is_open(parts, waived);
    with_apikey(parts, |key| {
        state.gate.admit(open, key, authorization(parts))
    })
}

/// For endpoints acting for a signed-in user: checks the `apikey` and verifies the
/// bearer JWT, if any (`None` when there is none).
pub fn user_token(parts: &Parts, state: &AppState) -> Result<Option<Principal>, AuthError> {
    with_apikey(parts, |key| {
        state.gate.user_token(key, authorization(parts))
    })
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

/// The gateway's check, for handlers that need no principal: a valid `apikey`
/// (the bearer is not looked at), or a route on the gate's open list. `E` is the
/// API's own error shape.
pub struct Keyed<E = ApiError>(PhantomData<fn() -> E>);

impl<E: From<AuthError> + IntoResponse> FromRequestParts<AppState> for Keyed<E> {
    type Rejection = E;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, E> {
        if !is_open(parts, false) {
            with_apikey(parts, |key| state.gate.api_key(key))?;
        }
        Ok(Keyed(PhantomData))
    }
}
