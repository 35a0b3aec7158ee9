//! A job's definition as the admin API, the CLI and the store see it, its
//! validation (one place for every rule), and the SQL that keeps it in
//! `wasmbase.cron_jobs`. Every change is audited and announced on
//! [`super::CHANNEL`] so each node's scheduler picks it up.

use super::schedule::{Schedule, ScheduleError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;
use wasmbase_host_api::audit::{self, Actor};

/// What a job runs, by kind.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// `GET` unless a body is given (then `POST`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `http://` or `https://`.
    pub url: String,
    /// Header values may name secrets as `${NAME}` (`wasmbase secrets set`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A string is sent as-is; any other JSON value as `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Statuses that count as success, `"200-299"` (the default) or one code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<String>,
}

/// A deployed function's HTTP entry point, called with a JSON body (Supabase
/// Cron's "Edge Function" job).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CallSpec {
    /// The function's name.
    pub function: String,
    /// Sent as the JSON body of a `POST /functions/v1/<function>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// A handler a function exports (`wasmbase:platform/cron-handler`), from a
/// `[[cron]]` entry of its `function.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HandlerSpec {
    /// The function's name.
    pub function: String,
    /// The entry's name (what the handler sees as `schedule-event.name`).
    pub entry: String,
    /// JSON text handed to the handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// `service_role` (default) or `anon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// Who hears of a job that keeps failing (AtlasHub's notify-on-failure).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertSpec {
    /// Consecutive failed ticks (after their retries) before the alert (1).
    #[serde(default = "one")]
    pub after: i32,
    /// POSTed a JSON notice (`type`, `job`, `run`, `error`, `link`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Mailed through the configured SMTP (the dev mailbox in `wasmbase dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// When a tick comes while the job's previous run still runs.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The tick is recorded as `skipped`.
    #[default]
    Forbid,
    /// Runs side by side.
    Allow,
}

/// What happens to ticks that passed while no node was running.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// They are dropped.
    #[default]
    Skip,
    /// The latest of them runs once.
    RunOnce,
    /// The latest `catch_up_max` of them run.
    CatchUp,
}

/// A job as it is created or replaced. Exactly one of `sql`, `http`, `call`,
/// `function` says what it runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobDef {
    /// Unique; what the CLI and `cron.unschedule` name it by.
    pub name: String,
    /// 5 or 6 fields, an @nickname, or `'N seconds'`.
    pub schedule: String,
    /// IANA name; `UTC` by default.
    #[serde(default = "utc")]
    pub timezone: String,
    /// One SQL statement (or a function call), run as service_role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// An HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSpec>,
    /// A deployed function called over its HTTP entry point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<CallSpec>,
    /// A function's cron handler (manifest jobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<HandlerSpec>,
    /// One attempt's limit (30 s).
    #[serde(default = "default_timeout")]
    pub timeout_ms: i32,
    /// Attempts per tick, the first included (1: no retries).
    #[serde(default = "one")]
    pub max_attempts: i32,
    /// Delay before the first retry; doubled for each further one, with jitter.
    #[serde(default = "default_backoff")]
    pub backoff_ms: i32,
    /// See [`Overlap`].
    #[serde(default)]
    pub overlap: Overlap,
    /// See [`Missed`].
    #[serde(default)]
    pub missed: Missed,
    /// With `missed = "catch_up"`: at most this many missed ticks run.
    #[serde(default)]
    pub catch_up_max: i32,
    /// A paused job claims no ticks (a manual run still runs).
    #[serde(default)]
    pub paused: bool,
    /// Alerts after consecutive failures, and one recovery notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertSpec>,
}

fn utc() -> String {
    "UTC".into()
}
fn default_timeout() -> i32 {
    30_000
}
fn one() -> i32 {
    1
}
fn default_backoff() -> i32 {
    1_000
}

/// A refused definition: a stable code and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// `invalid_schedule`, `invalid_timezone`, `invalid_job`.
    pub code: &'static str,
    /// Says what is wrong and where.
    pub message: String,
    /// The schedule column at fault, for `invalid_schedule`.
    pub position: Option<usize>,
}

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid {
        code: "invalid_job",
        message: message.into(),
        position: None,
    }
}

