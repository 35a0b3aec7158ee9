//! Uploads: `POST` (create, `x-upsert`) and `PUT` (update, always an upsert)
//! on `/object/:bucket/*path`, and signed upload URLs. The body — multipart
//! (storage-js's Blob/File form: `cacheControl`, `metadata`, then the file
//! part) or raw (`content-type`, `cache-control`, `x-metadata`) — streams
//! straight into the backend under a fresh version key, cut off at the upload
//! limit (the bucket's `file_size_limit` or `storage.max_upload_bytes`) or an
//! idle pause; only then is the row written as the caller (host-api's
//! `storage::objects` steps, which functions share). If the row is refused,
//! the bytes go to the deletion queue: nothing half-made is visible, nothing
//! is orphaned.

use super::acting;
use super::error::{StorageCaller, StorageQuery, StorageResult};
use crate::server::state::AppState;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use wasmbase_host_api::storage::backend::{self, ByteStream};
use wasmbase_host_api::storage::meta::{self, As};
use wasmbase_host_api::storage::objects::{self, Describe};
use wasmbase_host_api::storage::token::{self, Scope};
use wasmbase_host_api::storage::{names, StorageError};
use wasmbase_host_api::{Principal, Role};

/// An upload body, parsed up to the start of its bytes.
struct Incoming {
    describe: Describe,
    body: ByteStream,
}

/// A header's text, if it has one.
pub(super) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn user_metadata(text: &str) -> Result<Option<Value>, StorageError> {
    objects::check_user_metadata_size(text)?;
    // Unparseable metadata is ignored, as storage-api does.
    Ok(serde_json::from_str::<Value>(text)
        .ok()
        .filter(Value::is_object))
}

/// Most form fields (`cacheControl`, `metadata`, ...) before the file part.
const MAX_FIELDS: usize = 10;

/// A form field's text, bounded (the body is exempt from the server's body
/// limit, so nothing here may buffer without one).
async fn field_text(mut field: multer::Field<'static>) -> StorageResult<String> {
    let bad = |e: multer::Error| StorageError::invalid(format!("invalid multipart body: {e}"));
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(bad)? {
        buf.extend_from_slice(&chunk);
        if buf.len() > objects::MAX_USER_METADATA {
            return Err(StorageError::new(
                413,
                "EntityTooLarge",
                "Payload too large",
                "A form field exceeded the maximum allowed size",
            )
            .into());
        }
    }
    String::from_utf8(buf).map_err(|_| StorageError::invalid("a form field is not UTF-8").into())
}

/// Reads the request up to the object's bytes; the bytes stay a stream.
async fn incoming(
    headers: &HeaderMap,
    body: SharedBody,
    limit: u64,
    st: &AppState,
) -> StorageResult<Incoming> {
    let idle = st.storage.idle_timeout;
    let ctype = header(headers, "content-type").unwrap_or("");
    if let Ok(boundary) = multer::parse_boundary(ctype) {
        let mut form = multer::Multipart::new(body, boundary);
        let mut cache_control = None;
        let mut meta = None;
        let mut mime_field = None;
        let mut fields = 0;
        loop {
            let field = form
                .next_field()
                .await
                .map_err(|e| StorageError::invalid(format!("invalid multipart body: {e}")))?;
            let Some(field) = field else {
                return Err(StorageError::invalid("No content provided").into());
            };
            let is_file = field.file_name().is_some() || matches!(field.name(), None | Some(""));
            if !is_file {
                fields += 1;
                if fields > MAX_FIELDS {
                    return Err(StorageError::invalid(format!(
                        "a multipart upload takes at most {MAX_FIELDS} fields before the file"
                    ))
                    .into());
                }
                let name = field.name().unwrap_or("").to_string();
                let value = field_text(field).await?;
                match name.as_str() {
                    "cacheControl" => cache_control = Some(value),
                    "metadata" | "userMetadata" => meta = user_metadata(&value)?,
                    "contentType" => mime_field = Some(value),
                    _ => {}
                }
                continue;
            }
            let mime = mime_field
                .or_else(|| field.content_type().map(|m| m.to_string()))
                .unwrap_or_else(|| "application/octet-stream".into());
            return Ok(Incoming {
                describe: Describe {
                    mime,
                    cache_control: objects::cache_control(cache_control.as_deref()),
                    user_metadata: meta,
                },
                body: backend::limited(field, limit, idle),
            });
        }
    }
    let announced = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(StorageError::too_large().into());
    }
    let meta = match header(headers, "x-metadata") {
        Some(b64) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default();
            user_metadata(&String::from_utf8_lossy(&raw))?
        }
        None => None,
    };
    Ok(Incoming {
        describe: Describe {
            mime: if ctype.is_empty() {
                "application/octet-stream".into()
            } else {
                ctype.to_string()
            },
            cache_control: header(headers, "cache-control")
                .unwrap_or("no-cache")
                .to_string(),
            user_metadata: meta,
        },
        body: backend::limited(body, limit, idle),
    })
}

/// How much of a refused upload's body is still read (and discarded) before the
/// error is sent: closing a connection with unread bytes makes the kernel send
/// a reset, which can destroy the error response before the client reads it.
const DRAIN_BYTES: u64 = 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// The request body, shared so that after an error the upload path can read
/// what the parser left unread (see [`DRAIN_BYTES`]).
#[derive(Clone)]
pub(super) struct SharedBody(Arc<parking_lot::Mutex<axum::body::BodyDataStream>>);

