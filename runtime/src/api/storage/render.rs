//! Image transformations: `/render/image/authenticated/:bucket/*` (the caller
//! reads the object under RLS), `/render/image/public/:bucket/*` (public
//! buckets, no key) and `/render/image/sign/:bucket/*?token=` (a signed URL
//! whose token fixes the transformation) — what storage-js's `transform`
//! option builds for `download`, `getPublicUrl` and `createSignedUrl`.
//!
//! parse (`Transform` from the query or the token) → plan (find the object as
//! the caller; pick WebP or the source's format from `Accept`) → exec (the
//! node's cache, else fetch the bytes and transform them on the blocking pool,
//! at most `storage.render_concurrency` at once) → response (`Vary: Accept`,
//! the object's `Cache-Control`, an ETag of the result).

use super::acting;
use super::download::{not_modified, object_headers};
use super::error::{StorageCaller, StorageResult};
use crate::server::state::AppState;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use futures::TryStreamExt;
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;
use tokio::sync::Semaphore;
use wasmbase_host_api::storage::meta::{self, Object};
use wasmbase_host_api::storage::token::{self, Scope};
use wasmbase_host_api::storage::transform::{self, Transform, MAX_SOURCE_BYTES};
use wasmbase_host_api::storage::{names, StorageError};
use wasmbase_host_api::{Principal, Role};

/// This node's transformation limit and result cache. Results are files named
/// by [`Transform::cache_key`] (object version + parameters + output format),
/// so an overwritten object never meets an old result; the oldest files go
/// when the cache grows past its size.
pub struct Renderer {
    dir: PathBuf,
    cap: u64,
    used: Arc<AtomicU64>,
    evicting: Arc<AtomicBool>,
    slots: Arc<Semaphore>,
    /// Requests waiting for a slot; past [`Renderer::max_waiting`] they get 503.
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl Renderer {
    /// A renderer caching up to `cap` bytes in `dir` (created, private to this
    /// user: it holds renderings of private objects), running at most
    /// `concurrency` transformations at once with 8 times as many waiting.
    pub fn new(dir: PathBuf, cap: u64, concurrency: usize) -> anyhow::Result<Renderer> {
        crate::cache_dir::private(&dir, "storage.render_cache_dir")?;
        let used = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        let concurrency = concurrency.max(1);
        Ok(Renderer {
            dir,
            cap,
            used: Arc::new(AtomicU64::new(used)),
            evicting: Default::default(),
            slots: Arc::new(Semaphore::new(concurrency)),
            waiting: AtomicUsize::new(0),
            max_waiting: concurrency * 8,
        })
    }

    async fn cached(&self, key: &str) -> Option<Bytes> {
        tokio::fs::read(self.dir.join(key))
            .await
            .ok()
            .map(Bytes::from)
    }

    /// A slot to transform in, held until the transformation ends (moved into
    /// the blocking task: a client that goes away does not free it early).
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, StorageError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(StorageError::new(
                503,
                "SlowDown",
                "slow_down",
                "Too many image transformations at once; retry shortly",
            ));
        }
        let p = self.slots.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        p.map_err(|_| StorageError::internal())
    }

    /// Stores a result (write, then rename: a reader never sees half a file);
    /// a trim of the cache, if it grew past its size, runs on its own.
    async fn keep(&self, key: &str, bytes: &[u8]) {
        if self.cap == 0 || bytes.len() as u64 > self.cap {
            return;
        }
        let tmp = self.dir.join(format!(".{key}.{}", uuid::Uuid::new_v4()));
        let done = async {
            tokio::fs::write(&tmp, bytes).await?;
            tokio::fs::rename(&tmp, self.dir.join(key)).await
        }
        .await;
        if let Err(e) = done {
            let _ = tokio::fs::remove_file(&tmp).await;
            tracing::warn!(error = %e, "storage: caching a transformed image");
            return;
        }
        let len = bytes.len() as u64;
        if self.used.fetch_add(len, Ordering::Relaxed) + len <= self.cap
            || self.evicting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        // One trim at a time, detached from the request that started it.
        let (dir, target, used, evicting) = (
            self.dir.clone(),
            self.cap / 10 * 9,
            self.used.clone(),
            self.evicting.clone(),
        );
        tokio::task::spawn_blocking(move || {
            if let Ok(total) = evict(&dir, target) {
                used.store(total, Ordering::Relaxed);
            }
            evicting.store(false, Ordering::Release);
        });
    }
}