impl From<ScheduleError> for Invalid {
    fn from(e: ScheduleError) -> Invalid {
        Invalid {
            code: if e.message.contains("time zone") {
                "invalid_timezone"
            } else {
                "invalid_schedule"
            },
            message: e.message,
            position: e.position,
        }
    }
}

/// The longest attempt a job may ask for (a day).
pub const MAX_TIMEOUT_MS: i32 = 86_400_000;

impl JobDef {
    /// The kind column: which of the four it runs.
    pub fn kind(&self) -> &'static str {
        match (&self.sql, &self.http, &self.call, &self.function) {
            (Some(_), ..) => "sql",
            (_, Some(_), ..) => "http",
            (_, _, Some(_), _) => "call",
            _ => "function",
        }
    }

    /// The kind's part, as stored in `spec`.
    pub fn spec(&self) -> Value {
        match self.kind() {
            "sql" => json!({ "command": self.sql }),
            "http" => json!(self.http),
            "call" => json!(self.call),
            _ => json!(self.function),
        }
    }

    /// Checks every rule and returns the parsed schedule.
    pub fn validate(&self) -> Result<Schedule, Invalid> {
        if self.name.is_empty()
            || self.name.len() > 200
            || self.name.chars().any(|c| c.is_control())
        {
            return Err(invalid(
                "name must be 1 to 200 characters, without control characters",
            ));
        }
        let kinds = [
            self.sql.is_some(),
            self.http.is_some(),
            self.call.is_some(),
            self.function.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(invalid(
                "a job runs exactly one of: sql, http, call (or a function's handler)",
            ));
        }
        if let Some(sql) = &self.sql {
            if sql.trim().is_empty() {
                return Err(invalid("sql is empty"));
            }
        }
        // PostgreSQL stores no NUL in text or jsonb: refused here, not as a 500.
        if self.name.contains('\0') || self.spec().to_string().contains("\\u0000") {
            return Err(invalid("a job's fields cannot contain NUL characters"));
        }
        if let Some(h) = &self.http {
            let url = url::Url::parse(&h.url)
                .map_err(|e| invalid(format!("http.url is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid("http.url must be http:// or https://"));
            }
            if let Some(m) = &h.method {
                if http::Method::from_bytes(m.as_bytes()).is_err() {
                    return Err(invalid(format!("http.method '{m}' is not an HTTP method")));
                }
            }
            for (k, v) in &h.headers {
                if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                    || v.chars().any(|c| c.is_control())
                {
                    return Err(invalid(format!("http.headers: invalid header '{k}'")));
                }
            }
            success_range(h.success.as_deref())?;
        }
        if let Some(f) = &self.function {
            if !crate::functions::manifest::valid_name(&f.function) {
                return Err(invalid(format!(
                    "function '{}' is not a function name",
                    f.function
                )));
            }
        }
        if let Some(c) = &self.call {
            if !crate::functions::manifest::valid_name(&c.function) {
                return Err(invalid(format!(
                    "call.function '{}' is not a function name",
                    c.function
                )));
            }
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(invalid(format!(
                "timeout_ms must be between 1 and {MAX_TIMEOUT_MS}"
            )));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(invalid("max_attempts must be between 1 and 100"));
        }
        if !(0..=3_600_000).contains(&self.backoff_ms) {
            return Err(invalid("backoff_ms must be between 0 and 3600000"));
        }
        if !(0..=1000).contains(&self.catch_up_max) {
            return Err(invalid("catch_up_max must be between 0 and 1000"));
        }
        if let Some(a) = &self.alert {
            if !(1..=1000).contains(&a.after) {
                return Err(invalid("alert.after must be between 1 and 1000"));
            }
            if a.webhook.is_none() && a.email.is_none() {
                return Err(invalid("alert needs a webhook, an email, or both"));
            }
            if let Some(w) = &a.webhook {
                match url::Url::parse(w) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    _ => return Err(invalid("alert.webhook must be an http:// or https:// URL")),
                }
            }
            if let Some(e) = &a.email {
                if e.parse::<lettre::Address>().is_err() {
                    return Err(invalid(format!(
                        "alert.email '{e}' is not an e-mail address"
                    )));
                }
            }
        }
        Ok(Schedule::parse(&self.schedule, &self.timezone)?)
    }

    /// Rebuilds a definition from a `cron_jobs` row's columns.
    fn from_row(r: &tokio_postgres::Row) -> Result<JobDef, serde_json::Error> {
        let kind: String = r.get("kind");
        let spec: Value = r.get("spec");
        let mut d = JobDef {
            name: r.get("name"),
            schedule: r.get("schedule"),
            timezone: r.get("timezone"),
            sql: None,
            http: None,
            call: None,
            function: None,
            timeout_ms: r.get("timeout_ms"),
            max_attempts: r.get("max_attempts"),
            backoff_ms: r.get("backoff_ms"),
            overlap: serde_json::from_value(Value::String(r.get("overlap")))?,
            missed: serde_json::from_value(Value::String(r.get("missed")))?,
            catch_up_max: r.get("catch_up_max"),
            paused: r.get("paused"),
            alert: r
                .get::<_, Option<Value>>("alert")
                .map(serde_json::from_value)
                .transpose()?,
        };
        match kind.as_str() {
            "sql" => d.sql = spec["command"].as_str().map(str::to_owned),
            "http" => d.http = Some(serde_json::from_value(spec)?),
            "call" => d.call = Some(serde_json::from_value(spec)?),
            _ => d.function = Some(serde_json::from_value(spec)?),
        }
        Ok(d)
    }
}

