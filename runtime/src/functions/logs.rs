//! Invocation logs: one record per call (status, duration, outcome, the
//! guest's log lines), buffered in memory and written to PostgreSQL in batches
//! by one task per node, so `wasmbase functions logs` sees every node without
//! a request ever waiting on a log write. A full buffer drops records and
//! counts them.
//!
//! The buffer is a mutex-guarded `Vec`, not a channel: a channel wakes its
//! reader on every record, and with requests served on their own core threads
//! (`server::cores`) that wake-up crossed threads on every call (a futex wake,
//! ~7% of a `/fn/hello` request in a profile). Here the writer is woken once
//! per batch: by the first record after a quiet spell, or by a full batch.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use wasmbase_host_api::guest::LogLine;

/// One call's record.
#[derive(Debug, Serialize)]
pub struct Record {
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
/// Records per COPY.
const BATCH: usize = 1000;
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
/// first, or sooner once 1000 are waiting) until the sink is dropped.
pub async fn writer(system: deadpool_postgres::Pool, buf: Arc<Buffer>) {
    loop {
        buf.arrived.notified().await;
        if !buf.closed.load(Ordering::Acquire) {
            tokio::select! {
                _ = tokio::time::sleep(WINDOW) => {}
                _ = buf.full.notified() => {}
            }
        }
        let records = std::mem::take(&mut *buf.records.lock().unwrap_or_else(|e| e.into_inner()));
        for batch in records.chunks(BATCH) {
            if let Err(e) = copy(&system, batch).await {
                tracing::warn!(error = %format!("{e:#}"), "writing function logs (batch dropped)");
            }
        }
        if buf.closed.load(Ordering::Acquire) {
            return;
        }
    }
}

/// One COPY of `batch` into `wasmbase.function_logs`.
async fn copy(system: &deadpool_postgres::Pool, batch: &[Record]) -> anyhow::Result<()> {
    use futures::SinkExt;
    let data = copy_text(batch);
    let c = system.get().await?;
    let sink = c
        .copy_in(
            "COPY wasmbase.function_logs (name, version, request_id, status, duration_ms, outcome, lines) FROM STDIN",
        )
        .await?;
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from(data)).await?;
    sink.finish().await?;
    Ok(())
}

/// COPY's text format: one line per record, tab-separated, `\N` for NULL,
/// backslash, tab, newline and carriage return escaped. (COPY is several times
/// cheaper for PostgreSQL than an INSERT that parses the batch as JSON.)
fn copy_text(batch: &[Record]) -> String {
    fn field(out: &mut String, v: &str) {
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    let mut out = String::with_capacity(batch.len() * 128);
    for r in batch {
        field(&mut out, &r.name);
        out.push('\t');
        match r.version {
            Some(v) => out.push_str(&v.to_string()),
            None => out.push_str("\\N"),
        }
        out.push('\t');
        field(&mut out, &r.request_id);
        out.push('\t');
        out.push_str(&r.status.to_string());
        out.push('\t');
        out.push_str(&format!("{:.3}", r.duration_ms));
        out.push('\t');
        out.push_str(r.outcome);
        out.push('\t');
        field(
            &mut out,
            &serde_json::to_string(&r.lines).unwrap_or_else(|_| "[]".into()),
        );
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_needs() {
        let r = Record {
            name: "f".into(),
            version: None,
            request_id: "a\tb".into(),
            status: 200,
            duration_ms: 1.5,
            outcome: "ok",
            lines: vec![LogLine {
                level: "info",
                message: "x\ny\\z".into(),
                fields: vec![],
            }],
        };
        let t = copy_text(&[r]);
        assert_eq!(t.matches('\n').count(), 1, "{t}");
        assert!(t.starts_with("f\t\\N\ta\\tb\t200\t1.500\tok\t"), "{t}");
        assert!(t.contains(r#"x\\ny\\\\z"#), "{t}");
    }
}
