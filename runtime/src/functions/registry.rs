//! What each node is serving: name → loaded function, swapped atomically (a
//! request in flight keeps the `Arc` it started with, so it finishes on the old
//! version), with a version number that moves on every change so tests and
//! tools wait on it instead of sleeping. Calls running now are counted per
//! name ([`InFlight`]), not per loaded version, so `limits.max_concurrency`
//! holds across reloads and deploys.

use super::load::Loaded;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Whether a node can serve a function now: ready, still building, or unknown
/// (so `/fn` answers 200, 503 + Retry-After or 404).
pub enum Availability {
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
    /// Calls in flight per name, shared by every version installed under it.
    inflight: Mutex<HashMap<String, Arc<InFlight>>>,
    version: AtomicU64,
}

/// Calls of one function running now. One per function name (see
/// [`Registry::install`]): a reload or deploy swaps the component, not the
/// count, so calls still finishing on the old version keep their slots and a
/// new version cannot admit `max_concurrency` more on top of them.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

/// A slot taken by [`InFlight::try_admit`]; handed back when dropped.
#[derive(Debug)]
pub struct Admitted(Arc<InFlight>);

impl InFlight {
    /// Takes a slot if fewer than `cap` calls are running; `None` when full.
    /// The cap is the caller's (the version serving the call), so a reload
    /// that changes `max_concurrency` applies at once.
    pub fn try_admit(self: &Arc<Self>, cap: usize) -> Option<Admitted> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()
            .map(|_| Admitted(self.clone()))
    }

    /// Calls running now (for tests and metrics).
    pub fn current(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Registry {
    /// Looks `name` up.
    pub fn get(&self, name: &str) -> Availability {
        if let Some(f) = self.map.load().get(name) {
            return Availability::Ready(f.clone());
        }
        if self.starting.lock().contains(name) {
            return Availability::Starting;
        }
        Availability::Missing
    }

    /// Marks `name` as building (until installed or failed).
    pub fn starting(&self, name: &str) {
        self.starting.lock().insert(name.to_string());
    }

    /// Serves `f` under its name from now on; returns the new registry version.
    /// `f` takes over the name's in-flight count (see [`InFlight`]).
    pub fn install(&self, mut f: Loaded) -> u64 {
        let name = f.manifest.name.clone();
        f.inflight = self
            .inflight
            .lock()
            .entry(name.clone())
            .or_insert_with(|| f.inflight.clone())
            .clone();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_admits_up_to_the_cap_and_frees_on_drop() {
        let n = Arc::new(InFlight::default());
        let a = n.try_admit(2).unwrap();
        let b = n.try_admit(2).unwrap();
        assert!(n.try_admit(2).is_none());
        assert_eq!(n.current(), 2);
        // A reload that lowers the cap admits nothing until calls end.
        assert!(n.try_admit(1).is_none());
        drop(a);
        assert!(n.try_admit(1).is_none());
        drop(b);
        let c = n.try_admit(1).unwrap();
        assert_eq!(n.current(), 1);
        drop(c);
        assert_eq!(n.current(), 0);
    }
}
