//! Runs one claimed attempt and records how it ended. The attempt's timeout
//! bounds the whole kind (a hanging HTTP target, a long statement); its end
//! goes through `wasmbase.cron_finish`, which queues the retry the job asks
//! for. Recording retries while the database is away, until the lease would
//! have run out (then the attempt is `lost` and retried elsewhere).

use crate::server::state::AppState;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use wasmbase_host_api::db::{Acting, DbError, PoolKind, Tx};

/// An attempt this node won.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// `cron_runs.id` of this attempt.
    pub id: i64,
    /// The same for every attempt of the tick.
    pub run_id: uuid::Uuid,
    /// The tick.
    pub scheduled_for: DateTime<Utc>,
    /// 1 for the first.
    pub attempt: i32,
    /// The job.
    pub job_id: i64,
    /// Its name.
    pub name: String,
    /// `sql`, `http`, `call`, `function`.
    pub kind: String,
    /// The kind's part of the definition.
    pub spec: Value,
    /// The attempt's limit.
    pub timeout: Duration,
}

impl Claimed {
    /// From a claim statement's row.
    pub fn from_row(r: &tokio_postgres::Row) -> anyhow::Result<Claimed> {
        Ok(Claimed {
            id: r.try_get("id")?,
            run_id: r.try_get("run_id")?,
            scheduled_for: r.try_get("scheduled_for")?,
            attempt: r.try_get("attempt")?,
            job_id: r.try_get("job_id")?,
            name: r.try_get("name")?,
            kind: r.try_get("kind")?,
            spec: r.try_get("spec")?,
            timeout: Duration::from_millis(r.try_get::<_, i32>("timeout_ms")?.max(1) as u64),
        })
    }
}

/// Why an attempt failed, and what it produced before.
#[derive(Debug)]
pub struct Failure {
    /// Recorded as the run's `error`.
    pub error: String,
    /// Recorded as its `output` (e.g. an HTTP error body).
    pub output: Option<String>,
    /// The limit ended it (PostgreSQL's statement timeout for a SQL job).
    pub timed_out: bool,
}

fn fail(error: impl Into<String>) -> Failure {
    Failure {
        error: error.into(),
        output: None,
        timed_out: false,
    }
}

/// Takes an attempt off this node's running set however its task ends (a
/// panic included: the lease is then no longer renewed, and the attempt is
/// reaped as lost and retried elsewhere).
struct Running {
    st: AppState,
    id: i64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.st.cron.running.lock().remove(&self.id);
    }
}

/// Starts `c` on its own task.
pub fn start(st: AppState, c: Claimed) {
    st.cron.started.fetch_add(1, Ordering::Relaxed);
    let lost = tokio_util::sync::CancellationToken::new();
    st.cron.running.lock().insert(c.id, lost.clone());
    tokio::spawn(async move {
        let _running = Running {
            st: st.clone(),
            id: c.id,
        };
        let t0 = Instant::now();
        // A handler call enforces the timeout itself (epoch budget and
        // clock); the grace bounds a host that would not stop and leaves
        // room to store its last log lines.
        let limit = match c.kind.as_str() {
            "function" => c.timeout + Duration::from_secs(5),
            _ => c.timeout,
        };
        let outcome = tokio::select! {
            o = tokio::time::timeout(limit, run_kind(&st, &c)) => o,
            _ = lost.cancelled() => {
                tracing::warn!(job = %c.name, run = c.id, "cron: this node lost the attempt's lease; abandoning it (it is retried per the job)");
                return;
            }
        };
        let took = t0.elapsed();
        let (status, error, output) = match outcome {
            Ok(Ok(out)) => ("succeeded", None, out),
            Ok(Err(f)) if f.timed_out => ("timed_out", Some(f.error), f.output),
            Ok(Err(f)) => ("failed", Some(f.error), f.output),
            Err(_) => (
                "timed_out",
                Some(format!(
                    "timed out after {} ms (the job's timeout_ms)",
                    c.timeout.as_millis()
                )),
                None,
            ),
        };
        let max = st.config.cron.output_max_bytes;
        // PostgreSQL text holds no NUL (an HTTP body may).
        let clean = |s: String| truncate(s.replace('\0', "\u{fffd}"), max);
        let output = output.map(clean);
        let error = error.map(clean);
        record(&st, &c, status, error, output, took).await;
    });
}

/// At most `max` bytes of `s`, cut on a character boundary, marked when cut.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(" …[truncated]");
    }
    s
}

