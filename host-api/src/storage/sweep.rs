//! The orphan sweeper: bytes in the backend that no row in `storage.objects`
//! (or resumable upload's tail) points at and no deletion is queued for — what a crash between an upload's
//! bytes and its row leaves — are deleted once they are older than
//! `storage.orphan_grace_secs` (24 h by default, so a database restored from a
//! backup never races it), each deletion logged. Rows whose bytes are missing
//! are counted and logged, never deleted. One node sweeps at a time (a
//! PostgreSQL advisory lock); every node tries each interval.

use super::backend::{ObjectStore, StoreError};
use deadpool_postgres::Pool;
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

/// The advisory lock that makes one node the sweeper of a pass.
const LOCK: i64 = 0x5741_534d_5357_4550; // "WASMSWEP"

/// What one pass found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Orphaned byte objects deleted.
    pub deleted: usize,
    /// Rows of `storage.objects` whose bytes are missing.
    pub missing: usize,
    /// `false` when another node held the lock (nothing was done).
    pub ran: bool,
}

/// Runs one pass (see the module doc). `grace`: bytes younger than this are
/// left alone, whatever the database says.
pub async fn once(
    system: &Pool,
    store: &dyn ObjectStore,
    grace: Duration,
) -> Result<Swept, SweepError> {
    let mut c = system.get().await.map_err(crate::db::DbError::from)?;
    // A transaction-level lock: it ends with the transaction, even when the
    // pass is cut short (shutdown), so it never stays held on a pooled session.
    let tx = c.transaction().await.map_err(crate::db::DbError::from)?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(crate::db::DbError::from)?
        .get(0);
    if !locked {
        return Ok(Swept::default());
    }
    let swept = pass(&tx, store, grace).await?;
    tx.commit().await.map_err(crate::db::DbError::from)?;
    Ok(swept)
}

async fn pass(
    c: &deadpool_postgres::Transaction<'_>,
    store: &dyn ObjectStore,
    grace: Duration,
) -> Result<Swept, SweepError> {
    let keys = store.list().await?;
    let cutoff = SystemTime::now() - grace;
    let old: Vec<String> = keys
        .iter()
        .filter(|(_, at)| *at < cutoff)
        .map(|(k, _)| k.clone())
        .collect();
    let mut swept = Swept {
        ran: true,
        ..Swept::default()
    };
    for page in old.chunks(1000) {
        let orphans = c
            .query(
                "SELECT k FROM unnest($1::text[]) k \
                 WHERE NOT EXISTS (SELECT 1 FROM storage.objects o WHERE o.version = k) \
                   AND NOT EXISTS (SELECT 1 FROM wasmbase.storage_garbage g WHERE g.version = k) \
                   AND NOT EXISTS (SELECT 1 FROM wasmbase.storage_uploads u WHERE u.tail = k)",
                &[&page],
            )
            .await
            .map_err(crate::db::DbError::from)?;
        for r in orphans {
            let key: String = r.get(0);
            store.delete(&key).await?;
            tracing::info!(key, "storage sweeper deleted bytes no object points at");
            swept.deleted += 1;
        }
    }
    let present: HashSet<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    let rows = c
        .query(
            "SELECT version, bucket_id, name FROM storage.objects WHERE version IS NOT NULL",
            &[],
        )
        .await
        .map_err(crate::db::DbError::from)?;
    for r in rows {
        let version: String = r.get(0);
        if !present.contains(version.as_str()) {
            let (bucket, name): (String, String) = (r.get(1), r.get(2));
            tracing::warn!(bucket, name, version, "storage object's bytes are missing");
            swept.missing += 1;
        }
    }
    Ok(swept)
}

/// Why a sweep failed (it is tried again next interval).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The database.
    #[error("{}", .0.describe())]
    Db(#[from] crate::db::DbError),
    /// The backend.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sweeps every `interval` until `stop` (the first pass after one interval).
pub async fn worker(
    system: Pool,
    store: std::sync::Arc<dyn ObjectStore>,
    grace: Duration,
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match once(&system, store.as_ref(), grace).await {
            Ok(s) if s.ran => tracing::info!(
                deleted = s.deleted,
                missing = s.missing,
                "storage sweep finished"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "storage sweep failed; trying again next interval")
            }
        }
    }
}
