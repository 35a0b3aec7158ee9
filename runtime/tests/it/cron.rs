//! Cron: ticks claimed once across nodes, each job kind end to end, retries,
//! leases, overlap and missed-tick policies, the admin API. Every wait is on
//! run rows (polled), never a sleep.

use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;
use wasmbase_host_api::keys::KeyKind;

/// The admin API with a secret key.
struct Admin<'a> {
    s: &'a TestServer,
    key: String,
}

impl Admin<'_> {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .s
            .http
            .request(method, format!("{}/admin/v1/cron{path}", self.s.url))
            .header("apikey", &self.key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let st = resp.status().as_u16();
        (st, resp.json().await.unwrap_or(Value::Null))
    }
    async fn create(&self, job: Value) -> Value {
        let (st, body) = self.call(reqwest::Method::POST, "/jobs", Some(job)).await;
        assert_eq!(st, 201, "{body}");
        body
    }
    async fn run(&self, name: &str) -> i64 {
        let (st, body) = self
            .call(reqwest::Method::POST, &format!("/jobs/{name}/run"), None)
            .await;
        assert_eq!(st, 202, "{body}");
        body["run"].as_i64().unwrap()
    }
}

/// A fresh database, one server with the default settings, an owner
/// connection and a secret key.
async fn one_node() -> (TestDb, TestServer, tokio_postgres::Client, String) {
    let db = TestDb::new().await;
    let (_, key) = db.key(KeyKind::Secret).await;
    let s = db.server().await;
    let owner = db.owner().await;
    (db, s, owner, key)
}

