//! Fixed-window rate limiting per key (per node: N nodes allow N times the rate,
//! which is documented). One mutex-guarded map; stale windows are swept when the
//! map grows, so memory stays bounded by the number of active keys.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const SWEEP_AT: usize = 10_000;

/// Allows `limit` hits per key per window (a minute unless made with
/// [`RateLimiter::per_window`]).
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    windows: Mutex<Windows>,
}

struct Windows {
    map: HashMap<String, (Instant, u32)>,
    last_sweep: Instant,
}

impl RateLimiter {
    /// A limiter; `per_minute = 0` disables it.
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter::per_window(per_minute, Duration::from_secs(60))
    }

    /// `limit` hits per key per `window` (GoTrue counts some limits per hour);
    /// `limit = 0` disables it.
    pub fn per_window(limit: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            limit,
            window,
            windows: Mutex::new(Windows {
                map: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Counts a hit; `Err(seconds until the window resets)` when over the limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.limited(key)?;
        self.record(key);
        Ok(())
    }

    /// `Err(seconds to wait)` when `key` is over the limit, without counting a hit
    /// (for limits that count only failures, like wrong passwords).
    pub fn limited(&self, key: &str) -> Result<(), u64> {
        if self.limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let w = self.windows.lock();
        match w.map.get(key) {
            Some((start, n)) if now.duration_since(*start) < self.window && *n >= self.limit => {
                Err((self.window - now.duration_since(*start)).as_secs() + 1)
            }
            _ => Ok(()),
        }
    }

    /// Counts a hit for `key`.
    pub fn record(&self, key: &str) {
        if self.limit == 0 {
            return;
        }
        let now = Instant::now();
        let mut w = self.windows.lock();
        // Sweep expired windows at most once a second, and only when the map is big.
        if w.map.len() >= SWEEP_AT && now.duration_since(w.last_sweep) >= Duration::from_secs(1) {
            w.map
                .retain(|_, (start, _)| now.duration_since(*start) < self.window);
            w.last_sweep = now;
        }
        let entry = w.map.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key() {
        let l = RateLimiter::new(2);
        assert!(l.check("a").is_ok() && l.check("a").is_ok());
        let wait = l.check("a").unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(l.check("b").is_ok(), "keys are independent");
        assert!(RateLimiter::new(0).check("a").is_ok());
        // `limited` does not count; `record` does.
        let f = RateLimiter::new(1);
        assert!(f.limited("x").is_ok() && f.limited("x").is_ok());
        f.record("x");
        assert!(f.limited("x").is_err());
    }
}
