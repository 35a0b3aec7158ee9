//! Warm instances: kept between calls of a function whose manifest opts in
//! (`reuse` > 1), so a call skips creating a store, instantiating, and tearing
//! both down (for the Rust hello, most of what a call costs besides the HTTP
//! around it; JavaScript guests need it to be usable at all).
//!
//! An instance goes back to its function's idle list only after a call that
//! ended cleanly with every resource handed back (a trap, a timeout or a memory
//! overrun discards it), while it has served fewer than `reuse` requests, and
//! while the node-wide budget of idle instances has room: each idle instance
//! holds a slot of the engine's instance pool, which is sized for calls in
//! flight plus this budget. An instance built with other env values (secrets
//! changed since) is dropped instead of reused.

use super::instance::Ctx;
use super::instance::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::Store;

/// An instance between two calls, with its store.
pub struct Warm {
    /// The store (its per-call state is replaced before each call).
    pub store: Store<Ctx>,
    /// The instance's handler.
    pub entry: Entry,
    /// Calls it has served.
    pub served: u32,
    /// The env values it was built with.
    pub env: Arc<HashMap<String, String>>,
}

/// Idle instances a node may keep, over all functions.
pub struct WarmBudget {
    idle: AtomicUsize,
    max: usize,
}

impl WarmBudget {
    /// A budget of `max` idle instances.
    pub fn new(max: usize) -> Arc<WarmBudget> {
        Arc::new(WarmBudget {
            idle: AtomicUsize::new(0),
            max,
        })
    }

    /// Idle instances held now (status and tests).
    pub fn idle(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }

    fn reserve(&self) -> bool {
        self.idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.idle.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One function's idle instances, most recently used last.
pub struct WarmPool {
    idle: Mutex<Vec<Warm>>,
    budget: Arc<WarmBudget>,
}

impl WarmPool {
    /// An empty pool drawing on `budget`.
    pub fn new(budget: Arc<WarmBudget>) -> WarmPool {
        WarmPool {
            idle: Mutex::new(Vec::new()),
            budget,
        }
    }

    /// The most recently used idle instance built with `env`; idle ones built
    /// with other values are dropped.
    pub fn take(&self, env: &Arc<HashMap<String, String>>) -> Option<Warm> {
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut found = None;
            while let Some(w) = idle.pop() {
                self.budget.release(1);
                if Arc::ptr_eq(&w.env, env) {
                    found = Some(w);
                    break;
                }
                stale.push(w);
            }
            found
        };
        // Stores are dropped outside the lock.
        drop(stale);
        found
    }

    /// Keeps `w` for a later call if the node's budget has room.
    pub fn put(&self, w: Warm) {
        if self.budget.reserve() {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(w);
        }
    }

    /// Idle instances of this function.
    pub fn len(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no instance is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        let n = self.idle.get_mut().map(|v| v.len()).unwrap_or(0);
        self.budget.release(n);
    }
}
