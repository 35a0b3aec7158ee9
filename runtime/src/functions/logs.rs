//! Invocation logs: one record per call (status, duration, outcome, the
//! guest's log lines), buffered in memory and written to PostgreSQL in batches
//! by one task per node, so `wasmbase functions logs` sees every node without
//! a request ever waiting on a log write. A full buffer drops records and
//! counts them. A batch is stored as one row per function holding its records
//! as a JSON array (migration 0009: a row per call cost PostgreSQL ~5 µs a
//! call); rows older than the retention are deleted by the same task.
//!
//! The buffer is a mutex-guarded `Vec`, not a channel: a channel wakes its
//! reader on every record, and with requests served on their own core threads
//! (`server::cores`) that wake-up crossed threads on every call (a futex wake,
//! ~7% of a `/fn/hello` request in a profile). Here the writer is woken once
//! per batch: by the first record after a quiet spell, or by a full batch.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;
use wasmbase_host_api::guest::LogLine;

/// One call's record.
#[derive(Debug)]
pub struct Record {
    /// When the call ended.
    pub at: SystemTime,
    /// Function name.
    pub name: String,
    /// Deployed version (None for local functions).
    pub version: Option<i32>,
    /// Request id.
    pub request_id: String,
    /// HTTP status answered.
    pub status: u16,
    /// Wall-clock duration.
    pub duration_ms: f64,
    /// `ok`, `trap`, `timeout`, `no_response`.
    pub outcome: &'static str,
    /// What the guest logged.
    pub lines: Vec<LogLine>,
}

/// What the sink and its writer share.
#[derive(Default)]
pub struct Buffer {
    records: Mutex<Vec<Record>>,
    /// The first record arrived in an empty buffer, or the sink closed.
    arrived: Notify,
    /// A whole batch is waiting: write it now.
    full: Notify,
    closed: AtomicBool,
}

/// The sending side, shared by invocations.
pub struct Sink {
    buf: Arc<Buffer>,
    /// Records dropped because the buffer was full.
    pub dropped: AtomicU64,
}

/// Records held before new ones are dropped.
const CAPACITY: usize = 4096;
/// Records per write.
const BATCH: usize = 1000;
/// How often the writer deletes rows past the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How long the writer gathers records after the first one arrives.
const WINDOW: Duration = Duration::from_millis(250);

impl Sink {
    /// A sink and the buffer its writer drains.
    pub fn new() -> (Sink, Arc<Buffer>) {
        let buf = Arc::new(Buffer::default());
        (
            Sink {
                buf: buf.clone(),
                dropped: AtomicU64::new(0),
            },
            buf,
        )
    }

