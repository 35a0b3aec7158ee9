//! Object endpoints other than upload and download: list, move, copy,
//! remove, info and signed download URLs — each as the caller (RLS), with
//! storage-api's bodies.

use super::buckets::json_text;
use super::error::{StorageCaller, StorageResult};
use super::{acting, json_body};
use crate::server::state::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use wasmbase_host_api::storage::backend;
use wasmbase_host_api::storage::meta::{self, NewObject};
use wasmbase_host_api::storage::token::{self, Scope};
use wasmbase_host_api::storage::{names, StorageError};
use wasmbase_host_api::{Principal, Role};

/// `POST /object/list/:bucket`.
#[derive(Deserialize)]
struct ListBody {
    prefix: Option<String>,
    limit: Option<i32>,
    offset: Option<i32>,
    search: Option<String>,
    #[serde(rename = "sortBy")]
    sort_by: Option<SortBy>,
}

#[derive(Deserialize)]
struct SortBy {
    column: Option<String>,
    order: Option<String>,
}

impl SortBy {
    /// (column, ascending?) of an optional `sortBy`, by name ascending when
    /// absent; the column must be one of `columns`.
    fn resolve(s: Option<&SortBy>, columns: &[&str]) -> Result<(String, bool), StorageError> {
        let column = s.and_then(|s| s.column.as_deref()).unwrap_or("name");
        let order = s
            .and_then(|s| s.order.as_deref())
            .unwrap_or("asc")
            .to_ascii_lowercase();
        if !columns.contains(&column) || !matches!(order.as_str(), "asc" | "desc") {
            return Err(StorageError::invalid(format!(
                "sortBy must name one of {} and asc or desc",
                columns.join(", ")
            )));
        }
        Ok((column.to_string(), order == "asc"))
    }
}

pub(super) async fn list(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path(bucket): Path<String>,
    bytes: axum::body::Bytes,
) -> StorageResult<Response> {
    let b: ListBody = json_body(&bytes)?;
    let prefix = names::folder(b.prefix.as_deref().unwrap_or(""));
    let (column, ascending) = SortBy::resolve(
        b.sort_by.as_ref(),
        &["name", "updated_at", "created_at", "last_accessed_at"],
    )?;
    let order = if ascending { "asc" } else { "desc" };
    let out = meta::list(
        &acting(&st, &p),
        &bucket,
        &prefix,
        b.search.as_deref().unwrap_or(""),
        b.limit.unwrap_or(100),
        b.offset.unwrap_or(0),
        &column,
        order,
    )
    .await?;
    Ok(json_text(out))
}

/// Body of move and copy.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Transfer {
    bucket_id: String,
    source_key: String,
    destination_key: String,
    destination_bucket: Option<String>,
}

/// `POST /object/move`: a metadata update (SELECT + UPDATE as the caller);
/// the bytes do not move.
pub(super) async fn rename(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    bytes: axum::body::Bytes,
) -> StorageResult<Response> {
    let t: Transfer = json_body(&bytes)?;
    let to_bucket = t.destination_bucket.unwrap_or_else(|| t.bucket_id.clone());
    names::object_key(&t.destination_key)?;
    names::bucket_name(&to_bucket)?;
    if (t.bucket_id.as_str(), t.source_key.as_str())
        != (to_bucket.as_str(), t.destination_key.as_str())
    {
        meta::rename(
            &acting(&st, &p),
            (&t.bucket_id, &t.source_key),
            (&to_bucket, &t.destination_key),
        )
        .await?;
    }
    Ok(axum::Json(json!({ "message": "Successfully moved" })).into_response())
}