/// The success range of an HTTP job: `"200-299"`, `"204"`, default 2xx.
pub fn success_range(s: Option<&str>) -> Result<(u16, u16), Invalid> {
    let Some(s) = s else { return Ok((200, 299)) };
    let bad = || {
        invalid(format!(
            "http.success '{s}' must be a status or a range such as 200-299"
        ))
    };
    let code = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    match s.split_once('-') {
        Some((a, b)) => match (code(a), code(b)) {
            (Some(a), Some(b)) if a <= b => Ok((a, b)),
            _ => Err(bad()),
        },
        None => code(s).map(|c| (c, c)).ok_or_else(bad),
    }
}

/// A stored job: its id, source and definition.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// `cron_jobs.id` (pg_cron's `jobid`).
    pub id: i64,
    /// `api`, `sql` or `manifest`.
    pub source: String,
    /// Its definition.
    #[serde(flatten)]
    pub def: JobDef,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

const COLUMNS: &str = "id, name, kind, schedule, timezone, spec, source, timeout_ms, max_attempts, backoff_ms, overlap, missed, catch_up_max, paused, alert, \
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS created, \
    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS updated";

fn job_of(r: &tokio_postgres::Row) -> anyhow::Result<Job> {
    Ok(Job {
        id: r.get("id"),
        source: r.get("source"),
        def: JobDef::from_row(r)?,
        created_at: r.get("created"),
        updated_at: r.get("updated"),
    })
}

/// Every job, by name.
pub async fn list(c: &impl GenericClient) -> anyhow::Result<Vec<Job>> {
    let rows = c
        .query(
            &format!("SELECT {COLUMNS} FROM wasmbase.cron_jobs ORDER BY name"),
            &[],
        )
        .await?;
    rows.iter().map(job_of).collect()
}

/// One job by name, or by id when `key` is a number.
pub async fn get(c: &impl GenericClient, key: &str) -> anyhow::Result<Option<Job>> {
    let id = key.parse::<i64>().ok();
    let row = c
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM wasmbase.cron_jobs WHERE name = $1 OR id = $2 ORDER BY (name = $1) DESC LIMIT 1"
            ),
            &[&key, &id],
        )
        .await?;
    row.as_ref().map(job_of).transpose()
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The definition breaks a rule.
    #[error("{}", .0.message)]
    Invalid(Invalid),
    /// Another job has that name.
    #[error("a job named '{0}' exists")]
    Exists(String),
    /// No such job.
    #[error("no job '{0}'")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] anyhow::Error),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            return WriteError::Exists(String::new());
        }
        WriteError::Db(anyhow::anyhow!(wasmbase_host_api::db::describe(&e)))
    }
}

