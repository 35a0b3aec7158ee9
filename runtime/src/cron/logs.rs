//! A run's log lines, live: the node running a handler appends them to
//! `wasmbase.cron_run_logs` in small batches and announces each batch with
//! NOTIFY on [`CHANNEL`] (payload: the attempt's id); any node (or the CLI)
//! following the run reads what is new when woken. The end of an attempt is
//! announced the same way (`cron_finish`, `cron_reap`), so a follower knows
//! when to stop.

use crate::server::state::AppState;
use serde::Serialize;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::GenericClient;
use wasmbase_host_api::guest::LogLine;

/// NOTIFY channel of new log lines and ended attempts.
pub const CHANNEL: &str = "wasmbase_cron_logs";

/// Lines one read returns at most.
pub const PAGE: usize = 1000;

/// Lines gathered into one insert at most.
const BATCH: usize = 100;

/// How long a batch waits for more lines after its first.
const LINGER: Duration = Duration::from_millis(100);

/// Appends `lines` of attempt `run` as they come, in batches, until the
/// sender is dropped (the call ended).
pub async fn forward(st: AppState, run: i64, mut lines: UnboundedReceiver<LogLine>) {
    while let Some(first) = lines.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(until, lines.recv()).await {
                Ok(Some(l)) => batch.push(l),
                _ => break,
            }
        }
        // A busy or briefly unreachable database gets a few tries.
        let mut wait = Duration::from_millis(100);
        for attempt in 1..=4 {
            match append(&st, run, &batch).await {
                Ok(()) => break,
                Err(e) if attempt == 4 => {
                    tracing::warn!(run, lines = batch.len(), error = %format!("{e:#}"), "cron: a run's log lines were not kept");
                }
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }
}

async fn append(st: &AppState, run: i64, batch: &[LogLine]) -> anyhow::Result<()> {
    let levels: Vec<&str> = batch.iter().map(|l| l.level).collect();
    let messages: Vec<String> = batch
        .iter()
        .map(|l| {
            let mut m = l.message.clone();
            for (k, v) in &l.fields {
                m.push_str(&format!(" {k}={v}"));
            }
            m
        })
        .collect();
    let db = st.cron.records.get().await?;
    db.execute(
        "WITH ins AS (INSERT INTO wasmbase.cron_run_logs (run, level, message) \
         SELECT $1, * FROM unnest($2::text[], $3::text[]) RETURNING 1) \
         SELECT pg_notify($4, $1::text) WHERE EXISTS (SELECT 1 FROM ins)",
        &[&run, &levels, &messages, &CHANNEL],
    )
    .await?;
    Ok(())
}

/// One kept line.
#[derive(Debug, Serialize)]
pub struct Line {
    /// Increasing; a follower asks for lines after the last it saw.
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    /// `debug`, `info`, `warn`, `error`.
    pub level: String,
    /// The text, fields appended as ` key=value`.
    pub message: String,
}

/// Lines of attempt `run` after line `after`, oldest first, and whether the
/// attempt has ended (no more will come); None if there is no such attempt.
pub async fn since(
    c: &impl GenericClient,
    run: i64,
    after: i64,
) -> Result<Option<(Vec<Line>, bool)>, tokio_postgres::Error> {
    let Some(status) = c
        .query_opt(
            "SELECT status FROM wasmbase.cron_runs WHERE id = $1",
            &[&run],
        )
        .await?
    else {
        return Ok(None);
    };
    let ended = !matches!(status.get::<_, &str>(0), "pending" | "running");
    let lines = c
        .query(
            "SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), level, message \
             FROM wasmbase.cron_run_logs WHERE run = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&run, &after, &(PAGE as i64)],
        )
        .await?
        .iter()
        .map(|r| Line {
            id: r.get(0),
            at: r.get(1),
            level: r.get(2),
            message: r.get(3),
        })
        .collect();
    Ok(Some((lines, ended)))
}
