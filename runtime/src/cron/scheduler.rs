//! One node's scheduler. Every node keeps every job's next tick in memory (a
//! timer wheel ordered by instant) and, when ticks are due, claims them in
//! one statement: an `INSERT … ON CONFLICT DO NOTHING` of `(job_id,
//! scheduled_for, attempt = 1)`. The unique key makes exactly one node's
//! insert succeed per tick, with no leader and no lock held between nodes;
//! the winner runs the attempt and holds a lease on it that it renews. A job's
//! home node (see [`home`]) claims at once, the others [`FAILOVER`] later.
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
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Ticks claimed per statement (10,000 jobs due together take ten).
const CLAIM_CHUNK: usize = 1000;

/// Ticks a late node still claims for one job before it counts as having
/// been down (then the missed-tick policy decides, at the next load).
const MAX_LATE_TICKS: usize = 60;

/// What the wheel holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    /// A job's next tick.
    Tick(i64),
    /// A queued attempt (`cron_runs.id`) due then.
    Run(i64),
}

struct Entry {
    /// Shared by the jobs with the same expression and time zone.
    schedule: Arc<Schedule>,
    paused: bool,
    /// The definition's version the tick is computed from.
    version: i64,
    next: Option<DateTime<Utc>>,
}

/// A tick to claim: the job, the instant, and the definition's version.
type Tick = (i64, DateTime<Utc>, i64);

/// Next ticks already computed, by schedule and instant. Jobs on one tick
/// mostly share a few schedules (`* * * * *`, `@hourly`), and a schedule's next
/// tick after an instant is always the same: 10,000 jobs due together cost a
/// few computations instead of 10,000, each up to tens of microseconds when the
/// next tick is far off, on the cores the tick's claims need. Keyed by the
/// schedule's address: a memo lives within one pass, while every schedule it
/// saw is held.
#[derive(Default)]
struct NextTicks(HashMap<(usize, DateTime<Utc>), Option<DateTime<Utc>>>);

impl NextTicks {
    fn after(&mut self, s: &Arc<Schedule>, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        *self
            .0
            .entry((Arc::as_ptr(s) as usize, t))
            .or_insert_with(|| s.next_after(t))
    }
}

struct Sched {
    st: AppState,
    jobs: HashMap<i64, Entry>,
    wheel: BTreeSet<(DateTime<Utc>, Item)>,
    queued: HashSet<i64>,
    /// A claim or load failed: reload everything at the next upkeep.
    stale: bool,
    /// How long one bookkeeping call may take before the loop moves on.
    db_wait: Duration,
    /// The nodes running cron as of the last upkeep (this one included);
    /// empty until the first upkeep.
    peers: Vec<uuid::Uuid>,
}

/// How long a node waits before claiming a tick whose home is another node
/// (only ticks of a node that stopped are still unclaimed by then).
const FAILOVER: Duration = Duration::from_secs(2);

/// The node a job's ticks are claimed by first: the highest score of
/// (job, node) among `peers` (rendezvous hashing, so a node joining or leaving
/// moves only its share). Every node computes the same answer from the same
/// list; a node whose list differs only claims some ticks a moment later.
fn home(job: i64, peers: &[uuid::Uuid]) -> Option<uuid::Uuid> {
    let mix = |mut x: u64| {
        // splitmix64's finaliser: a fixed, well-spread hash.
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    };
    peers
        .iter()
        .max_by_key(|n| mix(job as u64 ^ mix(n.as_u128() as u64 ^ (n.as_u128() >> 64) as u64)))
        .copied()
}

/// The job columns a scheduler needs, and the start of the missed-tick
/// window: the later of the job's `active_since` and its latest claimed tick
/// (manual runs and retries do not count; pruning keeps each job's latest
/// tick, so an old tick never looks missed).
const JOB_QUERY: &str =
    "SELECT j.id, j.schedule, j.timezone, j.paused, j.missed, j.catch_up_max, j.version, \
     greatest(j.active_since, (SELECT max(r.scheduled_for) FROM wasmbase.cron_runs r \
       WHERE r.job_id = j.id AND r.attempt = 1 AND r.trigger IN ('schedule', 'missed'))) AS since \
     FROM wasmbase.cron_jobs j";

