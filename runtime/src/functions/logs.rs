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

/// Writes queued records in batches (up to 200, or what arrived within 200 ms).
pub async fn writer(system: deadpool_postgres::Pool, mut rx: mpsc::Receiver<Record>) {
    let mut batch: Vec<Record> = Vec::new();
    loop {
        let first = match rx.recv().await {
            Some(r) => r,
            None => return,
        };
        batch.push(first);
        let until = tokio::time::Instant::now() + Duration::from_millis(200);
        while batch.len() < 200 {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(r)) => batch.push(r),
                _ => break,
            }
        }
        let json = serde_json::to_string(&batch).unwrap_or_else(|_| "[]".into());
        batch.clear();
        let r = async {
            let c = system.get().await?;
            c.execute(
                "INSERT INTO wasmbase.function_logs (name, version, request_id, status, duration_ms, outcome, lines)
                 SELECT name, version, request_id, status, duration_ms, outcome, lines
                 FROM jsonb_to_recordset($1::text::jsonb) AS r(name text, version int, request_id text, status int,
                      duration_ms double precision, outcome text, lines jsonb)",
                &[&json],
            )
            .await?;
            anyhow::Ok(())
        };
        if let Err(e) = r.await {
            tracing::warn!(error = %format!("{e:#}"), "writing function logs (batch dropped)");
        }
    }
}
