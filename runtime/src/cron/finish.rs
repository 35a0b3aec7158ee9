//! Records the ends of attempts in batches: every ending queued while the
//! previous batch was written goes in the next one statement
//! (`wasmbase.cron_finish` per row). A burst of 10,000 attempts that end
//! together costs tens of round trips, not 10,000, and leaves the database to
//! the claims and the jobs themselves.

use tokio::sync::{mpsc, oneshot};

/// Endings written per statement at most.
const BATCH: usize = 500;

/// One attempt's end, and where its `cron_finish` result goes.
pub struct Ending {
    /// `cron_runs.id`.
    pub id: i64,
    /// `succeeded`, `failed`, `timed_out`.
    pub status: &'static str,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// What it produced.
    pub output: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
    /// `cron_finish`'s answer (0 lost, 1 recorded, 2 recorded with alerts).
    pub reply: oneshot::Sender<anyhow::Result<i32>>,
}

/// Writes endings from `rx` until every sender is gone.
pub async fn writer(pool: deadpool_postgres::Pool, mut rx: mpsc::UnboundedReceiver<Ending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
        let statuses: Vec<&str> = batch.iter().map(|e| e.status).collect();
        let errors: Vec<Option<&str>> = batch.iter().map(|e| e.error.as_deref()).collect();
        let outputs: Vec<Option<&str>> = batch.iter().map(|e| e.output.as_deref()).collect();
        let ms: Vec<i64> = batch.iter().map(|e| e.duration_ms).collect();
        let written = async {
            let c = pool.get().await?;
            let rows = c
                .query(
                    "SELECT wasmbase.cron_finish(f.id, f.status, f.error, f.output, f.ms) \
                     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int8[]) WITH ORDINALITY AS f(id, status, error, output, ms, n) \
                     ORDER BY f.n",
                    &[&ids, &statuses, &errors, &outputs, &ms],
                )
                .await?;
            anyhow::Ok(rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>())
        }
        .await;
        match written {
            Ok(results) if results.len() == batch.len() => {
                for (e, r) in batch.into_iter().zip(results) {
                    let _ = e.reply.send(Ok(r));
                }
            }
            Ok(_) => {
                for e in batch {
                    let _ = e
                        .reply
                        .send(Err(anyhow::anyhow!("cron_finish answered a short batch")));
                }
            }
            Err(err) => {
                let msg = format!("{err:#}");
                for e in batch {
                    let _ = e.reply.send(Err(anyhow::anyhow!(msg.clone())));
                }
            }
        }
    }
}
