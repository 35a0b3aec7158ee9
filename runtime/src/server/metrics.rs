//! Prometheus metrics: requests by route and status, a latency histogram per route,
//! and gauges supplied at scrape time (pool, key store version).
//!
//! Hand-rolled on purpose: one short mutex per request, no registry machinery on
//! the hot path, and the text format is simple.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct RouteStats {
    by_status: HashMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Request counters, keyed by matched route pattern (not raw path: bounded labels).
#[derive(Default)]
pub struct Metrics {
    routes: Mutex<HashMap<Box<str>, RouteStats>>,
    /// Requests finished, all routes (read without the lock, e.g. by the
    /// allocator's idle tick).
    served: std::sync::atomic::AtomicU64,
}

impl Metrics {
    /// Records one finished request.
    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        self.served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut map = self.routes.lock();
        let stats = match map.get_mut(route) {
            Some(s) => s,
            None => map.entry(route.into()).or_default(),
        };
        *stats.by_status.entry(status).or_default() += 1;
        stats.count += 1;
        stats.sum += secs;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            stats.buckets[i] += 1;
        }
    }

    /// Requests finished so far, all routes.
    pub fn served(&self) -> u64 {
        self.served.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Renders the text exposition format, followed by `gauges` (name, help, value).
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let map = self.routes.lock();
        let mut routes: Vec<_> = map.iter().collect();
        routes.sort_by(|a, b| a.0.cmp(b.0));
        out.push_str("# HELP wasmbase_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE wasmbase_http_requests_total counter\n");
        for (route, s) in &routes {
            let mut statuses: Vec<_> = s.by_status.iter().collect();
            statuses.sort();
            for (status, n) in statuses {
                let _ = writeln!(
                    out,
                    "wasmbase_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    esc(route)
                );
            }
        }
        out.push_str(
            "# HELP wasmbase_http_request_duration_seconds Time to produce the response head.\n",
        );
        out.push_str("# TYPE wasmbase_http_request_duration_seconds histogram\n");
        for (route, s) in &routes {
            let r = esc(route);
            let mut cum = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cum += s.buckets[i];
                let _ = writeln!(out, "wasmbase_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {cum}");
            }
            let _ = writeln!(
                out,
                "wasmbase_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "wasmbase_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "wasmbase_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
                s.count
            );
        }
        drop(map);
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
