//! `wasmbase cron`: the CLI face of `cron::job` and `cron::runs` (the admin
//! API's too), against the project's database. Runs happen on the servers;
//! `run` queues one and `--wait` follows it to its end.

use super::{cli_config, owner_client};
use crate::cron::job::{self, CallSpec, HttpSpec, JobDef};
use crate::cron::runs;
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::time::Duration;
use wasmbase_host_api::audit::Actor;

/// Arguments of `cron`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// Config file (for database.url); default wasmbase.toml or .wasmbase/env.
    #[arg(long, short, global = true)]
    config: Option<std::path::PathBuf>,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// List jobs with their schedules and next run.
    List,
    /// Add a job running SQL (--sql), an HTTP request (--url) or a function (--call).
    Add(Box<AddArgs>),
    /// Delete a job (its history stays).
    Rm {
        /// Job name.
        name: String,
    },
    /// Stop claiming ticks for a job.
    Pause {
        /// Job name.
        name: String,
    },
    /// Claim ticks again (ticks while paused are not missed ones).
    Resume {
        /// Job name.
        name: String,
    },
    /// Run a job now on whichever server takes it.
    Run {
        /// Job name.
        name: String,
        /// Wait for the run (and its retries) to end and print it; exit 1 if
        /// it did not succeed.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
    },
    /// An attempt's log lines; --follow prints them as they come until it ends.
    Logs {
        /// The attempt's id (from `cron runs`).
        run: i64,
        /// Keep printing until the attempt ends (woken by NOTIFY).
        #[arg(long, short)]
        follow: bool,
    },
    /// Recent runs, newest first.
    Runs {
        /// Only this job's.
        #[arg(long)]
        job: Option<String>,
        /// Only runs with this status.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
}

#[derive(clap::Args)]
struct AddArgs {
    /// Unique name.
    name: String,
    /// `*/5 * * * *`, 6 fields with seconds, `@daily`, or `'30 seconds'`.
    schedule: String,
    /// IANA time zone of the schedule.
    #[arg(long, default_value = "UTC")]
    timezone: String,
    /// SQL to run as service_role.
    #[arg(long, conflicts_with_all = ["url", "call"])]
    sql: Option<String>,
    /// URL to request.
    #[arg(long, conflicts_with = "call")]
    url: Option<String>,
    /// HTTP method (GET, or POST with --body).
    #[arg(long, requires = "url")]
    method: Option<String>,
    /// `Name: value` header (repeatable); `${SECRET}` is replaced by the secret.
    #[arg(long = "header", requires = "url")]
    headers: Vec<String>,
    /// Request body (JSON is sent as JSON; --call: the function's body).
    #[arg(long)]
    body: Option<String>,
    /// A deployed function to call with --body.
    #[arg(long)]
    call: Option<String>,
    /// One attempt's limit, milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: i32,
    /// Attempts per tick (1: no retries).
    #[arg(long, default_value_t = 1)]
    max_attempts: i32,
    /// First retry delay, milliseconds (doubles per attempt, with jitter).
    #[arg(long, default_value_t = 1000)]
    backoff_ms: i32,
    /// forbid (skip a tick while the previous run runs) or allow.
    #[arg(long, default_value = "forbid")]
    overlap: String,
    /// Ticks missed while no server ran: skip, run_once or catch_up.
    #[arg(long, default_value = "skip")]
    missed: String,
    /// With --missed catch_up: at most this many.
    #[arg(long, default_value_t = 0)]
    catch_up_max: i32,
    /// Alert this webhook after --alert-after consecutive failed ticks.
    #[arg(long)]
    alert_webhook: Option<String>,
    /// Alert this address (configured SMTP, or the dev mailbox).
    #[arg(long)]
    alert_email: Option<String>,
    /// Consecutive failed ticks before an alert.
    #[arg(long, default_value_t = 1)]
    alert_after: i32,
}

