//! The aggregate cost guard. PostgREST keeps aggregates off by default
//! (`db-aggregates-enabled`) because one `select=amount.sum()` can scan a whole
//! table; Wasmbase keeps them on and instead asks the planner first: for anon
//! and authenticated callers a statement with an aggregate is `EXPLAIN`ed, as
//! the caller and in the caller's transaction (so row-level security is part of
//! the plan), and refused when its estimated total cost is above
//! `data.aggregate_max_cost`. service_role is not limited.
//!
//! Estimates are remembered per (role, statement text, values) for [`TTL`]:
//! a repeated request (a dashboard polling the same count) costs no extra
//! round trip, and a cheap estimate for some values never clears the same
//! shape with other values (`gt.2999-01-01` then `gt.1900-01-01`). The key is
//! a hash with a per-process random seed, so entries cannot be forged to
//! collide. The statement timeout stays the backstop.

use super::error::DataError;
use crate::Role;
use parking_lot::Mutex;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// How long an estimate is reused (statistics change; a plan may too).
pub const TTL: Duration = Duration::from_secs(60);

/// Most shapes remembered; the cache is cleared when full.
const CAPACITY: usize = 1024;

/// The guard and its estimate cache, shared by every request of a node.
pub struct CostGuard {
    max_cost: f64,
    seed: RandomState,
    cache: Mutex<HashMap<u64, (f64, Instant)>>,
}

impl CostGuard {
    /// A guard refusing aggregates estimated above `max_cost`.
    pub fn new(max_cost: f64) -> CostGuard {
        CostGuard {
            max_cost,
            seed: RandomState::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `role`'s aggregates are checked (not service_role's).
    pub fn applies(&self, role: Role) -> bool {
        matches!(role, Role::Anon | Role::Authenticated)
    }

    /// The cache key of `sql` with `params`, run as `role`.
    pub fn key(&self, role: Role, sql: &str, params: &[Option<String>]) -> u64 {
        self.seed.hash_one((role, sql, params))
    }

    /// A fresh estimate for `key`, if one is known.
    pub fn cached(&self, key: u64) -> Option<f64> {
        let cache = self.cache.lock();
        let (cost, at) = cache.get(&key)?;
        (at.elapsed() < TTL).then_some(*cost)
    }

    /// Remembers the estimate for `key`.
    pub fn remember(&self, key: u64, cost: f64) {
        let mut cache = self.cache.lock();
        if cache.len() >= CAPACITY {
            cache.clear();
        }
        cache.insert(key, (cost, Instant::now()));
    }

    /// Refuses a statement whose estimate is above the limit.
    pub fn check(&self, cost: f64) -> Result<(), DataError> {
        if cost <= self.max_cost {
            return Ok(());
        }
        Err(DataError::new(
            400,
            "WB_AGGREGATE_COST",
            "The aggregate is too expensive to run",
        )
        .details(format!(
            "Its estimated cost is {cost:.0}, above data.aggregate_max_cost ({:.0})",
            self.max_cost
        ))
        .hint("Filter on indexed columns or aggregate fewer rows; a function with db = \"service\" or the secret key is not limited"))
    }
}

/// The total cost of an `EXPLAIN (FORMAT JSON)` result.
pub fn total_cost(plan: &serde_json::Value) -> Option<f64> {
    plan.get(0)?.get("Plan")?.get("Total Cost")?.as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_limits_request_roles_and_remembers_shapes() {
        let g = CostGuard::new(1000.0);
        assert!(g.applies(Role::Anon) && g.applies(Role::Authenticated));
        assert!(!g.applies(Role::ServiceRole));
        assert!(g.check(1000.0).is_ok());
        let e = g.check(1000.5).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (400, "WB_AGGREGATE_COST"));
        let k = g.key(Role::Anon, "q", &[Some("1".into())]);
        assert_eq!(g.cached(k), None);
        g.remember(k, 5.0);
        assert_eq!(g.cached(k), Some(5.0));
        // Another role or other values are another estimate.
        assert_eq!(
            g.cached(g.key(Role::Authenticated, "q", &[Some("1".into())])),
            None
        );
        assert_eq!(g.cached(g.key(Role::Anon, "q", &[Some("2".into())])), None);
        let plan = serde_json::json!([{"Plan": {"Node Type": "Aggregate", "Total Cost": 12.5}}]);
        assert_eq!(total_cost(&plan), Some(12.5));
        assert_eq!(total_cost(&serde_json::json!({})), None);
    }
}