async fn record(
    st: &AppState,
    c: &Claimed,
    status: &'static str,
    error: Option<String>,
    output: Option<String>,
    took: Duration,
) {
    let deadline = Instant::now() + st.cron.lease;
    let mut backoff = Duration::from_millis(100);
    let ms = took.as_millis() as i64;
    loop {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let ending = super::finish::Ending {
            id: c.id,
            status,
            error: error.clone(),
            output: output.clone(),
            duration_ms: ms,
            reply,
        };
        let r = match st.cron.finish.send(ending) {
            Ok(()) => answer
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the writer stopped"))),
            Err(_) => Err(anyhow::anyhow!("the writer stopped")),
        };
        match r {
            Ok(2) => {
                super::alerts::check(st, c.job_id).await;
                return;
            }
            Ok(1) => return,
            Ok(_) => {
                tracing::warn!(job = %c.name, run = c.id, "cron: attempt ended after its lease ran out; it was recorded as lost");
                return;
            }
            Err(e) if Instant::now() + backoff < deadline => {
                tracing::warn!(job = %c.name, run = c.id, error = %format!("{e:#}"), "cron: recording an attempt; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(job = %c.name, run = c.id, error = %format!("{e:#}"), "cron: could not record an attempt; it will be recorded as lost");
                return;
            }
        }
    }
}

async fn run_kind(st: &AppState, c: &Claimed) -> Result<Option<String>, Failure> {
    match c.kind.as_str() {
        "sql" => {
            let command = c.spec["command"].as_str().unwrap_or_default();
            sql(st, c.id, command, c.timeout).await
        }
        "http" => {
            let spec: super::job::HttpSpec = serde_json::from_value(c.spec.clone())
                .map_err(|e| fail(format!("unreadable http job: {e}")))?;
            http(st, &spec).await
        }
        "call" => {
            let spec: super::job::CallSpec = serde_json::from_value(c.spec.clone())
                .map_err(|e| fail(format!("unreadable call job: {e}")))?;
            call(st, c, &spec).await
        }
        "function" => {
            let spec: super::job::HandlerSpec = serde_json::from_value(c.spec.clone())
                .map_err(|e| fail(format!("unreadable function job: {e}")))?;
            handler(st, c, &spec).await
        }
        other => Err(fail(format!("jobs of kind '{other}' cannot run"))),
    }
}

/// The role and claims every SQL job runs with.
const SERVICE_CLAIMS: &str = r#"{"role":"service_role"}"#;

/// One SQL job: a transaction on the functions' raw-SQL pool (login
/// `wasmbase_functions`, never the owner or a superuser) as service_role, with
/// the job's timeout as `statement_timeout`. One statement (or a function
/// call). Output: rows affected and the first row of the result.
async fn sql(
    st: &AppState,
    run: i64,
    command: &str,
    timeout: Duration,
) -> Result<Option<String>, Failure> {
    let tx = Tx::connect(&st.functions.sql_pool, PoolKind::Isolated)
        .await
        .map_err(|e| fail(e.describe()))?;
    let acting = Acting {
        role: "service_role",
        claims: SERVICE_CLAIMS,
        timeout,
        read_only: false,
    };
    let command = command.to_owned();
    let msgs = tx
        .run(Some(&acting), |c| {
            Box::pin(async move {
                // Parsed first: one statement only (a second, e.g. a COMMIT,
                // could leave the transaction and its timeout behind).
                c.prepare(&command).await.map_err(DbError::from)?;
                // net.http_* called by the job tie their answers to this run.
                c.execute(
                    "SELECT set_config('wasmbase.cron_run', $1, true)",
                    &[&run.to_string()],
                )
                .await
                .map_err(DbError::from)?;
                c.simple_query(&command).await.map_err(DbError::from)
            })
        })
        .await
        .map_err(|e| Failure {
            timed_out: wasmbase_host_api::db::sqlstate(&e) == Some("57014"),
            ..fail(e.describe())
        })?;
    let mut affected = 0u64;
    let mut first: Option<Value> = None;
    for m in &msgs {
        match m {
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => affected = *n,
            tokio_postgres::SimpleQueryMessage::Row(r) if first.is_none() => {
                let mut o = serde_json::Map::new();
                for (i, col) in r.columns().iter().enumerate() {
                    o.insert(col.name().to_owned(), json!(r.get(i)));
                }
                first = Some(Value::Object(o));
            }
            tokio_postgres::SimpleQueryMessage::RowDescription(_) => first = None,
            _ => {}
        }
    }
    Ok(Some(
        json!({ "rows": affected, "first_row": first }).to_string(),
    ))
}

/// `${NAME}` in `s` replaced by the secret (or dev `.env` value) `NAME`.
fn with_secrets(st: &AppState, s: &str) -> Result<String, Failure> {
    let env = st.functions.env.load();
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(fail("an unclosed ${ in a header value"));
        };
        let name = &after[..end];
        match env.get(name) {
            Some(v) => out.push_str(v),
            None => {
                return Err(fail(format!(
                    "secret '{name}' is not set (wasmbase secrets set {name} …)"
                )))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One HTTP job: succeeds only when the response arrived with a status in the
/// job's range; the status and the first bytes of the body are its output.
async fn http(st: &AppState, spec: &super::job::HttpSpec) -> Result<Option<String>, Failure> {
    let (lo, hi) =
        super::job::success_range(spec.success.as_deref()).map_err(|e| fail(e.message))?;
    let method = spec
        .method
        .clone()
        .unwrap_or_else(|| if spec.body.is_some() { "POST" } else { "GET" }.into());
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| fail(format!("'{method}' is not an HTTP method")))?;
    let mut req = st.cron.http.request(method, &spec.url);
    for (k, v) in &spec.headers {
        req = req.header(k, with_secrets(st, v)?);
    }
    match &spec.body {
        Some(Value::String(s)) => req = req.body(s.clone()),
        Some(v) => req = req.json(v),
        None => {}
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| fail(format!("request failed: {}", describe_reqwest(e))))?;
    let status = resp.status().as_u16();
    let max = st.config.cron.output_max_bytes;
    let mut body = Vec::new();
    while body.len() < max {
        match resp.chunk().await {
            Ok(Some(b)) => body.extend_from_slice(&b),
            Ok(None) => break,
            Err(e) => {
                return Err(fail(format!(
                    "reading the response failed: {}",
                    describe_reqwest(e)
                )))
            }
        }
    }
    judge(status, body, max, (lo, hi))
}

/// An HTTP answer as a run's outcome: `"<status> <first bytes>"` as output,
/// success only inside `range`.
fn judge(
    status: u16,
    mut body: Vec<u8>,
    max: usize,
    range: (u16, u16),
) -> Result<Option<String>, Failure> {
    body.truncate(max);
    let output = format!("{status} {}", String::from_utf8_lossy(&body));
    let (lo, hi) = range;
    if (lo..=hi).contains(&status) {
        Ok(Some(output))
    } else {
        Err(Failure {
            output: Some(output),
            ..fail(format!("the response status {status} is outside {lo}-{hi}"))
        })
    }
}

/// The deployed function `name`, or the failure naming why it cannot run.
fn function(
    st: &AppState,
    name: &str,
) -> Result<std::sync::Arc<crate::functions::load::Loaded>, Failure> {
    crate::api::functions::lookup(st, name)
        .map_err(|e| fail(format!("function '{name}': {} ({})", e.message, e.code)))
}

/// A `call` job: `POST /functions/v1/<function>` with the job's body, run in
/// this process as service_role (as Supabase Cron calls an Edge Function with
/// the service key), under the function's own grants and limits. The run id
/// and attempt go along as `x-cron-run-id` / `x-cron-attempt` headers so the
/// function can make its work idempotent. Succeeds on a 2xx answer.
async fn call(
    st: &AppState,
    c: &Claimed,
    spec: &super::job::CallSpec,
) -> Result<Option<String>, Failure> {
    use http_body_util::BodyExt;
    let f = function(st, &spec.function)?;
    let (body, kind) = match &spec.body {
        None => (Vec::new(), "application/json"),
        Some(Value::String(s)) => (s.clone().into_bytes(), "text/plain; charset=utf-8"),
        Some(v) => (v.to_string().into_bytes(), "application/json"),
    };
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("/functions/v1/{}", spec.function))
        .header(http::header::CONTENT_TYPE, kind)
        .header("x-cron-run-id", c.run_id.to_string())
        .header("x-cron-attempt", c.attempt.to_string())
        .body(axum::body::Body::from(body))
        .map_err(|e| fail(format!("building the request: {e}")))?;
    let principal = wasmbase_host_api::Principal::for_role(wasmbase_host_api::Role::ServiceRole);
    let resp = crate::api::functions::invoke_as(st, f, principal, req)
        .await
        .map_err(|e| {
            fail(format!(
                "function '{}': {} ({})",
                spec.function, e.message, e.code
            ))
        })?;
    let status = resp.status().as_u16();
    let max = st.config.cron.output_max_bytes;
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while out.len() < max {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(fail(format!("reading the function's answer: {e}"))),
            None => break,
        }
    }
    judge(status, out, max, (200, 299))
}

/// A function's cron handler (`[[cron]]` entry): the tick, run id, attempt and
/// payload go in the event; the guest's log lines are kept with the run.
async fn handler(
    st: &AppState,
    c: &Claimed,
    spec: &super::job::HandlerSpec,
) -> Result<Option<String>, Failure> {
    use wasmbase_host_api::{Principal, Role};
    let f = function(st, &spec.function)?;
    let role = match spec.role.as_deref() {
        Some("anon") => Role::Anon,
        _ => Role::ServiceRole,
    };
    let event = crate::functions::scheduled::ScheduleEvent {
        name: spec.entry.clone(),
        scheduled_at: c
            .scheduled_for
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        run_id: c.run_id.to_string(),
        attempt: c.attempt.max(1) as u32,
        payload: spec.payload.as_ref().map(Value::to_string),
    };
    let (tap, lines) = tokio::sync::mpsc::unbounded_channel();
    let forwarder = tokio::spawn(super::logs::forward(st.clone(), c.id, lines));
    let out = crate::functions::scheduled::call(
        st,
        f,
        event,
        Principal::for_role(role),
        c.timeout,
        Some(tap),
    )
    .await;
    // Every line is in the database before the run is recorded as ended.
    let _ = forwarder.await;
    match out.result {
        Ok(()) => Ok(None),
        Err(m) => Err(Failure {
            timed_out: out.timed_out,
            ..fail(m)
        }),
    }
}

/// `e` with its causes (reqwest's own text omits them: "error sending
/// request"). Callers whose URL may hold a secret pass `e.without_url()`.
pub(super) fn describe_reqwest(e: reqwest::Error) -> String {
    format!("{:#}", anyhow::Error::from(e))
}