impl AddArgs {
    fn def(self) -> anyhow::Result<JobDef> {
        let body = self.body.map(|b| {
            serde_json::from_str::<serde_json::Value>(&b).unwrap_or(serde_json::Value::String(b))
        });
        let http = match self.url {
            Some(url) => {
                let mut headers = BTreeMap::new();
                for h in self.headers {
                    let (k, v) = h
                        .split_once(':')
                        .with_context(|| format!("--header '{h}' is not `Name: value`"))?;
                    headers.insert(k.trim().to_owned(), v.trim().to_owned());
                }
                Some(HttpSpec {
                    method: self.method,
                    url,
                    headers,
                    body: body.clone(),
                    success: None,
                })
            }
            None => None,
        };
        let call = self.call.map(|function| CallSpec {
            function,
            body: body.clone(),
        });
        Ok(JobDef {
            name: self.name,
            schedule: self.schedule,
            timezone: self.timezone,
            sql: self.sql,
            http,
            call,
            function: None,
            timeout_ms: self.timeout_ms,
            max_attempts: self.max_attempts,
            backoff_ms: self.backoff_ms,
            overlap: enum_of("overlap", self.overlap)?,
            missed: enum_of("missed", self.missed)?,
            catch_up_max: self.catch_up_max,
            paused: false,
            alert: (self.alert_webhook.is_some() || self.alert_email.is_some()).then_some(
                crate::cron::job::AlertSpec {
                    after: self.alert_after,
                    webhook: self.alert_webhook,
                    email: self.alert_email,
                },
            ),
        })
    }
}

/// A `snake_case` enum from its flag's text.
fn enum_of<T: serde::de::DeserializeOwned>(flag: &str, v: String) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::String(v.clone()))
        .with_context(|| format!("--{flag} '{v}' is not one of the accepted values"))
}

/// Runs a cron subcommand against the owner database.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let cfg = cli_config(a.config.as_deref())?;
    let mut client = owner_client(&cfg).await?;
    crate::migrate::run(&mut client, None).await?;
    let rid = super::run_id();
    let actor = Actor::new("cli", Some(rid.as_str()));
    match a.cmd {
        Cmd::List => {
            println!(
                "{:<6}  {:<24}  {:<6}  {:<20}  {:<14}  {:<7}  NEXT",
                "ID", "NAME", "KIND", "SCHEDULE", "TIMEZONE", "PAUSED"
            );
            for j in job::list(&client).await? {
                let next = match (j.def.paused, j.def.validate()) {
                    (false, Ok(s)) => s
                        .next_after(chrono::Utc::now())
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                        .unwrap_or_else(|| "never".into()),
                    _ => "-".into(),
                };
                println!(
                    "{:<6}  {:<24}  {:<6}  {:<20}  {:<14}  {:<7}  {next}",
                    j.id,
                    j.def.name,
                    j.def.kind(),
                    j.def.schedule,
                    j.def.timezone,
                    j.def.paused
                );
            }
        }
        Cmd::Add(args) => {
            let def = (*args).def()?;
            let job = job::create(&client, &def, "api", None, actor)
                .await
                .map_err(refused)?;
            let s = job.def.validate().map_err(|e| anyhow::anyhow!(e.message))?;
            println!("added job {} ({})", job.def.name, job.id);
            println!("next runs:");
            for t in s.upcoming(chrono::Utc::now(), 5) {
                println!("  {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
        }
        Cmd::Rm { name } => {
            job::delete(&client, &name, actor).await.map_err(refused)?;
            println!("deleted job {name}");
        }
        Cmd::Pause { name } => {
            job::patch(&client, &name, &serde_json::json!({"paused": true}), actor)
                .await
                .map_err(refused)?;
            println!("paused {name}");
        }
        Cmd::Resume { name } => {
            job::patch(&client, &name, &serde_json::json!({"paused": false}), actor)
                .await
                .map_err(refused)?;
            println!("resumed {name}");
        }
        Cmd::Run {
            name,
            wait,
            wait_secs,
        } => {
            let id = job::trigger(&client, &name, actor).await.map_err(refused)?;
            println!("queued run {id}");
            if wait {
                let run = wait_for_end(&client, id, Duration::from_secs(wait_secs)).await?;
                print_runs(std::slice::from_ref(&run));
                if run.status != "succeeded" {
                    bail!("run {id} ended {}", run.status);
                }
            }
        }
        Cmd::Logs { run, follow } => follow_logs(&cfg, &client, run, follow).await?,
        Cmd::Runs { job, status, limit } => {
            let f = runs::Filter {
                job,
                status,
                limit: Some(limit),
                ..Default::default()
            };
            print_runs(&runs::list(&client, &f).await?);
        }
    }
    Ok(())
}

fn refused(e: job::WriteError) -> anyhow::Error {
    match e {
        job::WriteError::Invalid(i) => match i.position {
            Some(p) => anyhow::anyhow!("{} (at position {p})", i.message),
            None => anyhow::anyhow!(i.message),
        },
        other => other.into(),
    }
}

/// Waits for the tick of attempt `id` to end: its last attempt, retries
/// included (a failed attempt and its retry are recorded in one transaction,
/// so a terminal latest attempt is the end). Gives up after `limit`.
async fn wait_for_end(
    client: &tokio_postgres::Client,
    id: i64,
    limit: Duration,
) -> anyhow::Result<runs::Run> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let latest: Option<i64> = client
            .query_opt(
                "SELECT l.id FROM wasmbase.cron_runs r JOIN wasmbase.cron_runs l USING (run_id) \
                 WHERE r.id = $1 ORDER BY l.attempt DESC LIMIT 1",
                &[&id],
            )
            .await?
            .map(|r| r.get(0));
        let r = match latest {
            Some(l) => runs::get(client, l).await?,
            None => None,
        }
        .with_context(|| format!("run {id} is gone"))?;
        if !matches!(r.status.as_str(), "pending" | "running") {
            return Ok(r);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "run {id} had not ended after {} s (is a server with cron enabled running?)",
                limit.as_secs()
            );
        }
        // One row by key twice a second: no server involvement.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints attempt `run`'s lines; with `follow`, LISTENs for more until it ends.