/// `POST /object/copy`: SELECT of the source and INSERT of the copy as the
/// caller (an upsert with `x-upsert: true`); the bytes are copied under a new
/// version key first, and queued for deletion if the row is refused.
pub(super) async fn copy(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    headers: http::HeaderMap,
    bytes: axum::body::Bytes,
) -> StorageResult<Response> {
    let t: Transfer = json_body(&bytes)?;
    let to_bucket = t.destination_bucket.unwrap_or_else(|| t.bucket_id.clone());
    names::object_key(&t.destination_key)?;
    names::bucket_name(&to_bucket)?;
    let who = acting(&st, &p);
    let upsert = headers
        .get("x-upsert")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let (from_version, mut metadata, user_metadata) =
        meta::copy_source(&who, &t.bucket_id, &t.source_key).await?;
    let version = backend::new_key();
    let stored = st.storage.store.copy(&from_version, &version).await?;
    if let Value::Object(m) = &mut metadata {
        m.insert("eTag".into(), json!(stored.etag));
        m.insert(
            "lastModified".into(),
            json!(wasmbase_host_api::time::rfc3339_millis(
                stored.last_modified
            )),
        );
    }
    let row = NewObject {
        bucket: to_bucket.clone(),
        name: t.destination_key.clone(),
        version: version.clone(),
        metadata,
        user_metadata,
        owner: who.sub(),
    };
    match meta::insert(&who, row, upsert).await {
        Ok(id) => Ok(axum::Json(json!({
            "Id": id,
            "Key": format!("{to_bucket}/{}", t.destination_key),
        }))
        .into_response()),
        Err(e) => {
            st.storage.forget(&version).await;
            Err(e.into())
        }
    }
}

/// `DELETE /object/:bucket` with `{prefixes}` (exact names, as Supabase), or
/// with `"recursive": true` folders, everything below each of which goes.
#[derive(Deserialize)]
struct RemoveBody {
    prefixes: Vec<String>,
    #[serde(default)]
    recursive: bool,
}

pub(super) async fn remove(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path(bucket): Path<String>,
    bytes: axum::body::Bytes,
) -> StorageResult<Response> {
    let b: RemoveBody = json_body(&bytes)?;
    if b.prefixes.is_empty() || b.prefixes.len() > 1000 {
        return Err(StorageError::invalid("prefixes must list 1 to 1000 names").into());
    }
    if b.recursive && b.prefixes.iter().any(|f| f.trim_matches('/').is_empty()) {
        return Err(StorageError::invalid(
            "a recursive delete names folders; to delete a whole bucket's objects use POST /bucket/:id/empty",
        )
        .into());
    }
    let out = meta::remove(&acting(&st, &p), &bucket, b.prefixes, b.recursive).await?;
    st.storage.gc_kick.notify_one();
    Ok(json_text(out))
}

/// `DELETE /object/:bucket/*path`: one object; missing or not deletable by
/// the caller is `NoSuchKey`.
pub(super) async fn delete_one(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path((bucket, path)): Path<(String, String)>,
) -> StorageResult<Response> {
    let out = meta::remove(&acting(&st, &p), &bucket, vec![path], false).await?;
    if out == "[]" {
        return Err(StorageError::no_such_key().into());
    }
    st.storage.gc_kick.notify_one();
    Ok(axum::Json(json!({ "message": "Successfully deleted" })).into_response())
}

/// `GET /object/info/:bucket/*path` (also `info/authenticated/`).
pub(super) async fn info(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path((bucket, path)): Path<(String, String)>,
) -> StorageResult<Response> {
    Ok(json_text(
        meta::info(&acting(&st, &p), &bucket, &path).await?,
    ))
}

/// `GET /object/info/public/:bucket/*path`: public buckets only.
pub(super) async fn info_public(
    State(st): State<AppState>,
    Path((bucket, path)): Path<(String, String)>,
) -> StorageResult<Response> {
    let service = Principal::for_role(Role::ServiceRole);
    let who = acting(&st, &service);
    if !meta::bucket(&who, &bucket).await?.public {
        return Err(StorageError::no_such_bucket().into());
    }
    Ok(json_text(meta::info(&who, &bucket, &path).await?))
}

/// Body of `POST /object/sign/...`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignBody {
    expires_in: Value,
    paths: Option<Vec<String>>,
    /// storage-js's `transform` option: the URL renders the image.
    transform: Option<Value>,
}

fn expires_in(v: &Value) -> Result<u64, StorageError> {
    v.as_u64()
        .filter(|n| (1..=10 * 365 * 24 * 3600).contains(n))
        .ok_or_else(|| {
            StorageError::new(
                400,
                "InvalidParameter",
                "InvalidParameter",
                "Invalid Parameter expiresIn",
            )
        })
}

fn signed_url(st: &AppState, bucket: &str, path: &str, secs: u64) -> Result<String, StorageError> {
    let t = token::sign(st.gate.jwt(), Scope::Download, bucket, path, secs, None)?;
    Ok(format!("/object/sign/{bucket}/{path}?token={t}"))
}

