//! Where an object's bytes live: one trait, [`ObjectStore`], with the local
//! disk backend (`local.rs`, the default) and S3 behind it. A backend only
//! ever sees keys Wasmbase made (an object version's UUID), never a name a
//! user chose; metadata and permissions live in PostgreSQL.
//!
//! Bodies are streams both ways, so no object is ever held whole in memory.
//! The size limit and the idle timeout of an upload are applied to the stream
//! before a backend sees it ([`limited`]), so every backend enforces them alike.

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::time::{Duration, SystemTime};

/// A body on its way in or out.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// Why bytes could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The body passed the upload's size limit (the partial data is discarded).
    #[error("the object exceeded the maximum allowed size")]
    TooLarge,
    /// The client sent nothing for the idle timeout.
    #[error("the upload was idle for too long")]
    Idle,
    /// The client's body ended in an error (it disconnected).
    #[error("the request body failed: {0}")]
    Client(String),
    /// No bytes under that key.
    #[error("no such object in the backend")]
    NotFound,
    /// The backend failed (disk, network, S3 error); logged, answered 5xx.
    #[error("storage backend error: {0}")]
    Backend(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound
        } else {
            StoreError::Backend(e.to_string())
        }
    }
}

/// What a finished upload stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Bytes written.
    pub size: u64,
    /// Quoted MD5 hex of the bytes, as storage-api's `eTag`.
    pub etag: String,
    /// When the bytes were written.
    pub last_modified: SystemTime,
}

/// An inclusive byte range of an object, already checked against its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

/// Bytes being read.
pub struct Fetched {
    /// The bytes (of the range, when one was asked for).
    pub body: ByteStream,
    /// Length of `body`.
    pub len: u64,
}

/// One stored part of a resumable upload, as the backend acknowledged it
/// (kept in PostgreSQL, so any node can finish the upload).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Part {
    /// 1-based, in order.
    pub number: i32,
    /// Bytes in the part.
    pub size: u64,
    /// The backend's tag for the part (S3's part ETag; empty locally).
    pub etag: String,
}

/// A place to keep objects' bytes. Keys are Wasmbase's (object version UUIDs).
/// Beside `put`, the part path of resumable uploads (`begin_parts`,
/// `put_part`, `complete_parts`, `abort_parts`): parts are numbered from 1
/// and stored again under the same number when a crash left one unrecorded.
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `body` under `key`, all or nothing: a failed or cut-off upload
    /// leaves nothing readable under `key`.
    fn put(&self, key: &str, body: ByteStream) -> BoxFuture<'_, Result<Stored, StoreError>>;
    /// Reads `key` (or the `range` of it, which the caller checked against the
    /// stored size).
    fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> BoxFuture<'_, Result<Fetched, StoreError>>;
    /// Copies the bytes of `from` to the new key `to`.
    fn copy(&self, from: &str, to: &str) -> BoxFuture<'_, Result<Stored, StoreError>>;
    /// Deletes `key`; deleting what is not there succeeds.
    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Every key held, with when it was written (for the orphan sweeper).
    /// Unfinished resumable uploads are not listed.
    fn list(&self) -> BoxFuture<'_, Result<Vec<(String, SystemTime)>, StoreError>>;
    /// Least size of a part other than the last (S3: 5 MiB); 0 when any goes.
    fn min_part(&self) -> u64;
    /// Starts a resumable upload that will become `key`; returns the
    /// backend's handle for it (S3's UploadId).
    fn begin_parts(&self, key: &str) -> BoxFuture<'_, Result<String, StoreError>>;
    /// Stores part `number`, which starts `offset` bytes into the upload;
    /// returns the part's tag. Durable once `sync_parts` returns.
    fn put_part<'a>(
        &'a self,
        key: &'a str,
        handle: &'a str,
        number: i32,
        offset: u64,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<String, StoreError>>;
    /// Makes the parts stored so far durable (one flush for many parts,
    /// before their progress is recorded); where each part is durable when
    /// stored (S3), nothing.
    fn sync_parts<'a>(
        &'a self,
        _key: &'a str,
        _handle: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    /// Joins `parts` into the object `key` (readable once this returns).
    fn complete_parts<'a>(
        &'a self,
        key: &'a str,
        handle: &'a str,
        parts: &'a [Part],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Drops an unfinished upload's parts; dropping what is gone succeeds.
    fn abort_parts<'a>(
        &'a self,
        key: &'a str,
        handle: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// The client's body, limited: after `limit` bytes the stream ends in
/// [`StoreError::TooLarge`] at once (not when the client finishes), and a
/// body that sends nothing for `idle` ends in [`StoreError::Idle`].
pub fn limited<S, E>(body: S, limit: u64, idle: Duration) -> ByteStream
where
    S: futures::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    let body = Box::pin(body);
    futures::stream::unfold(
        (body, 0u64, false),
        move |(mut body, seen, done)| async move {
            if done {
                return None;
            }
            match tokio::time::timeout(idle, body.next()).await {
                Err(_) => Some((Err(StoreError::Idle), (body, seen, true))),
                Ok(None) => None,
                Ok(Some(Err(e))) => {
                    Some((Err(StoreError::Client(e.to_string())), (body, seen, true)))
                }
                Ok(Some(Ok(chunk))) => {
                    let seen = seen + chunk.len() as u64;
                    if seen > limit {
                        Some((Err(StoreError::TooLarge), (body, seen, true)))
                    } else {
                        Some((Ok(chunk), (body, seen, false)))
                    }
                }
            }
        },
    )
    .boxed()
}

/// A fresh backend key: a random UUID (the object's version).
pub fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether `key` is one Wasmbase made (so a backend never turns anything
/// else into a path).
pub fn is_key(key: &str) -> bool {
    uuid::Uuid::try_parse(key).is_ok_and(|u| u.hyphenated().to_string() == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_limit_cuts_the_stream_as_soon_as_it_is_passed() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"1234")),
            Ok(Bytes::from_static(b"5678")),
        ];
        let mut s = limited(futures::stream::iter(chunks), 6, Duration::from_secs(5));
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"1234");
        assert!(matches!(s.next().await, Some(Err(StoreError::TooLarge))));
        assert!(s.next().await.is_none());
    }

    #[test]
    fn only_uuids_are_keys() {
        assert!(is_key(&new_key()));
        assert!(!is_key("../etc/passwd"));
        assert!(!is_key("6F1C2A9E-8B7D-4C3E-9F1A-2B3C4D5E6F70"));
    }
}
