//! The run history as the admin API and the CLI read it: one row per attempt,
//! newest first, filtered by job, status and time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;

/// Filters of `GET /admin/v1/cron/runs` and `wasmbase cron runs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Job name.
    pub job: Option<String>,
    /// One status (`running`, `succeeded`, `failed`, …).
    pub status: Option<String>,
    /// Ticks at or after this instant (RFC 3339).
    pub since: Option<String>,
    /// Ticks before this instant (RFC 3339).
    pub until: Option<String>,
    /// At most this many (100; at most 1000).
    pub limit: Option<i64>,
}

/// The `since` and `until` bounds of a [`Filter`].
pub type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

impl Filter {
    /// `since` and `until` as instants; the error names the bad one.
    pub fn times(&self) -> Result<Window, String> {
        let parse = |name: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| {
                    DateTime::parse_from_rfc3339(s)
                        .map(|d| d.with_timezone(&Utc))
                        .map_err(|e| format!("{name} is not an RFC 3339 time: {e}"))
                })
                .transpose()
        };
        Ok((parse("since", &self.since)?, parse("until", &self.until)?))
    }
}

/// One attempt.
#[derive(Debug, Serialize)]
pub struct Run {
    /// `cron_runs.id`: what `runs/:id` and `cron logs` take.
    pub id: i64,
    /// Shared by every attempt of one tick.
    pub run_id: uuid::Uuid,
    /// The job's id.
    pub job_id: i64,
    /// The job's name when it ran.
    pub job: String,
    /// RFC 3339.
    pub scheduled_for: String,
    /// 1 for the first.
    pub attempt: i32,
    /// `pending`, `running`, `succeeded`, `failed`, `timed_out`, `lost`, `skipped`.
    pub status: String,
    /// `schedule`, `retry`, `manual`, `missed`.
    pub trigger: String,
    /// The node that ran it.
    pub node: Option<uuid::Uuid>,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub finished_at: Option<String>,
    /// Milliseconds.
    pub duration_ms: Option<i64>,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// What it produced (truncated to `cron.output_max_bytes`).
    pub output: Option<String>,
}

const TS: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'";

fn select() -> String {
    format!(
        "SELECT id, run_id, job_id, job_name, to_char(scheduled_for AT TIME ZONE 'UTC', {TS}) AS sched, attempt, status, trigger, node, \
         to_char(started_at AT TIME ZONE 'UTC', {TS}) AS started, to_char(finished_at AT TIME ZONE 'UTC', {TS}) AS finished, \
         duration_ms, error, output FROM wasmbase.cron_runs"
    )
}

fn run_of(r: &tokio_postgres::Row) -> Run {
    Run {
        id: r.get("id"),
        run_id: r.get("run_id"),
        job_id: r.get("job_id"),
        job: r.get("job_name"),
        scheduled_for: r.get("sched"),
        attempt: r.get("attempt"),
        status: r.get("status"),
        trigger: r.get("trigger"),
        node: r.get("node"),
        started_at: r.get("started"),
        finished_at: r.get("finished"),
        duration_ms: r.get("duration_ms"),
        error: r.get("error"),
        output: r.get("output"),
    }
}

/// Attempts matching `f`, newest tick first.
pub async fn list(c: &impl GenericClient, f: &Filter) -> anyhow::Result<Vec<Run>> {
    let (since, until) = f.times().map_err(anyhow::Error::msg)?;
    let limit = f.limit.unwrap_or(100).clamp(1, 1000);
    let rows = c
        .query(
            &format!(
                "{} WHERE ($1::text IS NULL OR job_name = $1) AND ($2::text IS NULL OR status = $2) \
                 AND ($3::timestamptz IS NULL OR scheduled_for >= $3) AND ($4::timestamptz IS NULL OR scheduled_for < $4) \
                 ORDER BY scheduled_for DESC, attempt DESC LIMIT $5",
                select()
            ),
            &[&f.job, &f.status, &since, &until, &limit],
        )
        .await?;
    Ok(rows.iter().map(run_of).collect())
}

/// One attempt by id.
pub async fn get(c: &impl GenericClient, id: i64) -> Result<Option<Run>, tokio_postgres::Error> {
    let row = c
        .query_opt(&format!("{} WHERE id = $1", select()), &[&id])
        .await?;
    Ok(row.as_ref().map(run_of))
}
