//! Downloads: `/object/:bucket/*` and `/object/authenticated/:bucket/*` as the
//! caller (SELECT under RLS), `/object/public/:bucket/*` for public buckets
//! and `/object/sign/:bucket/*?token=` for signed URLs (no key; the bucket
//! flag or the token is the credential). One response path for all: `Range`
//! (206/416), `If-None-Match` (304), `ETag`, `Last-Modified`, the stored
//! `Cache-Control` (signed URLs send `Expires`), `?download[=name]`. The body
//! streams from the backend. (Image transforms, storage part two, will sit
//! between the lookup and this response.)

use super::acting;
use super::error::{StorageCaller, StorageQuery, StorageResult};
use crate::server::state::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use std::time::{Duration, UNIX_EPOCH};
use wasmbase_host_api::storage::backend::ByteRange;
use wasmbase_host_api::storage::meta::{self, Object};
use wasmbase_host_api::storage::token::{self, Scope};
use wasmbase_host_api::storage::{names, StorageError};
use wasmbase_host_api::{Principal, Role};

/// `?download` / `?download=name`.
#[derive(Deserialize)]
pub(super) struct DownloadQuery {
    download: Option<String>,
}

pub(super) async fn authenticated(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    method: Method,
    Path((bucket, path)): Path<(String, String)>,
    StorageQuery(q): StorageQuery<DownloadQuery>,
    headers: HeaderMap,
) -> StorageResult<Response> {
    names::object_key(&path)?;
    let obj = meta::find(&acting(&st, &p), &bucket, &path).await?;
    respond(&st, &method, &headers, &path, obj, q.download, None).await
}

pub(super) async fn public(
    State(st): State<AppState>,
    method: Method,
    Path((bucket, path)): Path<(String, String)>,
    StorageQuery(q): StorageQuery<DownloadQuery>,
    headers: HeaderMap,
) -> StorageResult<Response> {
    names::object_key(&path)?;
    let anon = Principal::for_role(Role::Anon);
    let obj = meta::find_public(&acting(&st, &anon), &bucket, &path).await?;
    respond(&st, &method, &headers, &path, obj, q.download, None).await
}

/// Query of a signed download.
#[derive(Deserialize)]
pub(super) struct SignedQuery {
    token: Option<String>,
    download: Option<String>,
}

pub(super) async fn signed(
    State(st): State<AppState>,
    method: Method,
    Path((bucket, path)): Path<(String, String)>,
    StorageQuery(q): StorageQuery<SignedQuery>,
    headers: HeaderMap,
) -> StorageResult<Response> {
    let t = q
        .token
        .ok_or_else(|| StorageError::invalid("querystring must have required property 'token'"))?;
    let grant = token::verify(st.gate.jwt(), &t, Scope::Download, &bucket, &path)?;
    let service = Principal::for_role(Role::ServiceRole);
    let obj = meta::find(&acting(&st, &service), &bucket, &path).await?;
    respond(
        &st,
        &method,
        &headers,
        &path,
        obj,
        q.download,
        Some(grant.exp),
    )
    .await
}

/// What `encodeURIComponent` leaves alone.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Parses a single `bytes=` range against `size` (storage-api's forms:
/// `a-b`, `a-`, `-n`). `Ok(None)`: no Range header; `Err`: unsatisfiable.
fn range(headers: &HeaderMap, size: u64) -> Result<Option<ByteRange>, StorageError> {
    let Some(v) = headers.get(http::header::RANGE) else {
        return Ok(None);
    };
    let bad = || {
        StorageError::new(
            416,
            "InvalidRange",
            "invalid_range",
            "invalid range provided",
        )
    };
    let spec = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().strip_prefix("bytes="))
        .ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
    if size == 0 {
        return Err(bad());
    }
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (false, false) => (num(a)?, num(b)?.min(size - 1)),
        (false, true) => (num(a)?, size - 1),
        (true, false) => {
            let n = num(b)?;
            if n == 0 {
                return Err(bad());
            }
            (size.saturating_sub(n), size - 1)
        }
        (true, true) => return Err(bad()),
    };
    if start >= size || end < start {
        return Err(bad());
    }
    Ok(Some(ByteRange { start, end }))
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What every answer about a stored object carries, whole or transformed:
/// `ETag`, `Last-Modified`, `X-Robots-Tag`, and the stored `Cache-Control` or,
/// for a signed URL, `Expires` (its token's expiry).
pub(super) fn object_headers(
    obj: &Object,
    etag: &str,
    expires: Option<u64>,
) -> http::response::Builder {
    let b = Response::builder()
        .header(http::header::ETAG, hv(etag))
        .header(
            http::header::LAST_MODIFIED,
            hv(&httpdate::fmt_http_date(obj.updated_at)),
        )
        .header("x-robots-tag", "none");
    match expires {
        Some(exp) => b.header(
            http::header::EXPIRES,
            hv(&httpdate::fmt_http_date(
                UNIX_EPOCH + Duration::from_secs(exp),
            )),
        ),
        None => b.header(
            http::header::CACHE_CONTROL,
            hv(obj.meta_str("cacheControl").unwrap_or("no-cache")),
        ),
    }
}

/// Whether the request's `If-None-Match` names `etag` (or `*`): a 304.
pub(super) fn not_modified(req: &HeaderMap, etag: &str) -> bool {
    !etag.is_empty()
        && req
            .get(http::header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

#[allow(clippy::too_many_arguments)]
async fn respond(
    st: &AppState,
    method: &Method,
    req: &HeaderMap,
    path: &str,
    obj: Object,
    download: Option<String>,
    expires: Option<u64>,
) -> StorageResult<Response> {
    let size = obj.size();
    let etag = obj.meta_str("eTag").unwrap_or("").to_string();
    let mut mime = obj
        .meta_str("mimetype")
        .unwrap_or("application/octet-stream")
        .to_string();
    // Never let a stored page run as this origin's HTML.
    if mime.to_ascii_lowercase().contains("text/html") {
        mime = "text/plain".into();
    }
    let mut b = object_headers(&obj, &etag, expires)
        .header(http::header::ACCEPT_RANGES, "bytes")
        .header(http::header::CONTENT_TYPE, hv(&mime));
    if let Some(name) = download {
        let name = if name.is_empty() {
            path.rsplit('/').next().unwrap_or(path).to_string()
        } else {
            name
        };
        let enc = utf8_percent_encode(&name, URI_COMPONENT).to_string();
        b = b.header(
            http::header::CONTENT_DISPOSITION,
            hv(&format!(
                "attachment; filename={enc}; filename*=UTF-8''{enc}"
            )),
        );
    }
    if not_modified(req, &etag) {
        return Ok(b
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid response"));
    }
    let r = range(req, size)?;
    if *method == Method::HEAD {
        return Ok(b
            .header(http::header::CONTENT_LENGTH, size)
            .body(Body::empty())
            .expect("valid response"));
    }
    let fetched = st.storage.store.get(&obj.version, r).await?;
    if let Some(r) = r {
        b = b.status(StatusCode::PARTIAL_CONTENT).header(
            http::header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", r.start, r.end),
        );
    }
    Ok(b.header(http::header::CONTENT_LENGTH, fetched.len)
        .body(Body::from_stream(fetched.body))
        .expect("valid response"))
}