/// The first column of `sql`'s rows, as text.
async fn texts(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// (attempt, status, trigger, error, output, node) of every attempt of `job`, oldest first.
async fn attempts(
    c: &tokio_postgres::Client,
    job: &str,
) -> Vec<(i32, String, String, Option<String>, Option<String>)> {
    c.query(
        "SELECT attempt, status, trigger, error, output FROM wasmbase.cron_runs WHERE job_name = $1 ORDER BY scheduled_for, attempt",
        &[&job],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

async fn finished(c: &tokio_postgres::Client, job: &str, n: usize) {
    let sql = format!(
        "SELECT 1 FROM wasmbase.cron_runs WHERE job_name = '{job}' AND status NOT IN ('pending', 'running')"
    );
    until_rows(c, &format!("{job}: {n} finished attempts"), 30, &sql, |r| {
        r.len() >= n
    })
    .await;
}

#[tokio::test]
async fn three_nodes_run_every_tick_exactly_once() {
    let db = TestDb::new().await;
    let (_, key) = db.key(KeyKind::Secret).await;
    let small = |c: &mut wasmbase::config::Config| c.database.pool_size = 2;
    let nodes = [
        db.server_with(small).await,
        db.server_with(small).await,
        db.server_with(small).await,
    ];
    let owner = db.owner().await;
    owner
        .batch_execute("CREATE TABLE public.ticks (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
        .await
        .unwrap();
    let admin = Admin { s: &nodes[0], key };
    let job = admin
        .create(json!({
            "name": "every-second",
            "schedule": "1 second",
            // A slow tick on a busy machine must not make the next one skip.
            "overlap": "allow",
            "sql": "INSERT INTO public.ticks DEFAULT VALUES",
        }))
        .await;
    assert_eq!(job["next_runs"].as_array().unwrap().len(), 5, "{job}");
    // Eight consecutive ticks recorded as succeeded.
    until_rows(
        &owner,
        "eight succeeded ticks",
        30,
        "SELECT 1 FROM wasmbase.cron_runs WHERE job_name = 'every-second' AND status = 'succeeded'",
        |r| r.len() >= 8,
    )
    .await;
    let (st, _) = admin
        .call(reqwest::Method::POST, "/jobs/every-second/pause", None)
        .await;
    assert_eq!(st, 200);
    // Paused: wait until nothing runs, then the evidence is stable.
    until_rows(
        &owner,
        "runs settle after pause",
        30,
        "SELECT 1 FROM wasmbase.cron_runs WHERE status IN ('pending', 'running')",
        |r| r.is_empty(),
    )
    .await;
    let per_tick = owner
        .query(
            "SELECT scheduled_for, count(*), array_agg(status) FROM wasmbase.cron_runs WHERE job_name = 'every-second' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    assert!(per_tick.len() >= 8);
    for r in &per_tick {
        assert_eq!(r.get::<_, i64>(1), 1, "one attempt per tick");
        assert_eq!(r.get::<_, Vec<String>>(2), ["succeeded"]);
    }
    // Consecutive seconds: no tick lost between the first and the last.
    let span: f64 = owner
        .query_one(
            "SELECT extract(epoch FROM max(scheduled_for) - min(scheduled_for))::float8 FROM wasmbase.cron_runs WHERE job_name = 'every-second'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(span as usize + 1, per_tick.len(), "a tick is missing");
    // Every tick ran its SQL once.
    let hits: i64 = owner
        .query_one("SELECT count(*) FROM public.ticks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(hits as usize, per_tick.len());
    // Every node took part: the job's home node at once, the others as its
    // stand-ins a moment later.
    for n in &nodes {
        assert!(
            n.srv
                .state
                .cron
                .claim_tries
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
    }
}

#[tokio::test]
async fn sql_jobs_run_as_service_role_with_a_timeout() {
    let (_db, s, owner, key) = one_node().await;
    let admin = Admin { s: &s, key };
    admin
        .create(json!({"name": "who", "schedule": "@yearly", "sql": "SELECT current_user AS r, session_user AS s"}))
        .await;
    admin
        .create(json!({"name": "bad", "schedule": "@yearly", "sql": "SELECT 1/0"}))
        .await;
    admin
        .create(json!({"name": "slow", "schedule": "@yearly", "sql": "SELECT pg_sleep(30)", "timeout_ms": 300}))
        .await;
    admin
        .create(json!({"name": "owner-only", "schedule": "@yearly", "sql": "SELECT * FROM wasmbase.cron_jobs"}))
        .await;
    // A second statement could COMMIT its way out of the timeout: refused.
    admin
        .create(json!({"name": "two", "schedule": "@yearly", "sql": "SELECT 1; COMMIT; SELECT pg_sleep(30)"}))
        .await;
    let all = ["who", "bad", "slow", "owner-only", "two"];
    for j in all {
        admin.run(j).await;
    }
    for j in all {
        finished(&owner, j, 1).await;
    }
    // A job deleted while it runs: the run ends and is recorded under its name.
    admin
        .create(json!({"name": "doomed", "schedule": "@yearly", "sql": "SELECT pg_sleep(0.5)"}))
        .await;
    admin.run("doomed").await;
    until_rows(
        &owner,
        "doomed running",
        30,
        "SELECT 1 FROM wasmbase.cron_runs WHERE job_name = 'doomed' AND status = 'running'",
        |r| r.len() == 1,
    )
    .await;
    let (st, _) = admin
        .call(reqwest::Method::DELETE, "/jobs/doomed", None)
        .await;
    assert_eq!(st, 200);
    finished(&owner, "doomed", 1).await;
    assert_eq!(attempts(&owner, "doomed").await[0].1, "succeeded");
    let two = attempts(&owner, "two").await;
    assert_eq!(two[0].1, "failed");
    assert!(two[0].3.as_deref().unwrap().contains("42601"), "{two:?}");
    let who = attempts(&owner, "who").await;
    assert_eq!(
        (who[0].1.as_str(), who[0].2.as_str()),
        ("succeeded", "manual")
    );
    let out: Value = serde_json::from_str(who[0].4.as_deref().unwrap()).unwrap();
    assert_eq!(
        out["first_row"],
        json!({"r": "service_role", "s": "wasmbase_functions"})
    );
    let bad = attempts(&owner, "bad").await;
    assert_eq!(bad[0].1, "failed");
    assert!(bad[0].3.as_deref().unwrap().contains("22012"), "{bad:?}");
    let slow = attempts(&owner, "slow").await;
    assert_eq!(slow[0].1, "timed_out", "{slow:?}");
    let denied = attempts(&owner, "owner-only").await;
    assert_eq!(denied[0].1, "failed");
    assert!(
        denied[0].3.as_deref().unwrap().contains("42501"),
        "{denied:?}"
    );
}

/// A local HTTP target: `/ok` 200, `/bad` 500, `/hang` never answers,
/// `/echo` answers the Authorization header it got.
async fn target() -> String {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/ok",
            get(|| async { "all good" }).post(|| async { "posted" }),
        )
        .route(
            "/bad",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route("/hang", get(std::future::pending::<&'static str>))
        .route(
            "/echo",
            get(|h: http::HeaderMap| async move {
                h.get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn http_jobs_succeed_only_on_the_configured_status_and_retry_with_backoff() {
    let (_db, s, owner, key) = one_node().await;
    let admin = Admin { s: &s, key };
    let t = target().await;
    admin
        .create(json!({"name": "ok", "schedule": "@yearly", "http": {"url": format!("{t}/ok")}}))
        .await;
    admin
        .create(json!({"name": "bad", "schedule": "@yearly", "http": {"url": format!("{t}/bad")}, "max_attempts": 3, "backoff_ms": 50}))
        .await;
    admin
        .create(json!({"name": "hang", "schedule": "@yearly", "http": {"url": format!("{t}/hang")}, "timeout_ms": 300}))
        .await;
    admin
        .create(json!({"name": "refused", "schedule": "@yearly", "http": {"url": "http://127.0.0.1:9/"}}))
        .await;
    admin
        .create(json!({"name": "no-secret", "schedule": "@yearly", "http": {"url": format!("{t}/echo"), "headers": {"authorization": "Bearer ${NOT_SET}"}}}))
        .await;
    admin
        .create(json!({"name": "accept-500", "schedule": "@yearly", "http": {"url": format!("{t}/bad"), "success": "500"}}))
        .await;
    for j in ["ok", "bad", "hang", "refused", "no-secret", "accept-500"] {
        admin.run(j).await;
    }
    for (j, n) in [
        ("ok", 1),
        ("bad", 3),
        ("hang", 1),
        ("refused", 1),
        ("no-secret", 1),
        ("accept-500", 1),
    ] {
        finished(&owner, j, n).await;
    }
    let ok = attempts(&owner, "ok").await;
    assert_eq!(
        (ok[0].1.as_str(), ok[0].4.as_deref()),
        ("succeeded", Some("200 all good"))
    );
    let bad = attempts(&owner, "bad").await;
    let seen: Vec<(i32, &str, &str)> = bad
        .iter()
        .map(|a| (a.0, a.1.as_str(), a.2.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (1, "failed", "manual"),
            (2, "failed", "retry"),
            (3, "failed", "retry")
        ]
    );
    assert_eq!(bad[0].4.as_deref(), Some("500 boom"));
    assert!(bad[0]
        .3
        .as_deref()
        .unwrap()
        .contains("500 is outside 200-299"));
    // One run id for the three attempts; retries waited (backoff with jitter:
    // at least half of 50 ms, then of 100 ms).
    let r = owner
        .query_one(
            "SELECT (SELECT count(DISTINCT run_id) FROM wasmbase.cron_runs WHERE job_name = 'bad'), \
             bool_and(a2.due_at >= a1.finished_at + interval '25 ms' AND a2.started_at >= a2.due_at) \
             FROM wasmbase.cron_runs a1 JOIN wasmbase.cron_runs a2 USING (job_id, scheduled_for) \
             WHERE a1.job_name = 'bad' AND a2.attempt = a1.attempt + 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 1);
    assert!(r.get::<_, bool>(1), "a retry came before its backoff");
    let hang = attempts(&owner, "hang").await;
    assert_eq!(hang[0].1, "timed_out");
    let refused = attempts(&owner, "refused").await;
    assert_eq!(refused[0].1, "failed");
    assert!(
        refused[0].3.as_deref().unwrap().contains("request failed"),
        "{refused:?}"
    );
    let no_secret = attempts(&owner, "no-secret").await;
    assert!(no_secret[0]
        .3
        .as_deref()
        .unwrap()
        .contains("secret 'NOT_SET' is not set"));
    assert_eq!(attempts(&owner, "accept-500").await[0].1, "succeeded");
}

#[tokio::test]
async fn a_lost_attempt_is_retried_on_another_node() {
    let db = TestDb::new().await;
    let (_, key) = db.key(KeyKind::Secret).await;
    let owner = db.owner().await;
    owner
        .batch_execute("CREATE SEQUENCE public.tries")
        .await
        .unwrap();
    // A short lease so the test does not wait 30 s for the default one.
    let lease = |c: &mut wasmbase::config::Config| c.cron.lease_secs = 1;
    let a = db.server_with(lease).await;
    let admin = Admin { s: &a, key };
    // The first attempt hangs (its node dies under it); the retry returns (a
    // sequence, because the first attempt's transaction never commits).
    admin
        .create(json!({
            "name": "long", "schedule": "@yearly", "max_attempts": 2, "backoff_ms": 0, "timeout_ms": 60000,
            "sql": "SELECT pg_sleep(60) WHERE nextval('public.tries') = 1",
        }))
        .await;
    admin.run("long").await;
    until_rows(
        &owner,
        "attempt 1 running",
        30,
        "SELECT 1 FROM wasmbase.cron_runs WHERE status = 'running'",
        |r| r.len() == 1,
    )
    .await;
    let node_a = a.srv.state.cron.node;
    a.srv.shutdown().await;
    let b = db.server_with(lease).await;
    finished(&owner, "long", 2).await;
    let rows = owner
        .query(
            "SELECT attempt, status, node, trigger, error, run_id FROM wasmbase.cron_runs WHERE job_name = 'long' ORDER BY attempt",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, String>(1), "lost");
    assert_eq!(rows[0].get::<_, uuid::Uuid>(2), node_a);
    assert!(rows[0]
        .get::<_, String>(4)
        .contains("stopped renewing its lease"));
    assert_eq!(rows[1].get::<_, String>(1), "succeeded");
    assert_eq!(rows[1].get::<_, uuid::Uuid>(2), b.srv.state.cron.node);
    assert_eq!(rows[1].get::<_, String>(3), "retry");
    assert_eq!(
        rows[0].get::<_, uuid::Uuid>(5),
        rows[1].get::<_, uuid::Uuid>(5)
    );
}

#[tokio::test]
async fn overlap_forbid_skips_ticks_while_the_previous_run_runs() {
    let (_db, s, owner, key) = one_node().await;
    let admin = Admin { s: &s, key };
    admin
        .create(json!({"name": "slow", "schedule": "1 second", "sql": "SELECT pg_sleep(1.6)"}))
        .await;
    let rows = until_rows(
        &owner,
        "a skipped tick after a succeeded run",
        30,
        "SELECT status, error FROM wasmbase.cron_runs WHERE job_name = 'slow' AND status IN ('skipped', 'succeeded') ORDER BY scheduled_for",
        |r| r.iter().any(|r| r.get::<_, String>(0) == "skipped") && r.iter().any(|r| r.get::<_, String>(0) == "succeeded"),
    )
    .await;
    let skipped = rows
        .iter()
        .find(|r| r.get::<_, String>(0) == "skipped")
        .unwrap();
    assert!(skipped.get::<_, String>(1).contains("overlap = forbid"));
    // Never two at once.
    let max_running: i64 = owner
        .query_one(
            "SELECT count(*) FROM wasmbase.cron_runs a JOIN wasmbase.cron_runs b ON a.job_id = b.job_id AND a.id < b.id \
             AND a.status = 'succeeded' AND b.status = 'succeeded' \
             AND tstzrange(a.started_at, a.finished_at) && tstzrange(b.started_at, b.finished_at)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(max_running, 0);
    admin
        .call(reqwest::Method::DELETE, "/jobs/slow", None)
        .await;
}

#[tokio::test]
async fn missed_ticks_follow_each_jobs_policy() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    // Jobs made while no node runs, active for the last hour.
    for (name, missed, max) in [
        ("skip", "skip", 0),
        ("once", "run_once", 0),
        ("three", "catch_up", 3),
    ] {
        let def: wasmbase::cron::job::JobDef = serde_json::from_value(json!({
            "name": name, "schedule": "* * * * *", "sql": "SELECT 1", "missed": missed, "catch_up_max": max,
        }))
        .unwrap();
        wasmbase::cron::job::create(&owner, &def, "api", None, "test".into())
            .await
            .unwrap();
    }
    owner
        .batch_execute("UPDATE wasmbase.cron_jobs SET active_since = now() - interval '1 hour'")
        .await
        .unwrap();
    let _s = db.server().await;
    finished(&owner, "once", 1).await;
    finished(&owner, "three", 3).await;
    let once = attempts(&owner, "once").await;
    let missed: Vec<_> = once.iter().filter(|a| a.2 == "missed").collect();
    assert_eq!(missed.len(), 1, "{once:?}");
    let three = attempts(&owner, "three").await;
    assert_eq!(
        three.iter().filter(|a| a.2 == "missed").count(),
        3,
        "{three:?}"
    );
    // The latest missed ticks, one minute apart, the newest from just before the node started.
    let r = owner
        .query_one(
            "SELECT extract(epoch FROM max(scheduled_for) - min(scheduled_for))::float8, now() - max(scheduled_for) <= interval '125 s' \
             FROM wasmbase.cron_runs WHERE job_name = 'three' AND trigger = 'missed'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, f64>(0), 120.0);
    assert!(r.get::<_, bool>(1));
    assert!(attempts(&owner, "skip")
        .await
        .iter()
        .all(|a| a.2 != "missed"));
}

#[tokio::test]
async fn admin_api_validates_audits_and_is_service_only() {
    let db = TestDb::new().await;
    let (_, key) = db.key(KeyKind::Secret).await;
    let (_, pk) = db.key(KeyKind::Publishable).await;
    let s = db.server().await;
    let owner = db.owner().await;
    let admin = Admin { s: &s, key };
    let anon = Admin { s: &s, key: pk };
    let (st, body) = anon.call(reqwest::Method::GET, "/jobs", None).await;
    assert_eq!((st, body["code"].as_str()), (403, Some("forbidden")));
    // Bad input: a clear code, and the position of a bad field.
    let cases = [
        (
            json!({"name": "x", "schedule": "0 25 * * *", "sql": "SELECT 1"}),
            "invalid_schedule",
            Some(3),
        ),
        (
            json!({"name": "x", "schedule": "* * *", "sql": "SELECT 1"}),
            "invalid_schedule",
            None,
        ),
        (
            json!({"name": "x", "schedule": "@daily", "timezone": "Moon/Base", "sql": "SELECT 1"}),
            "invalid_timezone",
            None,
        ),
        (
            json!({"name": "x", "schedule": "@daily"}),
            "invalid_job",
            None,
        ),
        (
            json!({"name": "x", "schedule": "@daily", "http": {"url": "file:///etc/passwd"}}),
            "invalid_job",
            None,
        ),
        (
            json!({"name": "x", "schedule": "@daily", "sql": "SELECT 1", "max_attempts": 0}),
            "invalid_job",
            None,
        ),
        (
            json!({"name": "x", "schedule": "@daily", "sql": "SELECT 1", "bogus": 1}),
            "invalid_body",
            None,
        ),
        (
            json!({"name": "x", "schedule": "@daily", "sql": "SELECT '\u{0}'"}),
            "invalid_job",
            None,
        ),
    ];
    for (job, code, pos) in cases {
        let (st, body) = admin
            .call(reqwest::Method::POST, "/jobs", Some(job.clone()))
            .await;
        assert_eq!(
            (st, body["code"].as_str()),
            (400, Some(code)),
            "{job} → {body}"
        );
        assert_eq!(body["position"].as_u64(), pos.map(|p| p as u64), "{body}");
    }
    let job = admin
        .create(json!({"name": "nightly", "schedule": "30 2 * * *", "timezone": "Europe/Berlin", "sql": "SELECT 1"}))
        .await;
    let next: Vec<&str> = job["next_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(next.len(), 5);
    let (st, body) = admin
        .call(
            reqwest::Method::POST,
            "/jobs",
            Some(json!({"name": "nightly", "schedule": "@daily", "sql": "SELECT 1"})),
        )
        .await;
    assert_eq!((st, body["code"].as_str()), (409, Some("job_exists")));
    let (st, body) = admin
        .call(
            reqwest::Method::PATCH,
            "/jobs/nightly",
            Some(json!({"schedule": "0 3 * * *", "max_attempts": 3})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        (body["schedule"].as_str(), body["max_attempts"].as_i64()),
        (Some("0 3 * * *"), Some(3))
    );
    let (_, body) = admin
        .call(reqwest::Method::POST, "/jobs/nightly/pause", None)
        .await;
    assert_eq!(
        (
            body["paused"].as_bool(),
            body["next_runs"].as_array().map(Vec::len)
        ),
        (Some(true), Some(0))
    );
    let (_, body) = admin
        .call(reqwest::Method::POST, "/jobs/nightly/resume", None)
        .await;
    assert_eq!(body["paused"].as_bool(), Some(false));
    let run = admin.run("nightly").await;
    finished(&owner, "nightly", 1).await;
    let (st, body) = admin
        .call(reqwest::Method::GET, &format!("/runs/{run}"), None)
        .await;
    assert_eq!(
        (st, body["status"].as_str(), body["trigger"].as_str()),
        (200, Some("succeeded"), Some("manual"))
    );
    let (_, list) = admin
        .call(
            reqwest::Method::GET,
            "/runs?job=nightly&status=succeeded",
            None,
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (st, body) = admin
        .call(reqwest::Method::GET, "/runs?since=yesterday", None)
        .await;
    assert_eq!((st, body["code"].as_str()), (400, Some("invalid_query")));
    let (st, _) = admin
        .call(reqwest::Method::DELETE, "/jobs/nightly", None)
        .await;
    assert_eq!(st, 200);
    let (st, body) = admin
        .call(reqwest::Method::GET, "/jobs/nightly", None)
        .await;
    assert_eq!((st, body["code"].as_str()), (404, Some("job_not_found")));
    // History outlives the job; every change is in the audit log.
    assert_eq!(attempts(&owner, "nightly").await.len(), 1);
    let actions = texts(
        &owner,
        "SELECT action FROM wasmbase.audit_log WHERE target = 'nightly' ORDER BY id",
    )
    .await;
    assert_eq!(
        actions,
        [
            "cron.job.create",
            "cron.job.update",
            "cron.job.update",
            "cron.job.update",
            "cron.job.run",
            "cron.job.delete"
        ]
    );
}

#[tokio::test]
async fn call_jobs_invoke_a_deployed_function_with_their_body() {
    let db = TestDb::new().await;
    let (_, key) = db.key(KeyKind::Secret).await;
    let s = db.functions_server(|_| {}).await;
    s.wait_function("hello").await;
    let owner = db.owner().await;
    let admin = Admin { s: &s, key };
    admin
        .create(json!({"name": "greet", "schedule": "@yearly", "call": {"function": "hello", "body": {"n": 1}}}))
        .await;
    admin
        .create(json!({"name": "nobody", "schedule": "@yearly", "call": {"function": "no-such-function"}}))
        .await;
    admin.run("greet").await;
    admin.run("nobody").await;
    finished(&owner, "greet", 1).await;
    finished(&owner, "nobody", 1).await;
    let greet = attempts(&owner, "greet").await;
    assert_eq!(greet[0].1, "succeeded", "{greet:?}");
    let out = greet[0].4.as_deref().unwrap();
    let (status, body) = out.split_once(' ').unwrap();
    assert_eq!(status, "200");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["received"], json!({"n": 1}));
    let nobody = attempts(&owner, "nobody").await;
    assert_eq!(nobody[0].1, "failed");
    assert!(
        nobody[0]
            .3
            .as_deref()
            .unwrap()
            .contains("function_not_found"),
        "{nobody:?}"
    );
}

/// A functions directory holding the example `functions/ticker` (its crate,
/// built by the harness) with `manifest` as its function.toml; returns the
/// directory (removed on drop) and the function's folder.
fn ticker_project(manifest: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let fdir = dir.path().join("ticker");
    std::fs::create_dir(&fdir).unwrap();
    std::fs::copy(
        repo_root().join("functions/ticker/Cargo.toml"),
        fdir.join("Cargo.toml"),
    )
    .unwrap();
    std::fs::write(fdir.join("function.toml"), manifest).unwrap();
    (dir, fdir)
}

const TICKER_TOML: &str = r#"
name = "ticker"
db = "service"

[[cron]]
name = "every"
schedule = "1 second"
payload = { k = "v" }

[[cron]]
name = "retry"
schedule = "@yearly"
max_attempts = 3
backoff_ms = 10
payload = { fail_before_attempt = 3 }

[[cron]]
name = "boom"
schedule = "@yearly"
payload = { panic = true }

[[cron]]
name = "slow"
schedule = "@yearly"
timeout_ms = 300
payload = { lines = 50, pause_ms = 100 }
"#;

#[tokio::test]
async fn function_cron_handlers_run_from_the_manifest_with_retries() {
    let db = TestDb::new().await;
    let (_, key) = db.key(KeyKind::Secret).await;
    let owner = db.owner().await;
    owner
        .batch_execute("CREATE TABLE public.ticker_runs (id bigserial PRIMARY KEY, run_id uuid, attempt int, name text, payload jsonb)")
        .await
        .unwrap();
    // The example function from functions/, with test schedules.
    let (dir, fdir) = ticker_project(TICKER_TOML);
    let functions = dir.path().to_path_buf();
    let s = db.functions_server(|c| c.functions.dir = functions).await;
    s.wait_function("ticker").await;
    let jobs = "SELECT name FROM wasmbase.cron_jobs WHERE source = 'manifest' AND function_name = 'ticker' ORDER BY name";
    until_rows(&owner, "the [[cron]] entries registered", 30, jobs, |r| {
        r.len() == 4
    })
    .await;
    let admin = Admin { s: &s, key };
    admin.run("ticker.retry").await;
    admin.run("ticker.boom").await;
    admin.run("ticker.slow").await;
    finished(&owner, "ticker.retry", 3).await;
    finished(&owner, "ticker.boom", 1).await;
    until_rows(
        &owner,
        "two scheduled ticks handled",
        30,
        "SELECT 1 FROM wasmbase.cron_runs WHERE job_name = 'ticker.every' AND status = 'succeeded'",
        |r| r.len() >= 2,
    )
    .await;
    // Retries: attempts 1 and 2 fail, 3 succeeds, all with one run id that
    // the handler saw too.
    let retry = attempts(&owner, "ticker.retry").await;
    let seen: Vec<(i32, &str)> = retry.iter().map(|a| (a.0, a.1.as_str())).collect();
    assert_eq!(seen, [(1, "failed"), (2, "failed"), (3, "succeeded")]);
    assert!(
        retry[0]
            .3
            .as_deref()
            .unwrap()
            .contains("failing attempt 1 on purpose"),
        "{retry:?}"
    );
    let handled = owner
        .query(
            "SELECT t.attempt FROM public.ticker_runs t JOIN wasmbase.cron_runs r ON r.run_id = t.run_id AND r.attempt = t.attempt \
             WHERE t.name = 'retry' AND r.job_name = 'ticker.retry' ORDER BY t.attempt",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        handled
            .iter()
            .map(|r| r.get::<_, i32>(0))
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let payload: Value = owner
        .query_one(
            "SELECT payload FROM public.ticker_runs WHERE name = 'every' LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(payload, json!({"k": "v"}));
    // A handler past its timeout is stopped and recorded as timed out.
    finished(&owner, "ticker.slow", 1).await;
    let slow = attempts(&owner, "ticker.slow").await;
    assert_eq!(slow[0].1, "timed_out", "{slow:?}");
    // A trap is a failed run naming the function, not a crashed server.
    let boom = attempts(&owner, "ticker.boom").await;
    assert_eq!(boom[0].1, "failed");
    assert!(
        boom[0].3.as_deref().unwrap().contains("function ticker"),
        "{boom:?}"
    );
    // The handler's log lines are kept with its run.
    let logs = texts(&owner, "SELECT l.message FROM wasmbase.cron_run_logs l JOIN wasmbase.cron_runs r ON r.id = l.run WHERE r.job_name = 'ticker.retry' AND r.attempt = 1").await;
    assert!(
        logs.iter()
            .any(|l| l.starts_with("tick retry at ") && l.ends_with("(attempt 1)")),
        "{logs:?}"
    );
    // Manifest jobs are changed in function.toml; the API may only pause them.
    let (st, body) = admin
        .call(
            reqwest::Method::PATCH,
            "/jobs/ticker.every",
            Some(json!({"schedule": "@daily"})),
        )
        .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (400, Some("invalid_job")),
        "{body}"
    );
    // An entry removed from function.toml is unscheduled when the function reloads.
    std::fs::write(
        fdir.join("function.toml"),
        "name = \"ticker\"\ndb = \"service\"\n[[cron]]\nname = \"every\"\nschedule = \"1 second\"\n",
    )
    .unwrap();
    wasmbase::functions::load_dir(&s.srv.state, &fdir).await;
    until_rows(&owner, "removed entries unscheduled", 30, jobs, |r| {
        r.len() == 1
    })
    .await;
    admin
        .call(reqwest::Method::POST, "/jobs/ticker.every/pause", None)
        .await;
}

#[tokio::test]
async fn live_logs_follow_a_run_from_another_node() {
    let db = TestDb::new().await;
    let (_, key) = db.key(KeyKind::Secret).await;
    let (dir, _) = ticker_project("name = \"ticker\"\ndb = \"service\"\n[[cron]]\nname = \"chatty\"\nschedule = \"@yearly\"\npayload = { lines = 3, pause_ms = 200 }\n");
    let functions = dir.path().to_path_buf();
    // The run happens on `runner`; the log is followed through `viewer`,
    // which runs no jobs.
    let runner = db
        .functions_server(|c| c.functions.dir = functions.clone())
        .await;
    let viewer = db
        .functions_server(|c| {
            c.functions.dir = functions.clone();
            c.cron.enabled = false;
        })
        .await;
    runner.wait_function("ticker").await;
    let owner = db.owner().await;
    until_rows(
        &owner,
        "entry registered",
        30,
        "SELECT 1 FROM wasmbase.cron_jobs WHERE name = 'ticker.chatty'",
        |r| r.len() == 1,
    )
    .await;
    let admin = Admin {
        s: &viewer,
        key: key.clone(),
    };
    let run = admin.run("ticker.chatty").await;
    let resp = viewer
        .http
        .get(format!(
            "{}/admin/v1/cron/runs/{run}/logs?follow=1",
            viewer.url
        ))
        .header("apikey", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // The stream ends by itself once the attempt has ended.
    let body = tokio::time::timeout(Duration::from_secs(60), resp.text())
        .await
        .expect("the stream ends")
        .unwrap();
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    // The tick line, three lines, and the example's note that it had no table.
    assert_eq!(events, ["log", "log", "log", "log", "log", "end"], "{body}");
    let data: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(data[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("tick chatty"));
    for (i, d) in data.iter().enumerate().skip(1).take(3) {
        assert_eq!(d["message"], format!("line {i}"));
    }
    assert_eq!(data[5], json!({"run": run, "status": "succeeded"}));
    // Without follow: the same lines as JSON, and the run has ended.
    let (st, body) = admin
        .call(reqwest::Method::GET, &format!("/runs/{run}/logs"), None)
        .await;
    assert_eq!((st, body["ended"].as_bool()), (200, Some(true)));
    assert_eq!(body["lines"].as_array().unwrap().len(), 5);
    assert_eq!(
        runner
            .srv
            .state
            .cron
            .started
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn alerts_fire_once_after_consecutive_failures_and_once_on_recovery() {
    use std::sync::{Arc, Mutex};
    let (_db, s, owner, key) = one_node().await;
    owner
        .batch_execute("CREATE SEQUENCE public.flaky")
        .await
        .unwrap();
    // A webhook receiver keeping every notice.
    let seen: Arc<Mutex<Vec<Value>>> = Default::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let seen = seen.clone();
            move |axum::Json(v): axum::Json<Value>| async move {
                seen.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let admin = Admin { s: &s, key };
    // Fails three times, then succeeds.
    admin
        .create(json!({
            "name": "flaky", "schedule": "@yearly",
            "sql": "SELECT 1 / (CASE WHEN nextval('public.flaky') <= 3 THEN 0 ELSE 1 END)",
            "alert": {"after": 2, "webhook": hook, "email": "ops@example.com"},
        }))
        .await;
    let notices = || seen.lock().unwrap().clone();
    for n in 1..=3 {
        admin.run("flaky").await;
        finished(&owner, "flaky", n).await;
    }
    wait_until("the failing notice", 30, || !notices().is_empty()).await;
    admin.run("flaky").await;
    finished(&owner, "flaky", 4).await;
    wait_until("the recovery notice", 30, || notices().len() >= 2).await;
    let got = notices();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["type"], "cron.failing");
    assert_eq!(got[0]["job"], "flaky");
    // Two or three: the check after the second failure may read the third.
    assert!(
        got[0]["consecutive_failures"].as_i64().unwrap() >= 2,
        "{got:?}"
    );
    assert!(
        got[0]["error"].as_str().unwrap().contains("22012"),
        "{got:?}"
    );
    assert!(got[0]["link"]
        .as_str()
        .unwrap()
        .contains("/admin/v1/cron/runs/"));
    assert_eq!(got[1]["type"], "cron.recovered");
    // The mail goes out after the webhook: wait for both.
    let mails: Vec<String> = until_rows(
        &owner,
        "two alert mails",
        30,
        "SELECT subject FROM wasmbase.mailbox WHERE to_addr = 'ops@example.com' ORDER BY id",
        |r| r.len() >= 2,
    )
    .await
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(
        mails,
        [
            "[wasmbase] cron job flaky is failing",
            "[wasmbase] cron job flaky recovered"
        ]
    );
}

#[tokio::test]
async fn pg_cron_functions_schedule_jobs_on_the_scheduler() {
    let db = TestDb::new().await;
    let _s = db.server().await;
    let owner = db.owner().await;
    owner
        .batch_execute("CREATE TABLE public.pgc (id bigserial PRIMARY KEY)")
        .await
        .unwrap();
    // As a Supabase migration writes it.
    let jid: i64 = owner
        .query_one(
            "SELECT cron.schedule('pgc-every-second', '1 second', 'INSERT INTO public.pgc DEFAULT VALUES')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    until_rows(
        &owner,
        "a run recorded in cron.job_run_details",
        30,
        "SELECT 1 FROM cron.job_run_details WHERE jobid = (SELECT jobid FROM cron.job WHERE jobname = 'pgc-every-second') AND status = 'succeeded'",
        |r| !r.is_empty(),
    )
    .await;
    let job = owner
        .query_one("SELECT jobid, schedule, command, active, username FROM cron.job WHERE jobname = 'pgc-every-second'", &[])
        .await
        .unwrap();
    assert_eq!(job.get::<_, i64>(0), jid);
    assert_eq!(
        job.get::<_, String>(2),
        "INSERT INTO public.pgc DEFAULT VALUES"
    );
    assert!(job.get::<_, bool>(3));
    assert_eq!(job.get::<_, String>(4), "service_role");
    // Scheduling the same name again replaces the job, as pg_cron does.
    let again: i64 = owner
        .query_one(
            "SELECT cron.schedule('pgc-every-second', '@yearly', 'SELECT 1')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, jid);
    owner
        .execute("SELECT cron.alter_job($1, active := false)", &[&jid])
        .await
        .unwrap();
    let active: bool = owner
        .query_one("SELECT active FROM cron.job WHERE jobid = $1", &[&jid])
        .await
        .unwrap()
        .get(0);
    assert!(!active);
    // A job made elsewhere (admin API, CLI, function.toml) is not taken over.
    let def: wasmbase::cron::job::JobDef =
        serde_json::from_value(json!({"name": "api-job", "schedule": "@daily", "sql": "SELECT 1"}))
            .unwrap();
    wasmbase::cron::job::create(&owner, &def, "api", None, "test".into())
        .await
        .unwrap();
    let e = owner
        .query_one(
            "SELECT cron.schedule('api-job', '@hourly', 'SELECT 2')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "23505");
    let e = owner
        .query_one("SELECT cron.unschedule('api-job')", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "P0002");
    // A malformed schedule is refused at once.
    let e = owner
        .query_one("SELECT cron.schedule('bad', 'every day', 'SELECT 1')", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22023");
    // Not for anon or authenticated.
    for role in ["anon", "authenticated"] {
        let e = owner
            .batch_execute(&format!(
                "BEGIN; SET LOCAL ROLE {role}; SELECT cron.schedule('x', '@daily', 'SELECT 1'); COMMIT"
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code().unwrap().code(), "42501", "{role}");
        owner.batch_execute("ROLLBACK").await.unwrap();
    }
    let gone: bool = owner
        .query_one("SELECT cron.unschedule('pgc-every-second')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(gone);
    let left = texts(&owner, "SELECT jobname FROM cron.job").await;
    assert_eq!(left, ["api-job"]);
}

#[tokio::test]
async fn pg_net_requests_from_cron_sql_are_performed_and_recorded_on_the_run() {
    let db = TestDb::new().await;
    let (_, key) = db.key(KeyKind::Secret).await;
    let t = target().await;
    let allowed = t.trim_start_matches("http://").to_string();
    let s = db.server_with(|c| c.cron.http_allow = vec![allowed]).await;
    let owner = db.owner().await;
    let admin = Admin { s: &s, key };
    admin
        .create(json!({"name": "hook", "schedule": "@yearly",
            "sql": format!("SELECT net.http_post('{t}/ok', '{{\"a\": 1}}'::jsonb)")}))
        .await;
    admin
        .create(json!({"name": "elsewhere", "schedule": "@yearly",
            "sql": "SELECT net.http_get('http://example.invalid/')"}))
        .await;
    admin.run("hook").await;
    admin.run("elsewhere").await;
    let rows = until_rows(
        &owner,
        "two responses",
        30,
        "SELECT status_code, content, error_msg FROM net._http_response ORDER BY id",
        |r| r.len() == 2,
    )
    .await;
    let mut by_status: Vec<(Option<i32>, Option<String>, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    by_status.sort();
    assert_eq!(by_status[1].0, Some(200));
    assert_eq!(by_status[1].1.as_deref(), Some("posted"));
    assert_eq!(by_status[0].0, None);
    assert!(
        by_status[0]
            .2
            .as_deref()
            .unwrap()
            .contains("cron.http_allow"),
        "{by_status:?}"
    );
    // The response is on the cron run too (pg_net cannot do that).
    let out = until_rows(
        &owner,
        "the run's output names the response",
        30,
        "SELECT output FROM wasmbase.cron_runs WHERE job_name = 'hook' AND output LIKE '%net.http_post%'",
        |r| r.len() == 1,
    )
    .await;
    assert!(
        out[0].get::<_, String>(0).contains(": 200"),
        "{:?}",
        out[0].get::<_, String>(0)
    );
    // anon and authenticated cannot queue requests.
    for role in ["anon", "authenticated"] {
        let e = owner
            .batch_execute(&format!(
                "BEGIN; SET LOCAL ROLE {role}; SELECT net.http_get('http://x/'); COMMIT"
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code().unwrap().code(), "42501", "{role}");
        owner.batch_execute("ROLLBACK").await.unwrap();
    }
}

#[tokio::test]
async fn ticks_go_on_when_a_jobs_home_node_stops() {
    let db = TestDb::new().await;
    let (_, key) = db.key(KeyKind::Secret).await;
    let small = |c: &mut wasmbase::config::Config| c.database.pool_size = 2;
    let a = db.server_with(small).await;
    let b = db.server_with(small).await;
    let owner = db.owner().await;
    // Both nodes have registered (at their first upkeep).
    until_rows(
        &owner,
        "two cron nodes",
        30,
        "SELECT 1 FROM wasmbase.cron_nodes",
        |r| r.len() == 2,
    )
    .await;
    Admin {
        s: &a,
        key: key.clone(),
    }
    .create(json!({"name": "beat", "schedule": "1 second", "overlap": "allow", "sql": "SELECT 1"}))
    .await;
    let by = |node: uuid::Uuid| {
        format!(
            "SELECT 1 FROM wasmbase.cron_runs WHERE job_name = 'beat' AND status = 'succeeded' AND node = '{node}'"
        )
    };
    // Once the nodes know each other, one of them (the job's home) runs it.
    let latest = until_rows(
        &owner,
        "ticks running",
        30,
        "SELECT node FROM wasmbase.cron_runs WHERE job_name = 'beat' AND status = 'succeeded' ORDER BY scheduled_for DESC LIMIT 1",
        |r| !r.is_empty(),
    )
    .await;
    let home: uuid::Uuid = latest[0].get(0);
    let (stopping, staying) = if home == a.srv.state.cron.node {
        (a, b)
    } else {
        (b, a)
    };
    let other = staying.srv.state.cron.node;
    let before = owner.query(&by(other), &[]).await.unwrap().len();
    stopping.srv.shutdown().await;
    // The other node claims its ticks after the failover delay.
    until_rows(&owner, "the other node takes over", 30, &by(other), |r| {
        r.len() >= before + 3
    })
    .await;
    let admin = Admin { s: &staying, key };
    admin
        .call(reqwest::Method::POST, "/jobs/beat/pause", None)
        .await;
    until_rows(
        &owner,
        "runs settle",
        30,
        "SELECT 1 FROM wasmbase.cron_runs WHERE status IN ('pending', 'running')",
        |r| r.is_empty(),
    )
    .await;
    // No tick was lost in the handover, and none ran twice.
    let r = owner
        .query_one(
            "SELECT count(*)::int8, count(DISTINCT scheduled_for)::int8, \
             (extract(epoch FROM max(scheduled_for) - min(scheduled_for)))::int8 + 1 \
             FROM wasmbase.cron_runs WHERE job_name = 'beat'",
            &[],
        )
        .await
        .unwrap();
    let (n, distinct, span): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(n, distinct, "a tick ran twice");
    assert_eq!(n, span, "a tick was lost");
}

/// More jobs due on one tick than one claim statement holds (1,000 ticks):
/// each runs exactly once, whichever of the node's statements claimed it.
#[tokio::test]
async fn a_tick_with_more_jobs_than_one_claim_holds_runs_each_once() {
    let (_db, s, owner, _key) = one_node().await;
    owner
        .batch_execute("CREATE TABLE public.hits (job text NOT NULL)")
        .await
        .unwrap();
    // One tick 20 s from now, then not again for a year. The node loads the
    // jobs one by one; a job it had not loaded by the tick would skip it.
    let tick: chrono::DateTime<chrono::Utc> = owner
        .query_one("SELECT date_trunc('second', now()) + interval '20 s'", &[])
        .await
        .unwrap()
        .get(0);
    owner
        .execute(
            "SELECT cron.schedule('many-' || g, to_char($1::timestamptz AT TIME ZONE 'UTC', 'SS MI HH24 DD MM') || ' *',
                                  format('INSERT INTO public.hits VALUES (%L)', 'many-' || g))
               FROM generate_series(1, 2500) g",
            &[&tick],
        )
        .await
        .unwrap();
    let cron = &s.srv.state.cron;
    wait_until(
        "the node had not loaded the 2,500 jobs by their tick",
        (tick - chrono::Utc::now()).num_seconds().max(0) as u64,
        || cron.scheduled.load(std::sync::atomic::Ordering::Relaxed) >= 2500,
    )
    .await;
    until_rows(
        &owner,
        "2,500 finished runs",
        90,
        "SELECT count(*) FROM wasmbase.cron_runs WHERE job_name LIKE 'many-%' AND status NOT IN ('pending', 'running')",
        |r| r[0].get::<_, i64>(0) >= 2500,
    )
    .await;
    let r = owner
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded' AND trigger = 'schedule' AND scheduled_for = $1),
                    (SELECT count(*) FROM public.hits), (SELECT count(DISTINCT job) FROM public.hits)
               FROM wasmbase.cron_runs WHERE job_name LIKE 'many-%'",
            &[&tick],
        )
        .await
        .unwrap();
    let counts: Vec<i64> = (0..4).map(|i| r.get(i)).collect();
    assert_eq!(
        counts,
        [2500, 2500, 2500, 2500],
        "runs; succeeded on the tick; inserts; jobs that inserted"
    );
}
