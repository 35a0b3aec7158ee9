//! Invocation logs: one record per call (status, duration, outcome, the
//! guest's log lines), queued in a bounded channel and written to PostgreSQL in
//! batches by one task per node, so `wasmbase functions logs` sees every node
//! without a request ever waiting on a log write. A full queue drops records
//! and counts them.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
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

/// The sending side, shared by invocations.
pub struct Sink {
    tx: mpsc::Sender<Record>,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// Queue depth before records are dropped.
const QUEUE: usize = 4096;

impl Sink {
    /// A sink and the receiver its writer drains.
    pub fn new() -> (Sink, mpsc::Receiver<Record>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            Sink {
                tx,
                dropped: AtomicU64::new(0),
            },
            rx,
        )
    }

    /// Queues a record without waiting.
    pub fn push(&self, r: Record) {
        if self.tx.try_send(r).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes queued records in batches (up to 1000, or what arrived within 250 ms).
pub async fn writer(system: deadpool_postgres::Pool, mut rx: mpsc::Receiver<Record>) {
    let mut batch: Vec<Record> = Vec::new();
    loop {
        let first = match rx.recv().await {
            Some(r) => r,
            None => return,
        };
        batch.push(first);
        let until = tokio::time::Instant::now() + Duration::from_millis(250);
        while batch.len() < 1000 {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(r)) => batch.push(r),
                _ => break,
            }
        }
        let data = copy_text(&batch);
        batch.clear();
        let r = async {
            use futures::SinkExt;
            let c = system.get().await?;
            let sink = c
                .copy_in(
                    "COPY wasmbase.function_logs (name, version, request_id, status, duration_ms, outcome, lines) FROM STDIN",
                )
                .await?;
            futures::pin_mut!(sink);
            sink.send(bytes::Bytes::from(data)).await?;
            sink.finish().await?;
            anyhow::Ok(())
        };
        if let Err(e) = r.await {
            tracing::warn!(error = %format!("{e:#}"), "writing function logs (batch dropped)");
        }
    }
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
