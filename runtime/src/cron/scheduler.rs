//! One node's scheduler. Every node keeps every job's next tick in memory (a
//! timer wheel ordered by instant) and, when ticks are due, tries to claim
//! them all in one statement: an `INSERT … ON CONFLICT DO NOTHING` of
//! `(job_id, scheduled_for, attempt = 1)`. The unique key makes exactly one
//! node's insert succeed per tick, with no leader and no lock held between
//! nodes; the winner runs the attempt and holds a lease on it that it renews.
//!
//! Besides the timer, the scheduler wakes for NOTIFYs on [`super::CHANNEL`]
//! (a job changed, an attempt was queued) and every third of a lease for
//! upkeep: renewing this node's leases, reaping attempts whose node stopped
//! renewing (`lost`, then retried per the job), picking up queued attempts a
//! lost NOTIFY hid, and once an hour pruning history. When idle it sends
//! nothing else to PostgreSQL.

use super::exec::{self, Claimed};
use super::job::Missed;
use super::schedule::Schedule;
use super::Event;
use crate::server::state::AppState;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Ticks claimed per statement (10,000 jobs due together take ten).
const CLAIM_CHUNK: usize = 1000;

/// What the wheel holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    /// A job's next tick.
    Tick(i64),
    /// A queued attempt (`cron_runs.id`) due then.
    Run(i64),
}

struct Entry {
    schedule: Schedule,
    paused: bool,
    next: Option<DateTime<Utc>>,
}

struct Sched {
    st: AppState,
    jobs: HashMap<i64, Entry>,
    wheel: BTreeSet<(DateTime<Utc>, Item)>,
    queued: HashSet<i64>,
    /// A claim or load failed: reload everything at the next upkeep.
    stale: bool,
}

/// The job columns a scheduler needs, and the start of the missed-tick
/// window: the later of the job's `active_since` and its latest tick.
const JOB_QUERY: &str = "SELECT j.id, j.schedule, j.timezone, j.paused, j.missed, j.catch_up_max, \
     greatest(j.active_since, (SELECT max(r.scheduled_for) FROM wasmbase.cron_runs r WHERE r.job_id = j.id AND r.attempt = 1)) AS since \
     FROM wasmbase.cron_jobs j";