/// `POST /object/sign/:bucket/*path`: the caller must be able to read the
/// object now (SELECT).
pub(super) async fn sign(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path((bucket, path)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> StorageResult<Response> {
    let b: SignBody = json_body(&bytes)?;
    let secs = expires_in(&b.expires_in)?;
    meta::find(&acting(&st, &p), &bucket, &path).await?;
    let url = match b.transform.filter(|t| !t.is_null()) {
        Some(t) => {
            let t = super::render::transform_of_json(&t)?;
            let token = token::sign_render(st.gate.jwt(), &bucket, &path, secs, &t.to_query())?;
            format!("/render/image/sign/{bucket}/{path}?token={token}")
        }
        None => signed_url(&st, &bucket, &path, secs)?,
    };
    Ok(axum::Json(json!({ "signedURL": url })).into_response())
}

/// `POST /object/sign/:bucket` with `{expiresIn, paths}`: one entry per path,
/// in order; what the caller cannot read gets an error instead of a URL.
pub(super) async fn sign_many(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path(bucket): Path<String>,
    bytes: axum::body::Bytes,
) -> StorageResult<Response> {
    let b: SignBody = json_body(&bytes)?;
    let secs = expires_in(&b.expires_in)?;
    let paths = b.paths.unwrap_or_default();
    if paths.is_empty() || paths.len() > 1000 {
        return Err(StorageError::invalid("paths must list 1 to 1000 names").into());
    }
    let seen = meta::visible(&acting(&st, &p), &bucket, paths.clone()).await?;
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        out.push(if seen.contains(&path) {
            json!({"error": null, "path": path, "signedURL": signed_url(&st, &bucket, &path, secs)?})
        } else {
            json!({
                "error": "Either the object does not exist or you do not have access to it",
                "path": path,
                "signedURL": null,
            })
        });
    }
    Ok(axum::Json(Value::Array(out)).into_response())
}

/// `POST /object/list-v2/:bucket`.
#[derive(Deserialize)]
struct ListV2Body {
    prefix: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
    with_delimiter: Option<bool>,
    #[serde(rename = "sortBy")]
    sort_by: Option<SortBy>,
}

/// storage-api's cursor-paged listing: `{hasNext, nextCursor?, folders,
/// objects}`; the cursor is opaque (base64 of the last entry's name), and
/// only name order is offered.
pub(super) async fn list_v2(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path(bucket): Path<String>,
    bytes: axum::body::Bytes,
) -> StorageResult<Response> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let b: ListV2Body = json_body(&bytes)?;
    let (_, ascending) = SortBy::resolve(b.sort_by.as_ref(), &["name"])?;
    let cursor = match &b.cursor {
        Some(c) => Some(
            b64.decode(c)
                .ok()
                .and_then(|v| String::from_utf8(v).ok())
                .ok_or_else(|| {
                    StorageError::new(
                        400,
                        "InvalidParameter",
                        "InvalidParameter",
                        "Invalid cursor",
                    )
                })?,
        ),
        None => None,
    };
    let limit = b.limit.unwrap_or(1000).clamp(1, 1000);
    let rows = meta::list_v2(
        &acting(&st, &p),
        &bucket,
        b.prefix.as_deref().unwrap_or(""),
        b.with_delimiter.unwrap_or(false),
        cursor,
        limit + 1,
        !ascending,
    )
    .await?;
    let mut rows: Vec<Value> = serde_json::from_str(&rows).map_err(|_| StorageError::internal())?;
    let has_next = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = rows
        .last()
        .and_then(|r| r["entry"].as_str())
        .map(str::to_string);
    let (mut folders, mut objects) = (Vec::new(), Vec::new());
    for mut r in rows {
        let folder = r["folder"].as_bool().unwrap_or(false);
        if let Value::Object(m) = &mut r {
            m.remove("entry");
            m.remove("folder");
            if !folder {
                m.remove("key");
            }
        }
        if folder {
            folders.push(r);
        } else {
            objects.push(r);
        }
    }
    let mut out = json!({ "hasNext": has_next, "folders": folders, "objects": objects });
    if has_next {
        if let Some(n) = next {
            out["nextCursor"] = json!(b64.encode(n.as_bytes()));
            out["nextCursorKey"] = json!(n);
        }
    }
    Ok(axum::Json(out).into_response())
}