/// Deletes the oldest cached results until at most `target` bytes are left;
/// returns what is left.
fn evict(dir: &std::path::Path, target: u64) -> std::io::Result<u64> {
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| {
            let e = e.ok()?;
            // Files being written (`.key.uuid`) are not the cache's yet.
            if e.file_name().to_string_lossy().starts_with('.') {
                return None;
            }
            let m = e.metadata().ok()?;
            m.is_file()
                .then(|| (m.modified().unwrap_or(UNIX_EPOCH), m.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= target {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
    Ok(total)
}

/// `transform` of storage-js's `createSignedUrl` (numbers or strings).
pub(super) fn transform_of_json(v: &Value) -> Result<Transform, StorageError> {
    let Value::Object(m) = v else {
        return Err(StorageError::invalid("transform must be an object"));
    };
    let pairs: Vec<(String, String)> = m
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect();
    Transform::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn transform_of_query(q: Option<&str>) -> Result<Transform, StorageError> {
    let pairs: Vec<(String, String)> = q
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    Transform::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

pub(super) async fn authenticated(
    State(st): State<AppState>,
    StorageCaller(p): StorageCaller,
    Path((bucket, path)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> StorageResult<Response> {
    names::object_key(&path)?;
    let t = transform_of_query(q.as_deref())?;
    let obj = meta::find(&acting(&st, &p), &bucket, &path).await?;
    respond(&st, &headers, obj, &t, None).await
}

pub(super) async fn public(
    State(st): State<AppState>,
    Path((bucket, path)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> StorageResult<Response> {
    names::object_key(&path)?;
    let t = transform_of_query(q.as_deref())?;
    let anon = Principal::for_role(Role::Anon);
    let obj = meta::find_public(&acting(&st, &anon), &bucket, &path).await?;
    respond(&st, &headers, obj, &t, None).await
}

/// A signed render URL: the token names the object and the transformation;
/// the query's own parameters are ignored.
pub(super) async fn signed(
    State(st): State<AppState>,
    Path((bucket, path)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> StorageResult<Response> {
    let token = q
        .as_deref()
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        })
        .ok_or_else(|| StorageError::invalid("querystring must have required property 'token'"))?;
    let grant = token::verify(st.gate.jwt(), &token, Scope::Render, &bucket, &path)?;
    let t = transform_of_query(Some(grant.transformations.as_deref().unwrap_or("")))?;
    let service = Principal::for_role(Role::ServiceRole);
    let obj = meta::find(&acting(&st, &service), &bucket, &path).await?;
    respond(&st, &headers, obj, &t, Some(grant.exp)).await
}

async fn respond(
    st: &AppState,
    req: &HeaderMap,
    obj: Object,
    t: &Transform,
    expires: Option<u64>,
) -> StorageResult<Response> {
    let accept = req.get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let webp = t.webp_for(accept);
    let key = t.cache_key(&obj.version, webp);
    let etag = format!("\"{}\"", &key[..32]);
    let b = object_headers(&obj, &etag, expires).header(http::header::VARY, "Accept");
    if not_modified(req, &etag) {
        return Ok(b
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid response"));
    }
    let r = &st.render;
    let (bytes, hit) = match r.cached(&key).await {
        Some(bytes) => (bytes, true),
        None => {
            let too_large = || {
                StorageError::new(
                    422,
                    "InvalidImage",
                    "invalid_image",
                    format!(
                        "The source image is larger than {} MB",
                        MAX_SOURCE_BYTES / (1024 * 1024)
                    ),
                )
            };
            if obj.size() > MAX_SOURCE_BYTES {
                return Err(too_large().into());
            }
            // The slot first: at most `concurrency` sources are in memory.
            let slot = r.slot().await?;
            let fetched = st.storage.store.get(&obj.version, None).await?;
            // Capped whatever the row's metadata says.
            let mut src = Vec::with_capacity(fetched.len.min(MAX_SOURCE_BYTES) as usize);
            let mut body = fetched.body;
            while let Some(chunk) = body
                .try_next()
                .await
                .map_err(|_| StorageError::internal())?
            {
                if (src.len() + chunk.len()) as u64 > MAX_SOURCE_BYTES {
                    return Err(too_large().into());
                }
                src.extend_from_slice(&chunk);
            }
            let t2 = t.clone();
            let rendered = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                transform::render(&src, &t2, webp)
            })
            .await
            .map_err(|_| StorageError::internal())??;
            let bytes = Bytes::from(rendered);
            r.keep(&key, &bytes).await;
            (bytes, false)
        }
    };
    Ok(
        b.header(http::header::CONTENT_TYPE, transform::media_type(&bytes))
            .header(http::header::CONTENT_LENGTH, bytes.len())
            .header("x-wasmbase-render-cache", if hit { "hit" } else { "miss" })
            .body(Body::from(bytes))
            .expect("valid response"),
    )
}