/// Runs this node's scheduler until `cancel`.
pub async fn run(st: AppState, cancel: CancellationToken) {
    let Some(mut inbox) = st.cron.take_inbox() else {
        return;
    };
    let upkeep_every = (st.cron.lease / 3).max(Duration::from_millis(100));
    let mut s = Sched {
        st: st.clone(),
        jobs: HashMap::new(),
        wheel: BTreeSet::new(),
        queued: HashSet::new(),
        stale: true,
        db_wait: upkeep_every,
        peers: Vec::new(),
    };
    let mut upkeep = tokio::time::interval(upkeep_every);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let prune_every = (Duration::from_secs(3600).as_millis() / upkeep_every.as_millis()).max(1);
    let mut upkeeps: u128 = 0;
    loop {
        let wake = s.wheel.first().map(|(t, _)| instant_of(*t));
        tokio::select! {
            _ = cancel.cancelled() => {
                // A node that stops cleanly hands its jobs over at once, not
                // after a lease.
                let gone = async {
                    let c = st.cron.pool.get().await?;
                    c.execute("DELETE FROM wasmbase.cron_nodes WHERE node = $1", &[&st.cron.node])
                        .await?;
                    anyhow::Ok(())
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), gone).await;
                return;
            }
            _ = sleep_until(wake), if wake.is_some() => s.fire_due().await,
            ev = inbox.recv() => match ev {
                Some(Event::Job(id)) => s.reload_job(id).await,
                Some(Event::Run(id, due)) => s.enqueue(id, due),
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
    /// Takes `id` off the wheel; returns the tick it was waiting for.
    fn unschedule(&mut self, id: i64) -> Option<DateTime<Utc>> {
        let e = self.jobs.remove(&id)?;
        if let Some(t) = e.next {
            self.wheel.remove(&(t, Item::Tick(id)));
        }
        e.next
    }

    /// Puts `id` on the wheel at its first tick after `after`.
    fn schedule(&mut self, id: i64, mut e: Entry, after: DateTime<Utc>, memo: &mut NextTicks) {
        e.next = if e.paused {
            None
        } else {
            memo.after(&e.schedule, after)
        };
        if let Some(t) = e.next {
            self.wheel.insert((t, Item::Tick(id)));
        }
        self.jobs.insert(id, e);
    }

    /// Reads jobs (all, or one) and schedules them; for all, also claims the
    /// ticks the missed-tick policies ask for and queues waiting attempts.
    /// Ticks are scheduled from `t0`, read before the query, so a tick that
    /// came due while the query ran still fires (late).
    async fn load(&mut self, one: Option<i64>) -> anyhow::Result<()> {
        let t0 = Utc::now();
        let c = self.st.cron.pool.get().await?;
        let rows = match one {
            Some(id) => {
                c.query(&format!("{JOB_QUERY} WHERE j.id = $1"), &[&id])
                    .await?
            }
            None => c.query(JOB_QUERY, &[]).await?,
        };
        let pending = match one {
            None => {
                c.query(
                    "SELECT id, due_at FROM wasmbase.cron_runs WHERE status = 'pending'",
                    &[],
                )
                .await?
            }
            Some(_) => Vec::new(),
        };
        drop(c);
        // The tick a reloaded job was waiting for, if it came due meanwhile.
        let mut waiting: HashMap<i64, DateTime<Utc>> = HashMap::new();
        match one {
            Some(id) => {
                if let Some(t) = self.unschedule(id) {
                    waiting.insert(id, t);
                }
            }
            None => {
                for id in self.jobs.keys().copied().collect::<Vec<_>>() {
                    if let Some(t) = self.unschedule(id) {
                        waiting.insert(id, t);
                    }
                }
            }
        }
        let now = Utc::now();
        let mut missed = Vec::new();
        let mut parsed: HashMap<(String, String), Arc<Schedule>> = HashMap::new();
        let mut memo = NextTicks::default();
        for r in &rows {
            let id: i64 = r.get("id");
            let (expr, tz): (String, String) = (r.get("schedule"), r.get("timezone"));
            let schedule = match parsed.entry((expr, tz)) {
                std::collections::hash_map::Entry::Occupied(o) => o.get().clone(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let (expr, tz) = v.key();
                    match Schedule::parse(expr, tz) {
                        Ok(s) => v.insert(Arc::new(s)).clone(),
                        Err(e) => {
                            // Only possible if a row was written around the API.
                            tracing::warn!(job = id, error = %e, "cron: unusable schedule; job not scheduled");
                            continue;
                        }
                    }
                }
            };
            let paused: bool = r.get("paused");
            let version: i64 = r.get("version");
            if one.is_none() && !paused {
                let policy: String = r.get("missed");
                let keep = match serde_json::from_value(serde_json::Value::String(policy)) {
                    Ok(Missed::RunOnce) => 1,
                    Ok(Missed::CatchUp) => r.get::<_, i32>("catch_up_max").max(0) as usize,
                    _ => 0,
                };
                let since: Option<DateTime<Utc>> = r.get("since");
                if let (true, Some(since)) = (keep > 0, since) {
                    for t in schedule.ticks_between(since, t0, keep) {
                        missed.push((id, t, version));
                    }
                }
            }
            let from = match waiting.get(&id) {
                Some(t) if *t <= t0 => *t - chrono::Duration::microseconds(1),
                _ => t0,
            };
            self.schedule(
                id,
                Entry {
                    schedule,
                    paused,
                    version,
                    next: None,
                },
                from.min(now),
                &mut memo,
            );
        }
        for r in pending {
            self.enqueue(r.get(0), r.get(1));
        }
        self.st
            .cron
            .scheduled
            .store(self.jobs.len(), Ordering::Relaxed);
        if !missed.is_empty() {
            tracing::info!(ticks = missed.len(), "cron: claiming missed ticks");
            tokio::spawn(claim_ticks(self.st.clone(), missed, "missed"));
        }
        Ok(())
    }

    async fn load_all(&mut self) {
        match tokio::time::timeout(self.db_wait, self.load(None)).await {
            Ok(Ok(())) => self.stale = false,
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "cron: loading jobs"),
            Err(_) => {
                tracing::warn!("cron: loading jobs took too long; retrying at the next upkeep")
            }
        }
    }

    async fn reload_job(&mut self, id: i64) {
        match tokio::time::timeout(self.db_wait, self.load(Some(id))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(job = id, error = %format!("{e:#}"), "cron: loading a job");
                self.stale = true;
            }
            Err(_) => {
                tracing::warn!(job = id, "cron: loading a job took too long");
                self.stale = true;
            }
        }
    }

    fn enqueue(&mut self, id: i64, due: DateTime<Utc>) {
        if self.queued.insert(id) {
            self.wheel.insert((due, Item::Run(id)));
        }
    }

    /// Pops everything due, reschedules each job after the tick it fired for,
    /// and claims in the background (a slow database never delays the timer).
    /// A node that fell behind (a busy machine) claims the ticks it passed,
    /// up to [`MAX_LATE_TICKS`] per job; past that it counts as having been
    /// down, and the job's missed-tick policy decides at the next load.
    async fn fire_due(&mut self) {
        let now = Utc::now();
        let mut due: Vec<(i64, DateTime<Utc>, Entry)> = Vec::new();
        let mut runs = Vec::new();
        while let Some(&(t, item)) = self.wheel.first() {
            if t > now {
                break;
            }
            self.wheel.pop_first();
            match item {
                Item::Tick(id) => {
                    if let Some(e) = self.jobs.remove(&id) {
                        due.push((id, t, e));
                    }
                }
                Item::Run(id) => {
                    self.queued.remove(&id);
                    runs.push(id);
                }
            }
        }
        if !runs.is_empty() {
            tokio::spawn(claim_queued(self.st.clone(), runs));
        }
        if due.is_empty() {
            return;
        }
        let mut ticks: Vec<Tick> = due.iter().map(|(id, t, e)| (*id, *t, e.version)).collect();
        // A tick less than a second old can have no later tick already
        // passed (no schedule fires more than once a second), so its claim
        // goes out before the next ticks are computed. With 10,000 jobs due
        // at once the first claim reached the database 40–50 ms after the
        // tick when it waited for that computation, 9–13 ms now.
        if due
            .iter()
            .all(|(_, t, _)| now - *t < chrono::Duration::seconds(1))
        {
            self.claim(std::mem::take(&mut ticks));
        }
        let mut late: Vec<Tick> = Vec::new();
        let mut memo = NextTicks::default();
        for (i, (id, t, mut e)) in due.into_iter().enumerate() {
            // Yield now and then, first before any work: the claim task
            // spawned above, and the database connection tasks it wakes, wait
            // in this worker's slot, which no other worker takes, until this
            // task yields.
            if i % 256 == 0 {
                tokio::task::yield_now().await;
            }
            let mut next = memo.after(&e.schedule, t);
            let mut passed = 0;
            while let Some(n) = next.filter(|n| *n <= now) {
                passed += 1;
                if passed > MAX_LATE_TICKS {
                    next = memo.after(&e.schedule, now);
                    self.stale = true;
                    break;
                }
                late.push((id, n, e.version));
                next = memo.after(&e.schedule, n);
            }
            e.next = next.filter(|_| !e.paused);
            if let Some(n) = e.next {
                self.wheel.insert((n, Item::Tick(id)));
            }
            self.jobs.insert(id, e);
        }
        // One claim for the due and the late ticks, so `overlap = forbid`
        // sees a job's ticks together.
        ticks.extend(late);
        self.claim(ticks);
    }

    /// Claims `ticks` in the background. Each node claims the ticks whose
    /// home it is at once, and the others after [`FAILOVER`]: the database
    /// does each insert once instead of once per node, and nodes do not queue
    /// behind one another's uncommitted inserts of the same keys.
    fn claim(&self, ticks: Vec<Tick>) {
        if ticks.is_empty() {
            return;
        }
        let me = self.st.cron.node;
        let (mine, others): (Vec<Tick>, Vec<Tick>) = ticks
            .into_iter()
            .partition(|t| home(t.0, &self.peers).is_none_or(|h| h == me));
        if !mine.is_empty() {
            tokio::spawn(claim_ticks(self.st.clone(), mine, "schedule"));
        }
        if !others.is_empty() {
            let st = self.st.clone();
            tokio::spawn(async move {
                tokio::time::sleep(FAILOVER).await;
                claim_ticks(st, others, "schedule").await;
            });
        }
    }

    /// Renews this node's leases (abandoning attempts whose lease was lost),
    /// reaps lost attempts, picks up queued ones, and (when `prune`) trims
    /// history. Bounded: a stuck database holds the loop for `db_wait` at most.
    async fn upkeep(&mut self, prune: bool) {
        let st = self.st.clone();
        let r = async {
            let c = st.cron.pool.get().await?;
            let mine: Vec<i64> = st.cron.running.lock().keys().copied().collect();
            if !mine.is_empty() {
                let kept: HashSet<i64> = c
                    .query(
                        "UPDATE wasmbase.cron_runs SET lease_until = now() + make_interval(secs => $2) \
                         WHERE id = ANY($1) AND status = 'running' AND node = $3 RETURNING id",
                        &[&mine, &st.cron.lease.as_secs_f64(), &st.cron.node],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let running = st.cron.running.lock();
                for id in mine.iter().filter(|id| !kept.contains(id)) {
                    if let Some(token) = running.get(id) {
                        // Reaped (lost) or ended meanwhile: stop working on it.
                        token.cancel();
                    }
                }
            }
            // This node runs cron; which others do (seen within a lease).
            let peers: Vec<uuid::Uuid> = c
                .query(
                    "WITH me AS (INSERT INTO wasmbase.cron_nodes (node) VALUES ($1) \
                       ON CONFLICT (node) DO UPDATE SET seen_at = now()) \
                     SELECT node FROM wasmbase.cron_nodes WHERE seen_at > now() - make_interval(secs => $2) \
                     UNION SELECT $1::uuid",
                    &[&st.cron.node, &st.cron.lease.as_secs_f64()],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let reaped: Vec<(i64, bool)> = c
                .query("SELECT job, alerts FROM wasmbase.cron_reap()", &[])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            if !reaped.is_empty() {
                tracing::warn!(attempts = reaped.len(), "cron: attempts lost by their node");
                let mut jobs: Vec<i64> = reaped.iter().filter(|r| r.1).map(|r| r.0).collect();
                jobs.sort_unstable();
                jobs.dedup();
                let st = st.clone();
                tokio::spawn(async move {
                    for job in jobs {
                        super::alerts::check(&st, job).await;
                    }
                });
            }
            let pending = c
                .query(
                    "SELECT id, due_at FROM wasmbase.cron_runs WHERE status = 'pending'",
                    &[],
                )
                .await?;
            if prune {
                let cfg = &st.config.cron;
                let n = c
                    .execute(
                        "DELETE FROM wasmbase.cron_runs WHERE status NOT IN ('pending', 'running') \
                         AND (created_at < now() - make_interval(days => $1) \
                              OR id IN (SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY job_id ORDER BY id DESC) AS n \
                                        FROM wasmbase.cron_runs) x WHERE x.n > $2)) \
                         AND id NOT IN (SELECT DISTINCT ON (job_id) id FROM wasmbase.cron_runs \
                                        WHERE attempt = 1 AND trigger IN ('schedule', 'missed') \
                                          AND job_id IN (SELECT id FROM wasmbase.cron_jobs) \
                                        ORDER BY job_id, scheduled_for DESC)",
                        &[&(cfg.history_days as i32), &(cfg.history_per_job as i64)],
                    )
                    .await?;
                if n > 0 {
                    tracing::debug!(runs = n, "cron: pruned history");
                }
            }
            anyhow::Ok((pending, peers))
        };
        match tokio::time::timeout(self.db_wait, r).await {
            Ok(Ok((pending, mut peers))) => {
                peers.sort_unstable();
                self.peers = peers;
                for r in pending {
                    self.enqueue(r.get(0), r.get(1));
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "cron: upkeep");
                self.stale = true;
            }
            Err(_) => {
                tracing::warn!("cron: upkeep took too long");
                self.stale = true;
            }
        }
    }
}

/// The claim: insert attempt 1 of each tick; a tick another node claimed
/// conflicts and is dropped. A tick of a paused or deleted job, or of an
/// older version of its definition (this node's view may be a moment old), is
/// not claimed. Under `overlap = forbid`, a tick that comes while the job's
/// previous attempt runs (or waits) is `skipped`, and of several ticks of one
/// job in one claim only the first runs: the others are `skipped`, or, for
/// missed ticks being caught up, `pending` (they run one after another).
/// Returns what this node won: attempts to run now and attempts queued.
const CLAIM_TICKS: &str = "\
WITH t AS (
  SELECT t.*, row_number() OVER (PARTITION BY t.job_id ORDER BY t.at) AS rn
    FROM unnest($1::bigint[], $2::timestamptz[], $3::bigint[]) AS t(job_id, at, version)
),
ins AS (
  INSERT INTO wasmbase.cron_runs (job_id, job_name, scheduled_for, attempt, status, trigger, due_at, node, started_at, lease_until, finished_at, duration_ms, error)
  SELECT j.id, j.name, t.at, 1, s.status, $4, t.at,
         CASE WHEN s.status = 'running' THEN $5::uuid END,
         CASE WHEN s.status = 'running' THEN clock_timestamp() END,
         CASE WHEN s.status = 'running' THEN now() + make_interval(secs => $6) END,
         CASE WHEN s.status = 'skipped' THEN now() END,
         CASE WHEN s.status = 'skipped' THEN 0 END,
         CASE WHEN s.status = 'skipped' THEN 'skipped: the previous run of this job was still running (overlap = forbid)' END
    FROM t JOIN wasmbase.cron_jobs j ON j.id = t.job_id AND j.version = t.version AND NOT j.paused
    CROSS JOIN LATERAL (SELECT CASE
        WHEN j.overlap = 'forbid' AND (t.rn > 1 OR EXISTS (
          SELECT 1 FROM wasmbase.cron_runs r WHERE r.job_id = j.id AND r.status IN ('running', 'pending')))
        THEN CASE WHEN $4 = 'missed' THEN 'pending' ELSE 'skipped' END
        ELSE 'running' END AS status) s
  ON CONFLICT (job_id, scheduled_for, attempt) DO NOTHING
  RETURNING id, run_id, job_id, scheduled_for, attempt, status, due_at
)
SELECT ins.id, ins.run_id, ins.scheduled_for, ins.attempt, ins.status, ins.due_at, j.id AS job_id, j.name, j.kind, j.spec, j.timeout_ms
  FROM ins JOIN wasmbase.cron_jobs j ON j.id = ins.job_id
 WHERE ins.status IN ('running', 'pending')";

/// Takes queued attempts (retries, manual runs, missed ticks waiting their
/// turn) that are due and that no other node took. Under `overlap = forbid`
/// only the waiting attempt of a job with the earliest tick starts, and only when none of its
/// attempts runs; the others wait for the announcement `cron_finish` makes.
const CLAIM_QUEUED: &str = "\
UPDATE wasmbase.cron_runs r
   SET status = 'running', node = $2, started_at = clock_timestamp(), lease_until = now() + make_interval(secs => $3)
  FROM wasmbase.cron_jobs j
 WHERE r.id = ANY($1) AND r.status = 'pending' AND r.due_at <= now() AND j.id = r.job_id
   AND (j.overlap = 'allow' OR (
        NOT EXISTS (SELECT 1 FROM wasmbase.cron_runs o WHERE o.job_id = r.job_id AND o.status = 'running')
        AND r.id = (SELECT p.id FROM wasmbase.cron_runs p WHERE p.job_id = r.job_id AND p.status = 'pending' AND p.due_at <= now()
                    ORDER BY p.scheduled_for, p.attempt LIMIT 1)))
RETURNING r.id, r.run_id, r.scheduled_for, r.attempt, r.status, r.due_at, j.id AS job_id, j.name, j.kind, j.spec, j.timeout_ms";

/// `ticks` in chunks of about [`CLAIM_CHUNK`], each job's ticks in one chunk
/// and in time order (so `overlap = forbid` sees them in one statement).
fn chunks_by_job(mut ticks: Vec<Tick>) -> Vec<Vec<Tick>> {
    ticks.sort_unstable_by_key(|t| (t.0, t.1));
    let mut out: Vec<Vec<Tick>> = Vec::new();
    let mut cur: Vec<Tick> = Vec::new();
    for t in ticks {
        if cur.len() >= CLAIM_CHUNK && cur.last().is_some_and(|l| l.0 != t.0) {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(t);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Claims `ticks` in chunks sent side by side (as many at a time as the
/// scheduler's pool has connections), and starts what they won. Why not one
/// after another: each chunk would wait for the previous one's answer
/// (docs/CRON.md, "How fast a tick is claimed").
async fn claim_ticks(st: AppState, ticks: Vec<Tick>, trigger: &'static str) {
    // Every node sees the same ticks in the same order; each starts at its
    // own chunk, so nodes insert different rows at first instead of queueing
    // behind one another's uncommitted inserts of the same keys.
    let mut chunks = chunks_by_job(ticks);
    let start = (st.cron.node.as_u128() % chunks.len().max(1) as u128) as usize;
    chunks.rotate_left(start);
    // No more at once than the pool has connections: a chunk queued for a
    // connection longer than the pool's wait would fail (its ticks left to
    // the missed-tick policy), and upkeep (lease renewals) takes the next
    // free connection instead of waiting behind every chunk of a large catch-up.
    let side_by_side = st.cron.pool.status().max_size.max(1);
    let mut claims = futures::stream::iter(chunks)
        .map(|chunk| claim_chunk(st.clone(), chunk, trigger))
        .buffer_unordered(side_by_side);
    // What the claims won starts once they are all in: attempts started
    // meanwhile would share the cores and the database with the claims still
    // to come, and delay every tick behind them. Past [`HOLD_STARTS`] (a slow
    // claim), what is in starts, and each later claim's attempts as it comes
    // (their leases run from the claim and are renewed only once started).
    let hold_until = tokio::time::Instant::now() + HOLD_STARTS;
    let mut held: Vec<tokio_postgres::Row> = Vec::new();
    loop {
        tokio::select! {
            rows = claims.next() => match rows {
                Some(rows) => {
                    held.extend(rows);
                    if tokio::time::Instant::now() >= hold_until {
                        start_all(&st, std::mem::take(&mut held));
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(hold_until), if !held.is_empty() => {
                start_all(&st, std::mem::take(&mut held));
            }
        }
    }
    start_all(&st, held);
}

/// Longest the attempts won by one tick's first claims wait for its other
/// claims before they start.
const HOLD_STARTS: Duration = Duration::from_millis(500);

/// One chunk's claim statement; returns what it won (none if it failed).
async fn claim_chunk(
    st: AppState,
    chunk: Vec<Tick>,
    trigger: &'static str,
) -> Vec<tokio_postgres::Row> {
    let ids: Vec<i64> = chunk.iter().map(|t| t.0).collect();
    let ats: Vec<DateTime<Utc>> = chunk.iter().map(|t| t.1).collect();
    let versions: Vec<i64> = chunk.iter().map(|t| t.2).collect();
    st.cron
        .claim_tries
        .fetch_add(ids.len() as u64, Ordering::Relaxed);
    let r = async {
        let c = st.cron.pool.get().await?;
        // Prepared once per connection: a tick's claim is one round trip,
        // not a parse and then an execution.
        let statement = c.prepare_cached(CLAIM_TICKS).await?;
        let rows = c
            .query(
                &statement,
                &[
                    &ids,
                    &ats,
                    &versions,
                    &trigger,
                    &st.cron.node,
                    &st.cron.lease.as_secs_f64(),
                ],
            )
            .await?;
        anyhow::Ok(rows)
    };
    match r.await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), ticks = ids.len(), "cron: claiming ticks failed; the missed-tick policy applies once the database answers");
            st.cron.resync();
            Vec::new()
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

/// Starts the attempts this node won; hands the ones queued behind a running
/// attempt to its own scheduler.
fn start_all(st: &AppState, rows: Vec<tokio_postgres::Row>) {
    for r in rows {
        if r.get::<_, &str>("status") == "pending" {
            st.cron.on_queued(r.get("id"), r.get("due_at"));
            continue;
        }
        match Claimed::from_row(&r) {
            Ok(c) => exec::start(st.clone(), c),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cron: a claimed attempt is unreadable")
            }
        }
    }
}