async fn announce(c: &impl GenericClient, id: i64) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "SELECT pg_notify($1, 'job:' || $2::bigint)",
        &[&super::CHANNEL, &id],
    )
    .await
    .map(drop)
}

/// Creates a job (`source`: `api`, `sql`, `manifest`), audited.
pub async fn create(
    c: &impl GenericClient,
    def: &JobDef,
    source: &str,
    function_name: Option<&str>,
    actor: Actor<'_>,
) -> Result<Job, WriteError> {
    def.validate().map_err(WriteError::Invalid)?;
    let cols = Columns::of(def);
    let mut params = cols.params(def);
    params.extend([&source as &(dyn ToSql + Sync), &function_name]);
    let row = c
        .query_one(
            &format!(
                "INSERT INTO wasmbase.cron_jobs ({DEF_COLUMNS}, source, function_name) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING {COLUMNS}"
            ),
            &params,
        )
        .await
        .map_err(|e| named(e, &def.name))?;
    let job = job_of(&row)?;
    announce(c, job.id).await?;
    audit::record(
        c,
        actor,
        "cron.job.create",
        &def.name,
        json!({ "id": job.id, "kind": def.kind(), "source": source }),
    )
    .await?;
    Ok(job)
}

/// The columns a definition writes, in the order [`Columns::params`] binds
/// them (`$1`…`$13`), for both the insert and the update.
const DEF_COLUMNS: &str = "name, kind, schedule, timezone, spec, timeout_ms, max_attempts, backoff_ms, overlap, missed, catch_up_max, paused, alert";

/// The values of [`DEF_COLUMNS`] that are computed from a definition.
struct Columns {
    kind: &'static str,
    spec: Value,
    overlap: String,
    missed: String,
    alert: Option<Value>,
}

impl Columns {
    fn of(def: &JobDef) -> Columns {
        Columns {
            kind: def.kind(),
            spec: def.spec(),
            overlap: enum_text(&def.overlap),
            missed: enum_text(&def.missed),
            alert: def.alert.as_ref().map(|a| json!(a)),
        }
    }

    /// `def`'s values for [`DEF_COLUMNS`], in order.
    fn params<'a>(&'a self, def: &'a JobDef) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![
            &def.name,
            &self.kind,
            &def.schedule,
            &def.timezone,
            &self.spec,
            &def.timeout_ms,
            &def.max_attempts,
            &def.backoff_ms,
            &self.overlap,
            &self.missed,
            &def.catch_up_max,
            &def.paused,
            &self.alert,
        ]
    }
}

/// A write's error, naming `name` when another job holds it.
fn named(e: tokio_postgres::Error, name: &str) -> WriteError {
    match WriteError::from(e) {
        WriteError::Exists(_) => WriteError::Exists(name.to_owned()),
        other => other,
    }
}

fn enum_text<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Replaces job `key`'s definition with `def` (its name may change). A new
/// schedule, zone or a resume starts a new missed-tick window.
pub async fn replace(
    c: &impl GenericClient,
    key: &str,
    def: &JobDef,
    actor: Actor<'_>,
) -> Result<Job, WriteError> {
    let Some(old) = get(c, key).await? else {
        return Err(WriteError::NotFound(key.into()));
    };
    replace_job(c, &old, def, actor).await
}

