//! `wasmbase bench-cron` (hidden; `bench/cron.sh` runs it): three cron nodes
//! in this process on the database of the environment's configuration, and
//! the figures the cron issue asks for, each with its baseline from the same
//! run:
//!
//! 1. tick precision: 100 jobs on a 1-second schedule; the delay from each
//!    tick to its attempt's start (`started_at`, stamped with
//!    `clock_timestamp()` as the claim inserts it), against the lateness of a
//!    plain tokio timer aiming at the same whole seconds in this process;
//! 2. claims: 10,000 jobs due on one tick; ticks claimed per second from the
//!    tick to the last claim (the script compares it with pgbench);
//! 3. idle cost with 10,000 jobs registered (due next year): this process's
//!    CPU and the database's transactions per second, against the same with
//!    no jobs.
//!
//! Prints `key value` lines for the script.

use crate::config::{Config, Mode};
use anyhow::{Context, Result};
use chrono::{DateTime, Timelike, Utc};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// User + system CPU seconds of this process (`/proc/self/stat`, in clock
/// ticks of 1/100 s, Linux's USER_HZ).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

async fn xacts(c: &tokio_postgres::Client) -> Result<i64> {
    Ok(c.query_one(
        "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database WHERE datname = current_database()",
        &[],
    )
    .await?
    .get(0))
}

/// (CPU %, transactions/s) over `secs` of idling.
async fn idle(c: &tokio_postgres::Client, secs: u64) -> Result<(f64, f64)> {
    // A backend that went idle flushes its counters up to 10 s later
    // (PostgreSQL 15): settle past that, then measure.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (cpu0, x0, t0) = (cpu_secs(), xacts(c).await?, std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let x1 = xacts(c).await?;
    let wall = t0.elapsed().as_secs_f64();
    // The two counter reads are this bench's own transactions.
    Ok((
        100.0 * (cpu_secs() - cpu0) / wall,
        (x1 - x0 - 1) as f64 / wall,
    ))
}

