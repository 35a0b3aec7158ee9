//! Shared connections for the per-request session check of `GET /auth/v1/user`.
//!
//! That check is one read-only statement outside any transaction, so it needs no
//! connection of its own: tokio-postgres pipelines the queries of concurrent
//! requests on one connection, and both sides then pay one write and one read
//! for several of them instead of a round trip each. A few connections are taken
//! out of the auth pool for this on first use (with its timeout and search_path)
//! and replaced when one closes.

use arc_swap::ArcSwapOption;
use deadpool_postgres::{ClientWrapper, Object, Pool};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use wasmbase_host_api::db::DbError;

/// Connections shared by all session checks of this node, used in turn.
pub struct SessionConns {
    slots: Vec<ArcSwapOption<ClientWrapper>>,
    next: AtomicUsize,
    refill: tokio::sync::Mutex<()>,
}

impl SessionConns {
    /// `n` shared connections (at least one).
    pub fn new(n: usize) -> SessionConns {
        SessionConns {
            slots: (0..n.max(1)).map(|_| ArcSwapOption::empty()).collect(),
            next: AtomicUsize::new(0),
            refill: tokio::sync::Mutex::new(()),
        }
    }

    /// The next shared connection, taken from `pool` if its slot is empty or closed.
    pub async fn client(&self, pool: &Pool) -> Result<Arc<ClientWrapper>, DbError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let live = || slot.load_full().filter(|c| !c.is_closed());
        if let Some(c) = live() {
            return Ok(c);
        }
        let _one_at_a_time = self.refill.lock().await;
        if let Some(c) = live() {
            return Ok(c);
        }
        let c = Arc::new(Object::take(pool.get().await?));
        slot.store(Some(c.clone()));
        Ok(c)
    }
}
