//! Deleting bytes whose metadata is gone. Every path that ends an object's
//! bytes — a replaced version, a remove, emptying a bucket, a `DELETE` on
//! `storage.objects` by SQL, an upload whose row was refused — ends here:
//! a trigger (or the upload path) queues the version in
//! `wasmbase.storage_garbage`, and a worker on each node takes rows with
//! `FOR UPDATE SKIP LOCKED`, deletes their bytes and then the rows, so nodes
//! share the work and a crash midway only repeats a delete.

use super::backend::{ObjectStore, StoreError};
use deadpool_postgres::Pool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// NOTIFY channel the queueing trigger signals (migrations/0013).
pub const CHANNEL: &str = "wasmbase_storage_gc";

/// Rows one pass takes.
const BATCH: i64 = 100;

/// How often the worker looks without being woken (a NOTIFY can be missed
/// while a node is disconnected).
pub const POLL: Duration = Duration::from_secs(30);

/// Queues `version`'s bytes for deletion (the upload path, when the row that
/// would have made them visible was refused).
pub async fn queue(system: &Pool, version: &str) -> Result<(), crate::db::DbError> {
    let c = system.get().await?;
    c.execute(
        "INSERT INTO wasmbase.storage_garbage (version) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&version],
    )
    .await?;
    Ok(())
}

/// One pass: deletes the bytes of up to [`BATCH`] queued versions, then their
/// rows; returns how many. A version whose bytes could not be deleted stays
/// queued for the next pass. A version that is in use again (a restored row)
/// is only dequeued.
pub async fn pass(system: &Pool, store: &dyn ObjectStore) -> Result<usize, crate::db::DbError> {
    let mut c = system.get().await?;
    let tx = c.transaction().await?;
    let rows = tx
        .query(
            "SELECT g.version, EXISTS (SELECT 1 FROM storage.objects o WHERE o.version = g.version) \
             FROM wasmbase.storage_garbage g ORDER BY g.queued_at \
             LIMIT $1 FOR UPDATE SKIP LOCKED",
            &[&BATCH],
        )
        .await?;
    let mut done: Vec<String> = Vec::with_capacity(rows.len());
    for r in &rows {
        let version: String = r.get(0);
        let in_use: bool = r.get(1);
        if !in_use {
            match store.delete(&version).await {
                Ok(()) => tracing::debug!(version, "storage bytes deleted"),
                Err(StoreError::NotFound) => {}
                Err(e) => {
                    tracing::warn!(version, error = %e, "storage bytes not deleted; will retry");
                    continue;
                }
            }
        }
        done.push(version);
    }
    tx.execute(
        "DELETE FROM wasmbase.storage_garbage WHERE version = ANY($1)",
        &[&done],
    )
    .await?;
    tx.commit().await?;
    Ok(done.len())
}

/// Runs passes until `stop`: whenever `kick` is notified (this node deleted
/// or refused something; `NOTIFY wasmbase_storage_gc` from another node or
/// from SQL), and every [`POLL`].
pub async fn worker(
    system: Pool,
    store: Arc<dyn ObjectStore>,
    kick: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        loop {
            match pass(&system, store.as_ref()).await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(error = %e.describe(), "storage garbage pass failed");
                    break;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = kick.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
