//! `/storage/v1` errors in storage-api's shape (`{statusCode, error, message,
//! code}`, most client errors sent as HTTP 400; see
//! `host_api::storage::StorageError::http_status`), and the storage caller
//! extractor, which runs the one `Gate` and renders its refusals this way.

use crate::server::caller;
use crate::server::state::AppState;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use wasmbase_host_api::storage::{StorageError, StoreError};
use wasmbase_host_api::{AuthError, Principal};

/// A storage failure on its way to the client.
#[derive(Debug)]
pub struct StorageApiError(pub StorageError);

impl From<StorageError> for StorageApiError {
    fn from(e: StorageError) -> Self {
        StorageApiError(e)
    }
}

impl From<AuthError> for StorageApiError {
    fn from(e: AuthError) -> Self {
        let status = match e {
            AuthError::NotReady => 503,
            _ => 403,
        };
        StorageApiError(StorageError::new(
            status,
            "AccessDenied",
            "Unauthorized",
            e.to_string(),
        ))
    }
}

impl From<StoreError> for StorageApiError {
    fn from(e: StoreError) -> Self {
        StorageApiError(e.into())
    }
}

impl From<serde_json::Error> for StorageApiError {
    fn from(e: serde_json::Error) -> Self {
        StorageApiError(StorageError::invalid(format!("invalid JSON body: {e}")))
    }
}

impl IntoResponse for StorageApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = http::StatusCode::from_u16(e.http_status())
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({
            "statusCode": e.status.to_string(),
            "error": e.error,
            "message": e.message,
            "code": e.code,
        });
        (status, axum::Json(body)).into_response()
    }
}

/// The caller of a storage request (the one `Gate`), refusals in storage's
/// shape.
pub struct StorageCaller(pub Principal);

impl FromRequestParts<AppState> for StorageCaller {
    type Rejection = StorageApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, StorageApiError> {
        Ok(StorageCaller(caller::authenticate(parts, st)?))
    }
}

/// Result of a storage handler.
pub type StorageResult<T> = Result<T, StorageApiError>;

/// A query string, parsed; a malformed one is storage-api's 400
/// `InvalidRequest`, not axum's plain-text rejection.
pub struct StorageQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for StorageQuery<T> {
    type Rejection = StorageApiError;

    async fn from_request_parts(parts: &mut Parts, st: &S) -> Result<Self, StorageApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, st)
            .await
            .map(|q| StorageQuery(q.0))
            .map_err(|e| StorageError::invalid(format!("invalid query string: {e}")).into())
    }
}
