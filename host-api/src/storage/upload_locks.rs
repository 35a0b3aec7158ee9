//! The lock that lets one request at a time write a resumable upload, across
//! nodes: a PostgreSQL session advisory lock per upload, all of a node's held
//! on one dedicated connection. One connection however many uploads are in
//! flight (a pooled connection per `PATCH` would drain the pool), and a node
//! that dies or loses the connection releases every lock it held (within about
//! a minute, the keepalives set below), so the client's retry on another node
//! goes through. Session locks need a real session: a pooler in transaction
//! mode (PgBouncer) between Wasmbase and PostgreSQL would break them. Session locks stack within
//! a session, so the node also keeps the set of ids it holds: a second request
//! for the same upload on the same node is refused like one from another node.

use crate::db::DbError;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;

/// A node's upload locks (see the module doc).
pub struct UploadLocks {
    config: tokio_postgres::Config,
    conn: tokio::sync::Mutex<Option<Arc<tokio_postgres::Client>>>,
    held: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for UploadLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadLocks")
            .field("held", &self.held.lock().len())
            .finish_non_exhaustive()
    }
}

/// One held lock; released when dropped (also when the request is cut off).
pub struct UploadLock {
    locks: Arc<UploadLocks>,
    id: String,
    client: Arc<tokio_postgres::Client>,
}

impl UploadLocks {
    /// Locks on connections made with `config` (the platform's owner role);
    /// the connection is opened at the first lock.
    pub fn new(mut config: tokio_postgres::Config) -> Arc<UploadLocks> {
        config.application_name("wasmbase-upload-locks");
        config.connect_timeout(std::time::Duration::from_secs(5));
        // A silently dead connection is noticed in about a minute on this
        // side (`UploadLock::held` then says so)...
        config
            .keepalives(true)
            .keepalives_idle(std::time::Duration::from_secs(30))
            .keepalives_interval(std::time::Duration::from_secs(10))
            .keepalives_retries(3);
        Arc::new(UploadLocks {
            config,
            conn: tokio::sync::Mutex::new(None),
            held: Mutex::new(HashSet::new()),
        })
    }

    async fn client(&self) -> Result<Arc<tokio_postgres::Client>, DbError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "the upload lock connection ended; its locks are released");
            }
        });
        // ...and on the database's, so a node that vanished (power, network)
        // frees its locks in about a minute rather than PostgreSQL's default
        // two hours.
        client
            .batch_execute(
                "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; \
                 SET tcp_keepalives_count = 3",
            )
            .await?;
        let client = Arc::new(client);
        *conn = Some(client.clone());
        Ok(client)
    }

    /// Takes the lock of upload `id`, or `None` when another request (on any
    /// node) holds it. Never waits for a holder.
    pub async fn try_lock(self: &Arc<Self>, id: &str) -> Result<Option<UploadLock>, DbError> {
        if !self.held.lock().insert(id.to_string()) {
            return Ok(None);
        }
        let release = || {
            self.held.lock().remove(id);
        };
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                release();
                return Err(e);
            }
        };
        let got = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&lock_name(id)],
            )
            .await;
        match got.map(|r| r.get::<_, bool>(0)) {
            Ok(true) => Ok(Some(UploadLock {
                locks: self.clone(),
                id: id.to_string(),
                client,
            })),
            Ok(false) => {
                release();
                Ok(None)
            }
            Err(e) => {
                release();
                Err(e.into())
            }
        }
    }
}

fn lock_name(id: &str) -> String {
    format!("wasmbase.storage_uploads:{id}")
}

impl UploadLock {
    /// Whether the lock still holds: `false` once its connection is gone (the
    /// database released it, so another node may be writing the upload).
    pub fn held(&self) -> bool {
        !self.client.is_closed()
    }
}

impl Drop for UploadLock {
    fn drop(&mut self) {
        self.locks.held.lock().remove(&self.id);
        if self.client.is_closed() {
            return;
        }
        // Locks stack within the session, so a new lock of the same id taken
        // before this unlock runs stays held after it.
        let (client, name) = (self.client.clone(), lock_name(&self.id));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = client
                    .execute(
                        "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                        &[&name],
                    )
                    .await
                {
                    tracing::warn!(error = %e, "could not release an upload lock");
                }
            });
        }
    }
}