impl futures::Stream for SharedBody {
    type Item = Result<bytes::Bytes, axum::Error>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.lock().poll_next_unpin(cx)
    }
}

impl SharedBody {
    pub(super) fn new(body: axum::body::Body) -> SharedBody {
        SharedBody(Arc::new(parking_lot::Mutex::new(body.into_data_stream())))
    }

    /// Reads and drops what is left of the body (bounded), so the error
    /// that follows reaches the client.
    pub(super) async fn drain(self) {
        let mut this = self;
        let mut read = 0u64;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(chunk)) = this.next().await {
                read += chunk.len() as u64;
                if read > DRAIN_BYTES {
                    break;
                }
            }
        })
        .await;
    }
}

/// Streams the body into the backend and records the object as `who`
/// (with `owner`); returns the object id. On any error, drains the rest of
/// the body (bounded) first.
async fn store(
    st: &AppState,
    who: &As<'_>,
    bucket: &str,
    name: &str,
    upsert: bool,
    owner: Option<String>,
    req: Request,
) -> StorageResult<String> {
    let (parts, body) = req.into_parts();
    let body = SharedBody::new(body);
    let result = store_body(
        st,
        who,
        (bucket, name),
        upsert,
        owner,
        &parts.headers,
        body.clone(),
    )
    .await;
    if result.is_err() {
        body.drain().await;
    }
    result
}

async fn store_body(
    st: &AppState,
    who: &As<'_>,
    (bucket, name): (&str, &str),
    upsert: bool,
    owner: Option<String>,
    headers: &HeaderMap,
    body: SharedBody,
) -> StorageResult<String> {
    let target = objects::target(&st.storage, who, bucket, name).await?;
    let inc = incoming(headers, body, target.limit, st).await?;
    target.check_mime(&inc.describe.mime)?;
    let written = objects::store(&st.storage, inc.body).await?;
    Ok(objects::record(
        &st.storage,
        who,
        &target,
        written,
        inc.describe,
        owner,
        upsert,
    )
    .await?)
}

pub(super) fn upsert_header(h: &HeaderMap) -> bool {
    header(h, "x-upsert").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

pub(super) async fn create(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path((bucket, path)): Path<(String, String)>,
    req: Request,
) -> StorageResult<Response> {
    let upsert = upsert_header(req.headers());
    upload(st, p, bucket, path, upsert, req).await
}

pub(super) async fn update(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path((bucket, path)): Path<(String, String)>,
    req: Request,
) -> StorageResult<Response> {
    upload(st, p, bucket, path, true, req).await
}

async fn upload(
    st: AppState,
    p: Principal,
    bucket: String,
    path: String,
    upsert: bool,
    req: Request,
) -> StorageResult<Response> {
    let who = acting(&st, &p);
    let id = store(&st, &who, &bucket, &path, upsert, who.sub(), req).await?;
    Ok(axum::Json(json!({ "Id": id, "Key": format!("{bucket}/{path}") })).into_response())
}

/// `POST /object/upload/sign/:bucket/*path`: checks now, as the caller, that
/// the upload would be allowed (the INSERT policy, an existing name), then
/// hands out a token that uploads without RLS for two hours.
pub(super) async fn sign_upload(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path((bucket, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> StorageResult<Response> {
    names::bucket_name(&bucket)?;
    names::object_key(&path)?;
    let who = acting(&st, &p);
    meta::bucket(&who, &bucket).await?;
    let upsert = upsert_header(&headers);
    meta::can_insert(&who, &bucket, &path, upsert).await?;
    let sub = who.sub();
    let t = token::sign(
        st.gate.jwt(),
        Scope::Upload,
        &bucket,
        &path,
        token::UPLOAD_URL_SECS,
        Some((upsert, sub.as_deref())),
    )?;
    Ok(axum::Json(json!({
        "url": format!("/object/upload/sign/{bucket}/{path}?token={t}"),
        "token": t,
    }))
    .into_response())
}

/// Query of signed URLs.
#[derive(Deserialize)]
pub(super) struct TokenQuery {
    pub(super) token: Option<String>,
}

/// `PUT /object/upload/sign/:bucket/*path?token=`: the token is the
/// credential (no key needed); the row is written as `service_role` with the
/// token's owner and upsert flag.
pub(super) async fn signed_upload(
    State(st): State<AppState>,
    Path((bucket, path)): Path<(String, String)>,
    StorageQuery(q): StorageQuery<TokenQuery>,
    req: Request,
) -> StorageResult<Response> {
    let t = q
        .token
        .ok_or_else(|| StorageError::invalid("querystring must have required property 'token'"))?;
    let grant = token::verify(st.gate.jwt(), &t, Scope::Upload, &bucket, &path)?;
    let service = Principal::for_role(Role::ServiceRole);
    let who = acting(&st, &service);
    store(&st, &who, &bucket, &path, grant.upsert, grant.owner, req).await?;
    Ok(axum::Json(json!({ "Key": format!("{bucket}/{path}") })).into_response())
}
