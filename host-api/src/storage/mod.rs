//! Storage (`/storage/v1`, and the functions' `storage` interface):
//! metadata in PostgreSQL's `storage` schema under the caller's RLS
//! (`meta`), bytes in a backend behind one trait (`backend`; `local` disk
//! by default), storage-api's names and limits (`names`), signed URL tokens
//! (`token`), storage-api's error shape (`error`), the steps of writing an
//! object that every path shares (`objects`) and the deletion queue that
//! keeps bytes and rows in step (`gc`), image transformations (`transform`),
//! resumable uploads (`resumable`, locked per upload by `upload_locks`).
//! See docs/STORAGE.md.

pub mod backend;
pub mod error;
pub mod gc;
pub mod local;
pub mod meta;
pub mod names;
pub mod objects;
pub mod resumable;
pub mod s3;
pub mod sweep;
pub mod token;
pub mod transform;
pub mod upload_locks;

pub use backend::{ObjectStore, StoreError};
pub use error::StorageError;

use std::sync::Arc;
use std::time::Duration;

/// What every storage path shares on a node.
#[derive(Clone)]
pub struct Storage {
    /// Where bytes live.
    pub store: Arc<dyn ObjectStore>,
    /// Largest upload, whatever the bucket says (`storage.max_upload_bytes`).
    pub max_upload_bytes: u64,
    /// Longest pause in an upload's body (`storage.upload_idle_timeout_ms`).
    pub idle_timeout: Duration,
    /// Wakes this node's deletion worker (`gc::worker`).
    pub gc_kick: Arc<tokio::sync::Notify>,
    /// The platform's own pool (the deletion queue is not the caller's to
    /// write).
    pub system: deadpool_postgres::Pool,
    /// This node's locks of resumable uploads.
    pub upload_locks: Arc<upload_locks::UploadLocks>,
    /// How long an unfinished resumable upload lives after its last request
    /// (`storage.resumable_expiry_secs`).
    pub resumable_expiry: Duration,
}

impl Storage {
    /// Queues bytes no row will point at (an upload or copy whose row was
    /// refused, an abandoned upload) and wakes the deletion worker. If even
    /// the queue cannot be written, the orphan sweeper finds them later.
    pub async fn forget(&self, version: &str) {
        if let Err(e) = gc::queue(&self.system, version).await {
            tracing::warn!(version, error = %e.describe(), "could not queue storage bytes for deletion; the orphan sweeper will find them");
        }
        self.gc_kick.notify_one();
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}