async fn follow_logs(
    cfg: &crate::config::Config,
    client: &tokio_postgres::Client,
    run: i64,
    follow: bool,
) -> anyhow::Result<()> {
    use crate::cron::logs;
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let cancel = tokio_util::sync::CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    if follow {
        let url = cfg.database.url.as_deref().context("database.url")?;
        let pg: tokio_postgres::Config = url.parse()?;
        let (w, ready) = (
            wake.clone(),
            std::sync::Arc::new(tokio::sync::Notify::new()),
        );
        let r = ready.clone();
        tokio::spawn(wasmbase_host_api::listen::run(
            pg,
            &[logs::CHANNEL],
            cancel.clone(),
            move |_, payload| {
                let w = w.clone();
                async move {
                    if payload == run.to_string() {
                        w.notify_one();
                    }
                }
            },
            move || {
                let r = r.clone();
                async move { r.notify_one() }
            },
        ));
        // Listening before the first read: no line falls in between.
        let _ = tokio::time::timeout(Duration::from_secs(10), ready.notified()).await;
    }
    let mut last = 0;
    loop {
        let (lines, ended) = logs::since(client, run, last)
            .await?
            .with_context(|| format!("no run {run}"))?;
        let full = lines.len() >= logs::PAGE;
        for l in &lines {
            println!("{}  {:<5}  {}", l.at, l.level, l.message);
            last = l.id;
        }
        if full {
            continue;
        }
        if !follow || ended {
            if let Some(r) = runs::get(client, run).await? {
                eprintln!("-- run {run}: {}", r.status);
            }
            return Ok(());
        }
        // A lost NOTIFY (a reconnect) costs at most 5 s.
        let _ = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
    }
}

fn print_runs(rs: &[runs::Run]) {
    println!(
        "{:<8}  {:<20}  {:<24}  {:<3}  {:<9}  {:<8}  {:>8}  ERROR / OUTPUT",
        "ID", "JOB", "SCHEDULED", "TRY", "STATUS", "TRIGGER", "MS"
    );
    for r in rs {
        let detail = r.error.as_deref().or(r.output.as_deref()).unwrap_or("");
        let detail: String = detail.chars().take(80).collect();
        println!(
            "{:<8}  {:<20}  {:<24}  {:<3}  {:<9}  {:<8}  {:>8}  {}",
            r.id,
            r.job,
            &r.scheduled_for[..r.scheduled_for.len().min(23)],
            r.attempt,
            r.status,
            r.trigger,
            r.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
            detail.replace('\n', " ")
        );
    }
}
