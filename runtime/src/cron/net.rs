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

/// Requests one node takes at once.
const TAKE: i64 = 50;

/// Bytes of a response body kept.
const MAX_BODY: usize = 1 << 20;

const TAKE_SQL: &str = "\
UPDATE net.http_request_queue q SET taken_at = now()
 WHERE q.id IN (SELECT id FROM net.http_request_queue
                 WHERE taken_at IS NULL OR taken_at < now() - interval '5 minutes'
                 ORDER BY id FOR UPDATE SKIP LOCKED LIMIT $1)
RETURNING q.id, q.method, q.url, q.headers, q.body, q.timeout_milliseconds, q.cron_run";

/// Takes and performs queued requests until `cancel`.
pub async fn worker(st: AppState, cancel: CancellationToken) {
    loop {
        let taken = async {
            let c = st.cron.records.get().await?;
            anyhow::Ok(c.query(TAKE_SQL, &[&TAKE]).await?)
        }
        .await;
        let rows = match taken {
            Ok(rows) => rows,
            Err(e) => {
                let missing = e
                    .downcast_ref::<tokio_postgres::Error>()
                    .and_then(|e| e.code())
                    == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE);
                if missing {
                    // pg_net itself is installed: its worker does this.
                    tracing::info!("net.http_* are pg_net's here; Wasmbase's worker stays off");
                    return;
                }
                tracing::warn!(error = %format!("{e:#}"), "net: taking queued requests");
                Vec::new()
            }
        };
        let n = rows.len();
        futures::future::join_all(rows.iter().map(|r| perform(&st, r))).await;
        if n as i64 == TAKE {
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
    let headers: Value = r.get("headers");
    let body: Option<Vec<u8>> = r.get("body");
    let timeout =
        Duration::from_millis(r.get::<_, i32>("timeout_milliseconds").clamp(1, 600_000) as u64);
    let parsed = match url::Url::parse(&url) {
        Ok(u) => u,
        Err(e) => return failed(format!("invalid url: {e}"), false),
    };
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
                        error = Some(format!("{:#}", anyhow::Error::from(e)));
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
            failed(format!("{:#}", anyhow::Error::from(e)), timed_out)
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
                "WITH o AS (UPDATE wasmbase.cron_runs SET output = left(concat_ws(E'\\n', output, $2::text), $3) WHERE id = $1), \
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