    /// Buffers a record without waiting (and without waking the writer, but
    /// for the first record of a batch or a full one).
    pub fn push(&self, r: Record) {
        let mut records = self.buf.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= CAPACITY {
            drop(records);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        records.push(r);
        let n = records.len();
        drop(records);
        if n == 1 {
            self.buf.arrived.notify_one();
        } else if n == BATCH {
            self.buf.full.notify_one();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.buf.closed.store(true, Ordering::Release);
        self.buf.arrived.notify_one();
    }
}

/// Writes buffered records in batches (what arrived within 250 ms of the
/// first, or sooner once 1000 are waiting) until the sink is dropped, and
/// deletes batches older than `retention` (None keeps them).
pub async fn writer(
    system: deadpool_postgres::Pool,
    buf: Arc<Buffer>,
    retention: Option<Duration>,
) {
    let mut pruned: Option<Instant> = None;
    loop {
        buf.arrived.notified().await;
        if !buf.closed.load(Ordering::Acquire) {
            tokio::select! {
                _ = tokio::time::sleep(WINDOW) => {}
                _ = buf.full.notified() => {}
            }
        }
        // Old batches go first, so a reader that sees this write never sees them.
        if let Some(keep) = retention {
            if pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                pruned = Some(Instant::now());
                if let Err(e) = prune(&system, keep).await {
                    tracing::warn!(error = %format!("{e:#}"), "deleting old function logs");
                }
            }
        }
        let records = std::mem::take(&mut *buf.records.lock().unwrap_or_else(|e| e.into_inner()));
        for batch in records.chunks(BATCH) {
            if let Err(e) = insert(&system, batch).await {
                tracing::warn!(error = %format!("{e:#}"), "writing function logs (batch dropped)");
            }
        }
        if buf.closed.load(Ordering::Acquire) {
            return;
        }
    }
}

/// One row per function of `batch`, each with its records as a JSON array.
async fn insert(system: &deadpool_postgres::Pool, batch: &[Record]) -> anyhow::Result<()> {
    let rows = rows(batch);
    let names: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let last: Vec<SystemTime> = rows.iter().map(|r| r.1).collect();
    let records: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    let c = system.get().await?;
    c.execute(
        "INSERT INTO wasmbase.function_log_batches (name, last_at, records) \
         SELECT n, t, r FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS u(n, t, r)",
        &[&names, &last, &records],
    )
    .await?;
    Ok(())
}

/// Deletes batches whose newest record is older than `keep`.
async fn prune(system: &deadpool_postgres::Pool, keep: Duration) -> anyhow::Result<()> {
    let c = system.get().await?;
    c.execute(
        "DELETE FROM wasmbase.function_log_batches WHERE last_at < now() - make_interval(secs => $1)",
        &[&keep.as_secs_f64()],
    )
    .await?;
    Ok(())
}

/// A record as `wasmbase functions logs` shows it.
#[derive(Serialize)]
struct Entry<'a> {
    at: String,
    version: Option<i32>,
    request_id: &'a str,
    status: u16,
    duration_ms: f64,
    outcome: &'a str,
    lines: &'a [LogLine],
}

/// `batch` grouped by function (first appearance first): name, newest
/// record's time, and the records as a JSON array, oldest first.
fn rows(batch: &[Record]) -> Vec<(&str, SystemTime, String)> {
    let mut out: Vec<(&str, SystemTime, Vec<&Record>)> = Vec::new();
    for r in batch {
        match out.iter_mut().find(|(n, _, _)| *n == r.name) {
            Some((_, last, rs)) => {
                *last = (*last).max(r.at);
                rs.push(r);
            }
            None => out.push((&r.name, r.at, vec![r])),
        }
    }
    out.into_iter()
        .map(|(name, last, rs)| {
            let entries: Vec<Entry> = rs
                .iter()
                .map(|r| Entry {
                    at: wasmbase_host_api::time::rfc3339_millis(r.at),
                    version: r.version,
                    request_id: &r.request_id,
                    status: r.status,
                    duration_ms: (r.duration_ms * 100.0).round() / 100.0,
                    outcome: r.outcome,
                    lines: &r.lines,
                })
                .collect();
            let json = serde_json::to_string(&entries).unwrap_or_else(|_| "[]".into());
            (name, last, json)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, secs: u64, message: &str) -> Record {
        Record {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            name: name.into(),
            version: None,
            request_id: "r".into(),
            status: 200,
            duration_ms: 1.23456,
            outcome: "ok",
            lines: vec![LogLine {
                level: "info",
                message: message.into(),
                fields: vec![],
            }],
        }
    }

    #[test]
    fn a_batch_is_one_row_per_function_with_its_records_in_order() {
        let batch = [
            record("a", 20, "1"),
            record("b", 5, "2"),
            record("a", 10, "3\n"),
        ];
        let rows = rows(&batch);
        assert_eq!(rows.len(), 2);
        let (name, last, json) = &rows[0];
        assert_eq!(*name, "a");
        assert_eq!(*last, SystemTime::UNIX_EPOCH + Duration::from_secs(20));
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v[0]["at"], "1970-01-01T00:00:20.000Z");
        assert_eq!(v[0]["duration_ms"], 1.23);
        assert_eq!(v[0]["lines"][0]["message"], "1");
        assert_eq!(v[1]["lines"][0]["message"], "3\n");
        assert_eq!(rows[1].0, "b");
    }
}
