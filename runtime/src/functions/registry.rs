//! What each node is serving: name → loaded function, swapped atomically (a
//! request in flight keeps the `Arc` it started with, so it finishes on the old
//! version), with a version number that moves on every change so tests and
//! tools wait on it instead of sleeping.

use super::load::Loaded;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Result of looking a function up.
pub enum Lookup {
    /// Serving.
    Ready(Arc<Loaded>),
    /// Known but still building or compiling (answer 503 + Retry-After).
    Starting,
    /// No such function (404).
    Missing,
}

/// The functions of this node.
#[derive(Default)]
pub struct Registry {
    map: ArcSwap<HashMap<String, Arc<Loaded>>>,
    starting: Mutex<HashSet<String>>,
    errors: Mutex<HashMap<String, String>>,
    version: AtomicU64,
}

impl Registry {
    /// Looks `name` up.
    pub fn get(&self, name: &str) -> Lookup {
        if let Some(f) = self.map.load().get(name) {
            return Lookup::Ready(f.clone());
        }
        if self.starting.lock().contains(name) {
            return Lookup::Starting;
        }
        Lookup::Missing
    }

    /// Marks `name` as building (until installed or failed).
    pub fn starting(&self, name: &str) {
        self.starting.lock().insert(name.to_string());
    }

    /// Serves `f` under its name from now on; returns the new registry version.
    pub fn install(&self, f: Loaded) -> u64 {
        let name = f.manifest.name.clone();
        let f = Arc::new(f);
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(name.clone(), f.clone());
            m
        });
        self.starting.lock().remove(&name);
        self.errors.lock().remove(&name);
        self.bump()
    }

    /// Records that `name` failed to build or load; whatever was serving keeps
    /// serving. Returns the new version.
    pub fn failed(&self, name: &str, error: String) -> u64 {
        self.starting.lock().remove(name);
        self.errors.lock().insert(name.to_string(), error);
        self.bump()
    }

    /// Stops serving `name` (and forgets its last error).
    pub fn remove(&self, name: &str) -> u64 {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(name);
            m
        });
        self.starting.lock().remove(name);
        self.errors.lock().remove(name);
        self.bump()
    }

    /// The last build/load error of `name`, if its latest attempt failed.
    pub fn error(&self, name: &str) -> Option<String> {
        self.errors.lock().get(name).cloned()
    }

    /// Functions whose latest build or load failed, with the error, sorted.
    pub fn errors(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .errors
            .lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        v.sort();
        v
    }

    /// Names being served, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map.load().keys().cloned().collect();
        v.sort();
        v
    }

    /// Changes so far (install, failure, removal).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn bump(&self) -> u64 {
        self.version.fetch_add(1, Ordering::AcqRel) + 1
    }
}
