//! Bucket endpoints: list, get, create, update, delete, empty — each as the
//! caller (RLS on `storage.buckets`, and on `storage.objects` for empty).

use super::error::{StorageCaller, StorageQuery, StorageResult};
use super::{acting, json_body};
use crate::server::state::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use wasmbase_host_api::storage::meta::{self, BucketChange};
use wasmbase_host_api::storage::{names, StorageError};

/// JSON text PostgreSQL built, as a response.
pub(super) fn json_text(body: String) -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn message(m: &str) -> Response {
    axum::Json(json!({ "message": m })).into_response()
}

/// Query of `GET /bucket` (storage-js 2.1xx may send these).
#[derive(Deserialize)]
pub(super) struct ListQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    search: Option<String>,
}

pub(super) async fn list(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    StorageQuery(q): StorageQuery<ListQuery>,
) -> StorageResult<Response> {
    let body = meta::list_buckets(&acting(&st, &p), q.search, q.limit, q.offset).await?;
    Ok(json_text(body))
}

pub(super) async fn get(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path(id): Path<String>,
) -> StorageResult<Response> {
    Ok(json_text(meta::get_bucket(&acting(&st, &p), &id).await?))
}

/// The settings a create or update body gives (absent keys stay `None`).
fn change(body: &Map<String, Value>) -> Result<BucketChange, StorageError> {
    let mut c = BucketChange::default();
    if let Some(v) = body.get("public") {
        c.public = Some(
            v.as_bool()
                .ok_or_else(|| StorageError::invalid("public must be a boolean"))?,
        );
    }
    if let Some(v) = body.get("file_size_limit") {
        c.file_size_limit = Some(names::file_size_limit(v)?);
    }
    if let Some(v) = body.get("allowed_mime_types") {
        c.allowed_mime_types = Some(match v {
            Value::Null => None,
            Value::Array(a) => {
                let mut list = Vec::with_capacity(a.len());
                for m in a {
                    match m {
                        Value::String(s) if s.is_empty() => {}
                        Value::String(s) => list.push(s.clone()),
                        _ => {
                            return Err(StorageError::invalid(
                                "allowed_mime_types must be a list of strings",
                            ))
                        }
                    }
                }
                names::mime_list(&list)?;
                Some(list)
            }
            _ => {
                return Err(StorageError::invalid(
                    "allowed_mime_types must be a list of strings",
                ))
            }
        });
    }
    Ok(c)
}

pub(super) async fn create(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    body: axum::body::Bytes,
) -> StorageResult<Response> {
    let body: Map<String, Value> = json_body(&body)?;
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| StorageError::invalid("body must have required property 'name'"))?;
    let id = body.get("id").and_then(Value::as_str).unwrap_or(name);
    names::bucket_name(name)?;
    names::bucket_name(id)?;
    let c = change(&body)?;
    meta::create_bucket(&acting(&st, &p), id, name, c).await?;
    Ok(axum::Json(json!({ "name": name })).into_response())
}

pub(super) async fn update(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> StorageResult<Response> {
    let c = change(&json_body(&body)?)?;
    meta::update_bucket(&acting(&st, &p), &id, c).await?;
    Ok(message("Successfully updated"))
}

pub(super) async fn delete(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path(id): Path<String>,
) -> StorageResult<Response> {
    meta::delete_bucket(&acting(&st, &p), &id).await?;
    Ok(message("Successfully deleted"))
}

pub(super) async fn empty(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path(id): Path<String>,
) -> StorageResult<Response> {
    meta::empty_bucket(&acting(&st, &p), &id).await?;
    st.storage.gc_kick.notify_one();
    Ok(message("Successfully emptied"))
}
