//! Writing an object, in the steps every path shares — the HTTP upload,
//! signed uploads, copy and the functions' `storage` interface: where it may
//! go and how big it may be ([`target`]), its bytes under a fresh version key
//! ([`store`]), then its row as the caller ([`record`]), whose refusal queues
//! the bytes for deletion, so a refused write leaves nothing behind. Kept as
//! separate steps because a function's upload records its row only when the
//! guest finishes, not when its byte stream ends.

use super::backend::{self, ByteStream, Stored};
use super::meta::{self, As, NewObject};
use super::{names, Storage, StorageError};
use serde_json::{json, Value};

/// Where an upload goes, checked before any byte is read.
#[derive(Debug, Clone)]
pub struct Target {
    /// Bucket id.
    pub bucket: String,
    /// Object name.
    pub name: String,
    /// Most bytes the object may have: the bucket's `file_size_limit`,
    /// capped by the server's `storage.max_upload_bytes`.
    pub limit: u64,
    allowed_mime: Option<Vec<String>>,
}

/// Checks the names and reads the bucket's limits (as storage-api, whoever
/// asks: a caller who may upload need not read `storage.buckets`).
pub async fn target(
    storage: &Storage,
    who: &As<'_>,
    bucket: &str,
    name: &str,
) -> Result<Target, StorageError> {
    names::bucket_name(bucket)?;
    names::object_key(name)?;
    let b = meta::bucket(who, bucket).await?;
    let limit = match b.file_size_limit {
        Some(l) => (l.max(0) as u64).min(storage.max_upload_bytes),
        None => storage.max_upload_bytes,
    };
    Ok(Target {
        bucket: bucket.to_string(),
        name: name.to_string(),
        limit,
        allowed_mime: b.allowed_mime_types,
    })
}

impl Target {
    /// Whether the bucket takes `mime` (folder placeholders always go in).
    pub fn check_mime(&self, mime: &str) -> Result<(), StorageError> {
        if self.name.ends_with(".emptyFolderPlaceholder") {
            return Ok(());
        }
        names::mime_allowed(self.allowed_mime.as_deref(), mime)
    }
}

/// Largest user metadata (`metadata`, `x-metadata`, a guest's `user-metadata`),
/// as storage-api.
pub const MAX_USER_METADATA: usize = 1024 * 1024;

/// The size rule of user metadata, for every upload path (what each does with
/// text that is not a JSON object is its own: HTTP ignores it as storage-api
/// does, a guest gets an error).
pub fn check_user_metadata_size(text: &str) -> Result<(), StorageError> {
    if text.len() > MAX_USER_METADATA {
        return Err(StorageError::new(
            413,
            "EntityTooLarge",
            "Payload too large",
            "The user_metadata exceeded the maximum allowed size",
        ));
    }
    Ok(())
}

/// How the bytes are described to downloads.
#[derive(Debug, Clone)]
pub struct Describe {
    /// `Content-Type`.
    pub mime: String,
    /// `Cache-Control` as sent back (`max-age=3600`, `no-cache`).
    pub cache_control: String,
    /// The uploader's JSON object.
    pub user_metadata: Option<Value>,
}

/// Bytes stored but not yet recorded.
#[derive(Debug, Clone)]
pub struct Written {
    /// Backend key (the object version).
    pub version: String,
    /// Size, eTag, time.
    pub stored: Stored,
}

/// Streams `body` (already cut at the target's limit, see
/// `backend::limited`) into the backend under a fresh version key.
pub async fn store(storage: &Storage, body: ByteStream) -> Result<Written, StorageError> {
    let version = backend::new_key();
    let stored = storage.store.put(&version, body).await?;
    Ok(Written { version, stored })
}

/// Records the written bytes as `t`'s object, as `who` (the INSERT policy
/// decides; `upsert` also needs SELECT and UPDATE), owned by `owner`; returns
/// the row id. If the row is refused, the bytes are queued for deletion.
pub async fn record(
    storage: &Storage,
    who: &As<'_>,
    t: &Target,
    w: Written,
    d: Describe,
    owner: Option<String>,
    upsert: bool,
) -> Result<String, StorageError> {
    let version = w.version.clone();
    let recorded = record_row(storage, who, t, w, d, owner, upsert).await;
    if recorded.is_err() {
        storage.forget(&version).await;
    }
    recorded
}

/// [`record`] without the clean-up: a caller that can try again (a resumable
/// upload's finish, after a database blip) decides what becomes of the bytes.
pub async fn record_row(
    storage: &Storage,
    who: &As<'_>,
    t: &Target,
    w: Written,
    d: Describe,
    owner: Option<String>,
    upsert: bool,
) -> Result<String, StorageError> {
    let metadata = json!({
        "eTag": w.stored.etag,
        "size": w.stored.size,
        "mimetype": d.mime,
        "cacheControl": d.cache_control,
        "lastModified": crate::time::rfc3339_millis(w.stored.last_modified),
        "contentLength": w.stored.size,
        "httpStatusCode": 200,
    });
    let row = NewObject {
        bucket: t.bucket.clone(),
        name: t.name.clone(),
        version: w.version.clone(),
        metadata,
        user_metadata: d.user_metadata,
        owner,
    };
    let id = meta::insert(who, row, upsert).await?;
    // A replaced version was queued by the trigger.
    if upsert {
        storage.gc_kick.notify_one();
    }
    Ok(id)
}

/// `Cache-Control` from storage-js's `cacheControl` (seconds, as text):
/// `max-age=N`, or `no-cache` when none is given.
pub fn cache_control(seconds: Option<&str>) -> String {
    match seconds {
        Some(c) if !c.is_empty() => format!("max-age={c}"),
        _ => "no-cache".into(),
    }
}
