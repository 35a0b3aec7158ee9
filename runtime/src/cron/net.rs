//! The server side of `net.http_get/post/delete` (migrations/0021): requests
//! queued by SQL (most often a cron SQL job, as Supabase's HTTP cron jobs
//! are written) are taken by any node — `FOR UPDATE SKIP LOCKED`, woken by
//! NOTIFY on [`CHANNEL`] — performed if `cron.http_allow` lists the host, and
//! answered into `net._http_response` as pg_net does. A request made by a cron
//! job's SQL is also recorded on that job's run: its output gets the status
//! and a log line, which pg_net cannot do.

use crate::server::state::AppState;
use serde_json::{Map, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// NOTIFY channel of queued requests.
pub const CHANNEL: &str = "wasmbase_net";

/// Requests one node performs at once.
const IN_FLIGHT: usize = 50;

/// How long answers are kept (pg_net's default `ttl`).
const RESPONSE_TTL: &str = "6 hours";

/// Bytes of a response body kept.
const MAX_BODY: usize = 1 << 20;

/// A request is taken again only once the node that took it must have
/// finished or died (its timeout and a minute more), so a slow request is
/// never sent twice by two live nodes.
const TAKE_SQL: &str = "\
UPDATE net.http_request_queue q SET taken_at = now()
 WHERE q.id IN (SELECT id FROM net.http_request_queue
                 WHERE taken_at IS NULL
                    OR taken_at < now() - make_interval(secs => timeout_milliseconds / 1000.0 + 60)
                 ORDER BY id FOR UPDATE SKIP LOCKED LIMIT $1)
RETURNING q.id, q.method, q.url, q.params, q.headers, q.body, q.timeout_milliseconds, q.cron_run";

/// Takes and performs queued requests until `cancel`, at most
/// [`IN_FLIGHT`] at once (a slow one holds one slot, not the queue).
pub async fn worker(st: AppState, cancel: CancellationToken) {
    let installed = async {
        let c = st.cron.records.get().await?;
        anyhow::Ok(
            c.query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_net')",
                &[],
            )
            .await?
            .get::<_, bool>(0),
        )
    };
    match installed.await {
        Ok(true) => {
            tracing::info!("net.http_* are pg_net's here; Wasmbase's worker stays off");
            return;
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "net: checking for pg_net"),
    }
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut pruned = std::time::Instant::now();
    loop {
        let free = slots.available_permits() as i64;
        let taken = async {
            let c = st.cron.records.get().await?;
            if pruned.elapsed() > Duration::from_secs(3600) {
                c.execute(
                    &format!("DELETE FROM net._http_response WHERE created < now() - interval '{RESPONSE_TTL}'"),
                    &[],
                )
                .await?;
                pruned = std::time::Instant::now();
            }
            if free == 0 {
                return anyhow::Ok(Vec::new());
            }
            anyhow::Ok(c.query(TAKE_SQL, &[&free]).await?)
        }
        .await;
        let rows = match taken {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "net: taking queued requests");
                Vec::new()
            }
        };
        let full = !rows.is_empty() && rows.len() as i64 == free;
        for r in rows {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let st = st.clone();
            tokio::spawn(async move {
                perform(&st, &r).await;
                drop(permit);
                // A slot is free: look for more.
                st.cron.net_kick.notify_one();
            });
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = st.cron.net_kick.notified() => {}
            // A NOTIFY lost to a reconnect waits at most this long.
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

struct Answer {
    status: Option<i32>,
    content_type: Option<String>,
    headers: Option<Value>,
    content: Option<String>,
    timed_out: bool,
    error: Option<String>,
}

fn failed(error: String, timed_out: bool) -> Answer {
    Answer {
        status: None,
        content_type: None,
        headers: None,
        content: None,
        timed_out,
        error: Some(error),
    }
}

async fn request(st: &AppState, r: &tokio_postgres::Row) -> Answer {
    let (method, url): (String, String) = (r.get("method"), r.get("url"));
    let params: Value = r.get("params");
    let headers: Value = r.get("headers");
    let body: Option<Vec<u8>> = r.get("body");
    let timeout =
        Duration::from_millis(r.get::<_, i32>("timeout_milliseconds").clamp(1, 600_000) as u64);
    let mut parsed = match url::Url::parse(&url) {
        Ok(u) => u,
        Err(e) => return failed(format!("invalid url: {e}"), false),
    };
    if let Value::Object(p) = &params {
        if !p.is_empty() {
            let mut q = parsed.query_pairs_mut();
            for (k, v) in p {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                q.append_pair(k, &v);
            }
        }
    }
    let host = parsed.host_str().unwrap_or_default();
    let default_port = if parsed.scheme() == "https" { 443 } else { 80 };
    if !crate::functions::manifest::host_allowed(
        &st.config.cron.http_allow,
        host,
        parsed.port(),
        default_port,
    ) {
        return failed(
            format!("host {host} is not in cron.http_allow (the server's configuration)"),
            false,
        );
    }
    let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return failed(format!("invalid method {method}"), false);
    };
    let mut req = st.cron.http.request(method, parsed).timeout(timeout);
    if let Value::Object(h) = &headers {
        for (k, v) in h {
            if let Some(v) = v.as_str() {
                req = req.header(k, v);
            }
        }
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16() as i32;
            let mut hs = Map::new();
            for (k, v) in resp.headers() {
                if let Ok(v) = v.to_str() {
                    hs.insert(k.as_str().to_owned(), Value::String(v.to_owned()));
                }
            }
            let content_type = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut resp = resp;
            let mut bytes = Vec::new();
            let mut error = None;
            loop {
                match resp.chunk().await {
                    Ok(Some(b)) if bytes.len() < MAX_BODY => bytes.extend_from_slice(&b),
                    Ok(Some(_)) | Ok(None) => break,
                    Err(e) => {
                        // Without the URL: its query may hold a key.
                        error = Some(super::exec::describe_reqwest(e.without_url()));
                        break;
                    }
                }
            }
            bytes.truncate(MAX_BODY);
            Answer {
                status: Some(status),
                content_type,
                headers: Some(Value::Object(hs)),
                // PostgreSQL text holds no NUL.
                content: Some(String::from_utf8_lossy(&bytes).replace('\0', "\u{fffd}")),
                timed_out: false,
                error,
            }
        }
        Err(e) => {
            let timed_out = e.is_timeout();
            // Without the URL: its query may hold a key.
            failed(super::exec::describe_reqwest(e.without_url()), timed_out)
        }
    }
}