/// Runs this node's scheduler until `cancel`.
pub async fn run(st: AppState, cancel: CancellationToken) {
    let Some(mut inbox) = st.cron.take_inbox() else {
        return;
    };
    let mut s = Sched {
        st: st.clone(),
        jobs: HashMap::new(),
        wheel: BTreeSet::new(),
        queued: HashSet::new(),
        stale: true,
    };
    let upkeep_every = (st.cron.lease / 3).max(Duration::from_millis(100));
    let mut upkeep = tokio::time::interval(upkeep_every);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let prune_every = (Duration::from_secs(3600).as_millis() / upkeep_every.as_millis()).max(1);
    let mut upkeeps: u128 = 0;
    loop {
        let wake = s.wheel.first().map(|(t, _)| instant_of(*t));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sleep_until(wake), if wake.is_some() => s.fire_due(),
            ev = inbox.recv() => match ev {
                Some(Event::Job(id)) => s.reload_job(id).await,
                Some(Event::Run(id)) => s.queue_run(id).await,
                Some(Event::Resync) => s.stale = true,
                None => return,
            },
            _ = upkeep.tick() => {
                if s.stale {
                    s.load_all().await;
                }
                s.upkeep(upkeeps.is_multiple_of(prune_every)).await;
                upkeeps += 1;
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The monotonic instant of wall-clock time `t`.
fn instant_of(t: DateTime<Utc>) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    match (t - Utc::now()).to_std() {
        Ok(d) => now + d,
        Err(_) => now,
    }
}

impl Sched {
    fn unschedule(&mut self, id: i64) {
        if let Some(e) = self.jobs.remove(&id) {
            if let Some(t) = e.next {
                self.wheel.remove(&(t, Item::Tick(id)));
            }
        }
    }

    fn schedule(&mut self, id: i64, mut e: Entry, after: DateTime<Utc>) {
        e.next = if e.paused {
            None
        } else {
            e.schedule.next_after(after)
        };
        if let Some(t) = e.next {
            self.wheel.insert((t, Item::Tick(id)));
        }
        self.jobs.insert(id, e);
    }

    /// Reads jobs (all, or one) and schedules them; for all, also claims the
    /// ticks the missed-tick policies ask for and queues waiting attempts.
    async fn load(&mut self, one: Option<i64>) -> anyhow::Result<()> {
        let c = self.st.cron.pool.get().await?;
        let rows = match one {
            Some(id) => {
                c.query(&format!("{JOB_QUERY} WHERE j.id = $1"), &[&id])
                    .await?
            }
            None => c.query(JOB_QUERY, &[]).await?,
        };
        let now = Utc::now();
        if one.is_none() {
            for id in self.jobs.keys().copied().collect::<Vec<_>>() {
                self.unschedule(id);
            }
        }
        let mut missed = Vec::new();
        for r in &rows {
            let id: i64 = r.get("id");
            self.unschedule(id);
            let (expr, tz): (String, String) = (r.get("schedule"), r.get("timezone"));
            let schedule = match Schedule::parse(&expr, &tz) {
                Ok(s) => s,
                Err(e) => {
                    // Only possible if a row was written around the API.
                    tracing::warn!(job = id, error = %e, "cron: unusable schedule; job not scheduled");
                    continue;
                }
            };
            let paused: bool = r.get("paused");
            if one.is_none() && !paused {
                let policy: String = r.get("missed");
                let keep = match serde_json::from_value(serde_json::Value::String(policy)) {
                    Ok(Missed::RunOnce) => 1,
                    Ok(Missed::CatchUp) => r.get::<_, i32>("catch_up_max").max(0) as usize,
                    _ => 0,
                };
                let since: Option<DateTime<Utc>> = r.get("since");
                if let (true, Some(since)) = (keep > 0, since) {
                    for t in schedule.ticks_between(since, now, keep) {
                        missed.push((id, t));
                    }
                }
            }
            self.schedule(
                id,
                Entry {
                    schedule,
                    paused,
                    next: None,
                },
                now,
            );
        }
        if one.is_none() {
            let pending = c
                .query(
                    "SELECT id, due_at FROM wasmbase.cron_runs WHERE status = 'pending'",
                    &[],
                )
                .await?;
            for r in pending {
                self.enqueue(r.get(0), r.get(1));
            }
        }
        drop(c);
        if !missed.is_empty() {
            tracing::info!(ticks = missed.len(), "cron: claiming missed ticks");
            tokio::spawn(claim_ticks(self.st.clone(), missed, "missed"));
        }
        Ok(())
    }

    async fn load_all(&mut self) {
        match self.load(None).await {
            Ok(()) => self.stale = false,
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cron: loading jobs"),
        }
    }

    async fn reload_job(&mut self, id: i64) {
        self.unschedule(id);
        if let Err(e) = self.load(Some(id)).await {
            tracing::warn!(job = id, error = %format!("{e:#}"), "cron: loading a job");
            self.stale = true;
        }
    }

    fn enqueue(&mut self, id: i64, due: DateTime<Utc>) {
        if self.queued.insert(id) {
            self.wheel.insert((due, Item::Run(id)));
        }
    }

    async fn queue_run(&mut self, id: i64) {
        let r = async {
            let c = self.st.cron.pool.get().await?;
            let row = c
                .query_opt(
                    "SELECT due_at FROM wasmbase.cron_runs WHERE id = $1 AND status = 'pending'",
                    &[&id],
                )
                .await?;
            anyhow::Ok(row.map(|r| r.get::<_, DateTime<Utc>>(0)))
        };
        match r.await {
            Ok(Some(due)) => self.enqueue(id, due),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(run = id, error = %format!("{e:#}"), "cron: reading a queued attempt");
                self.stale = true;
            }
        }
    }

    /// Pops everything due, reschedules each job from the tick it fired for,
    /// and claims in the background (a slow database never delays the timer).
    fn fire_due(&mut self) {
        let now = Utc::now();
        let mut ticks = Vec::new();
        let mut runs = Vec::new();
        while let Some(&(t, item)) = self.wheel.first() {
            if t > now {
                break;
            }
            self.wheel.pop_first();
            match item {
                Item::Tick(id) => {
                    ticks.push((id, t));
                    if let Some(mut e) = self.jobs.remove(&id) {
                        e.next = None;
                        // A node that fell far behind (a suspended machine)
                        // does not replay the backlog here; the missed-tick
                        // policy decides at the next load.
                        let from = if now - t > chrono::Duration::seconds(1) {
                            now
                        } else {
                            t
                        };
                        self.schedule(id, e, from);
                    }
                }
                Item::Run(id) => {
                    self.queued.remove(&id);
                    runs.push(id);
                }
            }
        }
        if !ticks.is_empty() {
            tokio::spawn(claim_ticks(self.st.clone(), ticks, "schedule"));
        }
        if !runs.is_empty() {
            tokio::spawn(claim_queued(self.st.clone(), runs));
        }
    }

    /// Renews this node's leases, reaps lost attempts, picks up queued ones,
    /// and (when `prune`) trims history.
    async fn upkeep(&mut self, prune: bool) {
        let r = async {
            let c = self.st.cron.pool.get().await?;
            let mine: Vec<i64> = self.st.cron.running.lock().iter().copied().collect();
            if !mine.is_empty() {
                c.execute(
                    "UPDATE wasmbase.cron_runs SET lease_until = now() + make_interval(secs => $2) \
                     WHERE id = ANY($1) AND status = 'running'",
                    &[&mine, &self.st.cron.lease.as_secs_f64()],
                )
                .await?;
            }
            let reaped: i32 = c
                .query_one("SELECT wasmbase.cron_reap()", &[])
                .await?
                .get(0);
            if reaped > 0 {
                tracing::warn!(attempts = reaped, "cron: attempts lost by their node");
            }
            let pending = c
                .query(
                    "SELECT id, due_at FROM wasmbase.cron_runs WHERE status = 'pending'",
                    &[],
                )
                .await?;
            if prune {
                let cfg = &self.st.config.cron;
                let n = c
                    .execute(
                        "DELETE FROM wasmbase.cron_runs WHERE status NOT IN ('pending', 'running') \
                         AND (created_at < now() - make_interval(days => $1) \
                              OR id IN (SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY job_id ORDER BY id DESC) AS n \
                                        FROM wasmbase.cron_runs) x WHERE x.n > $2))",
                        &[&(cfg.history_days as i32), &(cfg.history_per_job as i64)],
                    )
                    .await?;
                if n > 0 {
                    tracing::debug!(runs = n, "cron: pruned history");
                }
            }
            anyhow::Ok(pending)
        };
        match r.await {
            Ok(pending) => {
                for r in pending {
                    self.enqueue(r.get(0), r.get(1));
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cron: upkeep");
                self.stale = true;
            }
        }
    }
}

/// The claim: insert attempt 1 of each tick; a tick another node claimed
/// conflicts and is dropped. A tick of a paused or deleted job (this node's
/// view may be a moment old) is not claimed; one that comes while the job's
/// previous attempt still runs is recorded as `skipped` under `overlap =
/// forbid`. Returns what this node won and must run, with the job as it is
/// now.
const CLAIM_TICKS: &str = "\
WITH t AS (SELECT * FROM unnest($1::bigint[], $2::timestamptz[]) AS t(job_id, at)),
ins AS (
  INSERT INTO wasmbase.cron_runs (job_id, job_name, scheduled_for, attempt, status, trigger, due_at, node, started_at, lease_until, finished_at, duration_ms, error)
  SELECT j.id, j.name, t.at, 1, s.status, $3, t.at, $4, now(),
         CASE WHEN s.status = 'running' THEN now() + make_interval(secs => $5) END,
         CASE WHEN s.status = 'skipped' THEN now() END,
         CASE WHEN s.status = 'skipped' THEN 0 END,
         CASE WHEN s.status = 'skipped' THEN 'skipped: the previous run of this job was still running (overlap = forbid)' END
    FROM t JOIN wasmbase.cron_jobs j ON j.id = t.job_id AND NOT j.paused
    CROSS JOIN LATERAL (SELECT CASE WHEN j.overlap = 'forbid' AND EXISTS (
        SELECT 1 FROM wasmbase.cron_runs r WHERE r.job_id = j.id AND r.status IN ('running', 'pending'))
      THEN 'skipped' ELSE 'running' END AS status) s
  ON CONFLICT (job_id, scheduled_for, attempt) DO NOTHING
  RETURNING id, run_id, job_id, scheduled_for, attempt, status
)
SELECT ins.id, ins.run_id, ins.scheduled_for, ins.attempt, j.id AS job_id, j.name, j.kind, j.spec, j.timeout_ms
  FROM ins JOIN wasmbase.cron_jobs j ON j.id = ins.job_id
 WHERE ins.status = 'running'";

/// Takes queued attempts (retries, manual runs) that no other node took.
const CLAIM_QUEUED: &str = "\
UPDATE wasmbase.cron_runs r
   SET status = 'running', node = $2, started_at = now(), lease_until = now() + make_interval(secs => $3)
  FROM wasmbase.cron_jobs j
 WHERE r.id = ANY($1) AND r.status = 'pending' AND j.id = r.job_id
RETURNING r.id, r.run_id, r.scheduled_for, r.attempt, j.id AS job_id, j.name, j.kind, j.spec, j.timeout_ms";

async fn claim_ticks(st: AppState, ticks: Vec<(i64, DateTime<Utc>)>, trigger: &'static str) {
    for chunk in ticks.chunks(CLAIM_CHUNK) {
        let (ids, ats): (Vec<i64>, Vec<DateTime<Utc>>) = chunk.iter().copied().unzip();
        st.cron
            .claim_tries
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
        let r = async {
            let c = st.cron.pool.get().await?;
            let rows = c
                .query(
                    CLAIM_TICKS,
                    &[
                        &ids,
                        &ats,
                        &trigger,
                        &st.cron.node,
                        &st.cron.lease.as_secs_f64(),
                    ],
                )
                .await?;
            anyhow::Ok(rows)
        };
        match r.await {
            Ok(rows) => start_all(&st, rows),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), ticks = ids.len(), "cron: claiming ticks failed; the missed-tick policy applies once the database answers");
                st.cron.resync();
            }
        }
    }
}

async fn claim_queued(st: AppState, runs: Vec<i64>) {
    let r = async {
        let c = st.cron.pool.get().await?;
        let rows = c
            .query(
                CLAIM_QUEUED,
                &[&runs, &st.cron.node, &st.cron.lease.as_secs_f64()],
            )
            .await?;
        anyhow::Ok(rows)
    };
    match r.await {
        Ok(rows) => start_all(&st, rows),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cron: claiming queued attempts failed");
            st.cron.resync();
        }
    }
}

fn start_all(st: &AppState, rows: Vec<tokio_postgres::Row>) {
    for r in rows {
        match Claimed::from_row(&r) {
            Ok(c) => exec::start(st.clone(), c),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cron: a claimed attempt is unreadable")
            }
        }
    }
}