/// [`replace`] for a job already read (by whatever key).
async fn replace_job(
    c: &impl GenericClient,
    old: &Job,
    def: &JobDef,
    actor: Actor<'_>,
) -> Result<Job, WriteError> {
    def.validate().map_err(WriteError::Invalid)?;
    let cols = Columns::of(def);
    let mut params = cols.params(def);
    params.push(&old.id);
    let row = c
        .query_one(
            &format!(
                "UPDATE wasmbase.cron_jobs SET ({DEF_COLUMNS}) = ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13), \
                 updated_at = now(), version = version + 1, \
                 active_since = CASE WHEN schedule <> $3 OR timezone <> $4 OR (paused AND NOT $12) THEN now() ELSE active_since END \
                 WHERE id = $14 RETURNING {COLUMNS}"
            ),
            &params,
        )
        .await
        .map_err(|e| named(e, &def.name))?;
    let job = job_of(&row)?;
    announce(c, job.id).await?;
    audit::record(
        c,
        actor,
        "cron.job.update",
        &def.name,
        json!({ "id": job.id, "paused": def.paused }),
    )
    .await?;
    Ok(job)
}

/// Applies a JSON merge of `patch` onto job `key` (what `PATCH`, pause and
/// resume do).
pub async fn patch(
    c: &impl GenericClient,
    key: &str,
    patch: &Value,
    actor: Actor<'_>,
) -> Result<Job, WriteError> {
    let Some(old) = get(c, key).await? else {
        return Err(WriteError::NotFound(key.into()));
    };
    let Some(fields) = patch.as_object() else {
        return Err(WriteError::Invalid(invalid(
            "the body must be a JSON object",
        )));
    };
    if old.source == "manifest" && fields.keys().any(|k| k != "paused") {
        return Err(WriteError::Invalid(invalid(format!(
            "job '{}' comes from its function's function.toml: change it there (only `paused` can be set here)",
            old.def.name
        ))));
    }
    if old.source != "manifest" && fields.contains_key("function") {
        return Err(WriteError::Invalid(invalid(
            "handler jobs come from a function's function.toml ([[cron]]); use `call` to call a function",
        )));
    }
    let mut merged = serde_json::to_value(&old.def).map_err(anyhow::Error::from)?;
    for (k, v) in fields {
        if v.is_null() {
            merged.as_object_mut().expect("object").remove(k);
        } else {
            merged[k] = v.clone();
        }
    }
    // Switching kinds: the patch's kind replaces the old one.
    let kinds = ["sql", "http", "call", "function"];
    if let Some(new_kind) = kinds.iter().find(|k| fields.contains_key(**k)) {
        for k in kinds.iter().filter(|k| *k != new_kind) {
            merged.as_object_mut().expect("object").remove(*k);
        }
    }
    let def: JobDef =
        serde_json::from_value(merged).map_err(|e| WriteError::Invalid(invalid(e.to_string())))?;
    replace_job(c, &old, &def, actor).await
}

/// Deletes job `key` (its history stays); a run in progress finishes and is
/// recorded.
pub async fn delete(
    c: &impl GenericClient,
    key: &str,
    actor: Actor<'_>,
) -> Result<Job, WriteError> {
    let Some(job) = get(c, key).await? else {
        return Err(WriteError::NotFound(key.into()));
    };
    delete_job(c, &job, actor).await?;
    Ok(job)
}

/// [`delete`] for a job already read.
async fn delete_job(c: &impl GenericClient, job: &Job, actor: Actor<'_>) -> Result<(), WriteError> {
    c.execute("DELETE FROM wasmbase.cron_jobs WHERE id = $1", &[&job.id])
        .await?;
    // Retries and manual runs waiting for it will not run now.
    c.execute(
        "UPDATE wasmbase.cron_runs SET status = 'failed', finished_at = now(), error = 'the job was deleted before this attempt started' \
         WHERE job_id = $1 AND status = 'pending'",
        &[&job.id],
    )
    .await?;
    announce(c, job.id).await?;
    audit::record(
        c,
        actor,
        "cron.job.delete",
        &job.def.name,
        json!({ "id": job.id }),
    )
    .await?;
    Ok(())
}