/// Runs the benchmark for `secs` seconds of ticks.
pub async fn run(secs: u64) -> Result<()> {
    let mut cfg = Config::load(None, false, Mode::Serve)?;
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.database.pool_size = 4;
    cfg.cron.enabled = true;
    cfg.log.level = "warn".into();
    let url = cfg.database.url.clone().context("DATABASE_URL")?;
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    c.batch_execute(
        "DELETE FROM wasmbase.cron_jobs WHERE name LIKE 'bench-%'; \
         DELETE FROM wasmbase.cron_runs WHERE job_name LIKE 'bench-%'",
    )
    .await?;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let n = crate::server::start(cfg.clone()).await?;
        tokio::time::timeout(Duration::from_secs(60), n.wait_ready())
            .await
            .context("a node did not get ready")?;
        nodes.push(n);
    }
    let (idle_cpu0, idle_tps0) = idle(&c, 10).await?;
    println!("idle_none {idle_cpu0:.2} {idle_tps0:.2}");

    // 1. Precision.
    let begin = Utc::now();
    c.batch_execute(
        "INSERT INTO wasmbase.cron_jobs (name, kind, schedule, spec, overlap) \
         SELECT 'bench-tick-' || g, 'sql', '1 second', '{\"command\": \"SELECT 1\"}', 'allow' FROM generate_series(1, 100) g; \
         SELECT pg_notify('wasmbase_cron', 'job:' || id) FROM wasmbase.cron_jobs WHERE name LIKE 'bench-tick-%'",
    )
    .await?;
    let timer = tokio::spawn(async move {
        let mut late = Vec::new();
        let end = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < end {
            let now = Utc::now();
            let target: DateTime<Utc> = (now + chrono::Duration::seconds(1))
                .with_nanosecond(0)
                .expect("a whole second");
            let wait = (target - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            late.push((Utc::now() - target).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
        late
    });
    let mut timer_ms = timer.await?;
    let end = Utc::now();
    c.batch_execute("UPDATE wasmbase.cron_jobs SET paused = true, version = version + 1 WHERE name LIKE 'bench-tick-%'; \
                     SELECT pg_notify('wasmbase_cron', 'job:' || id) FROM wasmbase.cron_jobs WHERE name LIKE 'bench-tick-%'")
        .await?;
    let rows = c
        .query(
            "SELECT extract(epoch FROM started_at - scheduled_for)::float8 * 1000 FROM wasmbase.cron_runs \
             WHERE job_name LIKE 'bench-tick-%' AND scheduled_for > $1::timestamptz + interval '2 s' AND scheduled_for < $2::timestamptz AND started_at IS NOT NULL",
            &[&begin, &end],
        )
        .await?;
    let mut cron_ms: Vec<f64> = rows.iter().map(|r| r.get(0)).collect();
    println!(
        "precision_cron {} {:.2} {:.2}",
        cron_ms.len(),
        percentile(&mut cron_ms, 0.5),
        percentile(&mut cron_ms, 0.99)
    );
    println!(
        "precision_timer {} {:.2} {:.2}",
        timer_ms.len(),
        percentile(&mut timer_ms, 0.5),
        percentile(&mut timer_ms, 0.99)
    );

    // 2. Claims: 10,000 jobs due on one tick, 25 s from now.
    let tick = (Utc::now() + chrono::Duration::seconds(25))
        .with_nanosecond(0)
        .expect("a whole second");
    let expr = format!(
        "{} {} {} {} {} *",
        tick.second(),
        tick.minute(),
        tick.hour(),
        chrono::Datelike::day(&tick),
        chrono::Datelike::month(&tick)
    );
    c.execute(
        "INSERT INTO wasmbase.cron_jobs (name, kind, schedule, spec, overlap) \
         SELECT 'bench-claim-' || g, 'sql', $1, '{\"command\": \"SELECT 1\"}', 'allow' FROM generate_series(1, 10000) g",
        &[&expr],
    )
    .await?;
    for n in &nodes {
        n.state.cron.resync();
    }
    let ready = std::time::Instant::now() + Duration::from_secs(20);
    while nodes
        .iter()
        .any(|n| n.state.cron.scheduled.load(Ordering::Relaxed) < 10_000)
    {
        anyhow::ensure!(
            std::time::Instant::now() < ready,
            "nodes did not load 10,000 jobs in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(Utc::now() < tick, "loading took past the tick");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let r = c
            .query_one(
                "SELECT count(*)::int8, extract(epoch FROM max(started_at) - min(scheduled_for))::float8, \
                 extract(epoch FROM min(started_at) - min(scheduled_for))::float8 \
                 FROM wasmbase.cron_runs WHERE job_name LIKE 'bench-claim-%'",
                &[],
            )
            .await?;
        let (n, span, first): (i64, Option<f64>, Option<f64>) = (r.get(0), r.get(1), r.get(2));
        if n >= 10_000 {
            let span = span.unwrap_or(f64::NAN);
            println!(
                "claims {n} {span:.3} {:.0} {:.1}",
                n as f64 / span,
                first.unwrap_or(f64::NAN) * 1000.0
            );
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "only {n} of 10,000 ticks claimed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the 10,000 attempts finish before measuring idle.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while c
        .query_one(
            "SELECT count(*)::int8 FROM wasmbase.cron_runs WHERE status IN ('running', 'pending')",
            &[],
        )
        .await?
        .get::<_, i64>(0)
        > 0
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "attempts did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 3. Idle with 10,000 jobs registered (next due next year).
    let (cpu, tps) = idle(&c, 10).await?;
    println!("idle_10k {cpu:.2} {tps:.2}");
    c.batch_execute("DELETE FROM wasmbase.cron_jobs WHERE name LIKE 'bench-%'")
        .await?;
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
