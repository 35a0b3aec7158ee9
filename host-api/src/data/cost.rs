//! The aggregate cost guard. PostgREST keeps aggregates off by default
//! (`db-aggregates-enabled`) because one `select=amount.sum()` can scan a whole
//! table; Wasmbase keeps them on and instead asks the planner first: for anon
//! and authenticated callers a statement with an aggregate is `EXPLAIN`ed, as
//! the caller and in the caller's transaction (so row-level security is part of
//! the plan), and refused when its estimated total cost is above
//! `data.aggregate_max_cost`. service_role is not limited.
//!
//! Estimates are remembered per (role, statement text) for [`TTL`]: the text
//! holds the request's shape, not its values, so a repeated shape costs no
//! extra round trip. The statement timeout stays the backstop for a shape whose
//! cost depends on its values.

use super::error::DataError;
use crate::Role;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an estimate is reused (statistics change; a plan may too).
pub const TTL: Duration = Duration::from_secs(60);

/// Most shapes remembered; the cache is cleared when full.
const CAPACITY: usize = 1024;

/// The guard and its estimate cache, shared by every request of a node.
pub struct CostGuard {
    max_cost: f64,
    cache: Mutex<HashMap<(Role, String), (f64, Instant)>>,
}

impl CostGuard {
    /// A guard refusing aggregates estimated above `max_cost`.
    pub fn new(max_cost: f64) -> CostGuard {
        CostGuard {
            max_cost,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `role`'s aggregates are checked (not service_role's).
    pub fn applies(&self, role: Role) -> bool {
        matches!(role, Role::Anon | Role::Authenticated)
    }

    /// A fresh estimate for `sql` run as `role`, if one is known.
    pub fn cached(&self, role: Role, sql: &str) -> Option<f64> {
        let cache = self.cache.lock();
        let (cost, at) = cache.get(&(role, sql.to_string()))?;
        (at.elapsed() < TTL).then_some(*cost)
    }

    /// Remembers the estimate of `sql` as `role`.
    pub fn remember(&self, role: Role, sql: &str, cost: f64) {
        let mut cache = self.cache.lock();
        if cache.len() >= CAPACITY {
            cache.clear();
        }
        cache.insert((role, sql.to_string()), (cost, Instant::now()));
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
        assert_eq!(g.cached(Role::Anon, "q"), None);
        g.remember(Role::Anon, "q", 5.0);
        assert_eq!(g.cached(Role::Anon, "q"), Some(5.0));
        assert_eq!(g.cached(Role::Authenticated, "q"), None);
        let plan = serde_json::json!([{"Plan": {"Node Type": "Aggregate", "Total Cost": 12.5}}]);
        assert_eq!(total_cost(&plan), Some(12.5));
        assert_eq!(total_cost(&serde_json::json!({})), None);
    }
}
