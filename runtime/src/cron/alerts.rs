//! Alerts on failing jobs: after `alert.after` consecutive failed ticks (a
//! tick's outcome is its last attempt's, after retries; skipped ticks do not
//! count), a notice goes to the job's webhook and/or e-mail address, and one
//! recovery notice when a tick succeeds again. Never a storm: each notice is
//! sent by the node whose `UPDATE … WHERE alert_state = …` changed the job's
//! state, so one per transition, whichever nodes ran the ticks.

use super::job::AlertSpec;
use crate::server::state::AppState;
use serde_json::{json, Value};

/// Checks job `job` after one of its attempts ended (or was reaped).
pub async fn check(st: &AppState, job: i64) {
    if let Err(e) = check_inner(st, job).await {
        tracing::warn!(job, error = %format!("{e:#}"), "cron: checking alerts");
    }
}

async fn check_inner(st: &AppState, job: i64) -> anyhow::Result<()> {
    let mut c = st.cron.records.get().await?;
    // The job row is locked first: two nodes checking at once take turns, and
    // the second reads the outcomes (a new snapshot) after the first's
    // change, so a stale read never flips the state back.
    let tx = c.transaction().await?;
    if tx
        .query_opt(
            "SELECT 1 FROM wasmbase.cron_jobs WHERE id = $1 FOR UPDATE",
            &[&job],
        )
        .await?
        .is_none()
    {
        return Ok(());
    }
    // Each recent tick's outcome, newest first (only ticks that have ended).
    let rows = tx
        .query(
            "SELECT status, error, id FROM ( \
               SELECT DISTINCT ON (run_id) run_id, scheduled_for, status, error, id \
                 FROM wasmbase.cron_runs WHERE job_id = $1 AND status <> 'skipped' \
                ORDER BY run_id, attempt DESC) last \
              WHERE status NOT IN ('pending', 'running') \
              ORDER BY scheduled_for DESC LIMIT 1001",
            &[&job],
        )
        .await?;
    let Some(latest) = rows.first() else {
        return Ok(());
    };
    let failed = rows
        .iter()
        .take_while(|r| r.get::<_, &str>(0) != "succeeded")
        .count() as i32;
    let (kind, run, error): (&str, i64, Option<String>) = if failed == 0 {
        ("cron.recovered", latest.get(2), None)
    } else {
        ("cron.failing", latest.get(2), latest.get(1))
    };
    let changed = if failed == 0 {
        tx.query_opt(
            "UPDATE wasmbase.cron_jobs SET alert_state = 'ok' WHERE id = $1 AND alert_state = 'failing' RETURNING name, alert",
            &[&job],
        )
        .await?
    } else {
        tx.query_opt(
            "UPDATE wasmbase.cron_jobs SET alert_state = 'failing' \
             WHERE id = $1 AND alert_state = 'ok' AND alert IS NOT NULL AND $2 >= coalesce((alert->>'after')::int, 1) \
             RETURNING name, alert",
            &[&job, &failed],
        )
        .await?
    };
    tx.commit().await?;
    drop(c);
    let Some(row) = changed else {
        return Ok(());
    };
    let name: String = row.get(0);
    let Some(spec) = row
        .get::<_, Option<Value>>(1)
        .and_then(|v| serde_json::from_value::<AlertSpec>(v).ok())
    else {
        return Ok(());
    };
    let base = st
        .config
        .auth
        .external_url
        .clone()
        .unwrap_or_else(|| "http://localhost:54321".into());
    let link = format!("{}/admin/v1/cron/runs/{run}", base.trim_end_matches('/'));
    let notice = json!({
        "type": kind,
        "job": name,
        "run": run,
        "consecutive_failures": failed,
        "error": error,
        "link": link,
    });
    tracing::warn!(job = %name, run, kind, failures = failed, "cron: alert");
    if let Some(url) = &spec.webhook {
        let sent = st
            .cron
            .http
            .post(url)
            .json(&notice)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::warn!(job = %name, status = r.status().as_u16(), "cron: alert webhook refused the notice")
            }
            // Without the URL: a webhook URL is often a secret.
            Err(e) => {
                tracing::warn!(job = %name, error = %super::exec::describe_reqwest(e.without_url()), "cron: alert webhook unreachable")
            }
        }
    }
    if let Some(to) = &spec.email {
        let (subject, text) = if failed == 0 {
            (
                format!("[wasmbase] cron job {name} recovered"),
                format!("Cron job {name} succeeded again (run {run}).\n\n{link}\n"),
            )
        } else {
            (
                format!("[wasmbase] cron job {name} is failing"),
                format!(
                    "Cron job {name} failed {failed} time(s) in a row.\n\nLast error: {}\n\n{link}\n",
                    error.as_deref().unwrap_or("-")
                ),
            )
        };
        let html = format!("<pre>{}</pre>", html_escape(&text));
        let mail = crate::api::auth::mail::Mail {
            to: to.clone(),
            subject,
            text,
            html,
        };
        if let Err(e) = st.auth.mailer.send(st, mail).await {
            tracing::warn!(job = %name, code = e.code, "cron: alert e-mail not sent");
        }
    }
    Ok(())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