/// Makes function `function`'s manifest jobs exactly `defs` (its `[[cron]]`
/// entries as [`crate::functions::manifest::Manifest::cron_jobs`] builds them):
/// new entries are created, changed ones replaced, and entries that went away
/// (or all of them, for a deleted function: `defs` empty) deleted. A job of
/// another source that holds an entry's name is left alone, with a warning.
/// Call it inside the transaction that records the deploy.
pub async fn sync_manifest(
    c: &impl GenericClient,
    function: &str,
    defs: &[JobDef],
    actor: Actor<'_>,
) -> Result<(), WriteError> {
    let rows = c
        .query(
            &format!("SELECT {COLUMNS} FROM wasmbase.cron_jobs WHERE source = 'manifest' AND function_name = $1"),
            &[&function],
        )
        .await?;
    let current: Vec<Job> = rows.iter().map(job_of).collect::<anyhow::Result<_>>()?;
    for def in defs {
        match current.iter().find(|j| j.def.name == def.name) {
            // A pause set by an operator survives a redeploy.
            Some(j)
                if j.def
                    == JobDef {
                        paused: j.def.paused,
                        ..def.clone()
                    } => {}
            Some(j) => {
                let def = JobDef {
                    paused: j.def.paused,
                    ..def.clone()
                };
                replace_job(c, j, &def, actor).await?;
            }
            // Checked first: a failed insert would abort the caller's transaction.
            None if get(c, &def.name).await?.is_some() => {
                tracing::warn!(job = %def.name, function, "cron: a job of another source has this [[cron]] entry's name; the entry is not scheduled");
            }
            None => {
                create(c, def, "manifest", Some(function), actor).await?;
            }
        }
    }
    for j in current
        .iter()
        .filter(|j| !defs.iter().any(|d| d.name == j.def.name))
    {
        delete(c, &j.id.to_string(), actor).await?;
    }
    Ok(())
}

/// Queues a run of job `key` now, whatever its schedule and pause (`trigger
/// = manual`); any node picks it up. Returns the attempt row's id.
pub async fn trigger(
    c: &impl GenericClient,
    key: &str,
    actor: Actor<'_>,
) -> Result<i64, WriteError> {
    let Some(job) = get(c, key).await? else {
        return Err(WriteError::NotFound(key.into()));
    };
    let id: i64 = c
        .query_one(
            "INSERT INTO wasmbase.cron_runs (job_id, job_name, scheduled_for, status, trigger) \
             VALUES ($1, $2, clock_timestamp(), 'pending', 'manual') RETURNING id",
            &[&job.id, &job.def.name],
        )
        .await?
        .get(0);
    c.execute("SELECT wasmbase.cron_announce_run($1)", &[&id])
        .await?;
    audit::record(
        c,
        actor,
        "cron.job.run",
        &job.def.name,
        json!({ "id": job.id, "run": id }),
    )
    .await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(v: Value) -> JobDef {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn rules() {
        let ok = def(json!({"name": "a", "schedule": "* * * * *", "sql": "select 1"}));
        assert!(ok.validate().is_ok());
        assert_eq!(ok.kind(), "sql");
        let two = def(
            json!({"name": "a", "schedule": "* * * * *", "sql": "select 1", "call": {"function": "hello"}}),
        );
        assert_eq!(two.validate().unwrap_err().code, "invalid_job");
        let e = def(json!({"name": "a", "schedule": "* 24 * * *", "sql": "x"}))
            .validate()
            .unwrap_err();
        assert_eq!((e.code, e.position), ("invalid_schedule", Some(3)));
        let e =
            def(json!({"name": "a", "schedule": "@daily", "timezone": "Nowhere/City", "sql": "x"}))
                .validate()
                .unwrap_err();
        assert_eq!(e.code, "invalid_timezone");
        let e = def(json!({"name": "a", "schedule": "@daily", "http": {"url": "ftp://x"}}))
            .validate()
            .unwrap_err();
        assert!(e.message.contains("http"), "{e:?}");
        assert_eq!(success_range(Some("200-204")).unwrap(), (200, 204));
        assert_eq!(success_range(Some("204")).unwrap(), (204, 204));
        assert!(success_range(Some("299-200")).is_err());
        assert!(success_range(Some("abc")).is_err());
        assert!(serde_json::from_value::<JobDef>(
            json!({"name": "a", "schedule": "x", "sql": "x", "nope": 1})
        )
        .is_err());
    }
}