async fn perform(st: &AppState, r: &tokio_postgres::Row) {
    let id: i64 = r.get("id");
    let run: Option<i64> = r.get("cron_run");
    let method: String = r.get("method");
    let a = request(st, r).await;
    let summary = match (&a.status, &a.error) {
        (Some(s), _) => format!("net.http_{} #{id}: {s}", method.to_ascii_lowercase()),
        (None, Some(e)) => format!("net.http_{} #{id} failed: {e}", method.to_ascii_lowercase()),
        (None, None) => format!("net.http_{} #{id}", method.to_ascii_lowercase()),
    };
    let written = async {
        let c = st.cron.records.get().await?;
        c.execute(
            "WITH done AS (DELETE FROM net.http_request_queue WHERE id = $1) \
             INSERT INTO net._http_response (id, status_code, content_type, headers, content, timed_out, error_msg) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            &[&id, &a.status, &a.content_type, &a.headers, &a.content, &a.timed_out, &a.error],
        )
        .await?;
        if let Some(run) = run {
            let max = st.config.cron.output_max_bytes as i32;
            c.execute(
                "WITH o AS (UPDATE wasmbase.cron_runs r SET output = left(concat_ws(E'\\n', output, $2::text), $3) WHERE r.id = $1 \
                   AND EXISTS (SELECT 1 FROM wasmbase.cron_jobs j WHERE j.id = r.job_id AND j.kind = 'sql')), \
                 l AS (INSERT INTO wasmbase.cron_run_logs (run, level, message) SELECT $1, $4, $2 WHERE EXISTS (SELECT 1 FROM wasmbase.cron_runs WHERE id = $1)) \
                 SELECT pg_notify($5, $1::text)",
                &[
                    &run,
                    &summary,
                    &max,
                    &if a.status.is_some_and(|s| (200..300).contains(&s)) { "info" } else { "warn" },
                    &super::logs::CHANNEL,
                ],
            )
            .await?;
        }
        anyhow::Ok(())
    };
    if let Err(e) = written.await {
        tracing::warn!(request = id, error = %format!("{e:#}"), "net: recording a response");
    }
}
