//! Cron: scheduled SQL, HTTP and function jobs on N nodes without a leader
//! (docs/CRON.md).
//!
//! - [`schedule`]: when a job is due (cron expressions, intervals, zones).
//! - [`job`]: definitions, their rules and their rows.
//! - [`scheduler`]: each node's timer over every job; claims ticks with a
//!   unique insert, renews leases, reaps lost attempts, runs retries.
//! - [`exec`]: runs one attempt of each kind and records it.
//! - [`runs`]: the run history as the admin API and the CLI read it.

pub mod alerts;
pub mod exec;
pub mod finish;
pub mod job;
pub mod logs;
pub mod net;
pub mod runs;
pub mod schedule;
pub mod scheduler;

use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::mpsc;

/// NOTIFY channel: `job:<id>` when a job changed, `run:<id>` when an attempt
/// was queued (a retry or a manual run).
pub const CHANNEL: &str = "wasmbase_cron";

/// What wakes a node's scheduler besides its timer.
#[derive(Debug)]
pub enum Event {
    /// A job was created, changed or deleted.
    Job(i64),
    /// An attempt was queued, due at this instant.
    Run(i64, chrono::DateTime<chrono::Utc>),
    /// The LISTEN connection was (re)established: notifications may have
    /// been missed, so reload everything.
    Resync,
}

/// This node's cron: the scheduler's inbox and its counters.
pub struct Cron {
    /// The id this node records in the runs it claims.
    pub node: uuid::Uuid,
    events: mpsc::UnboundedSender<Event>,
    inbox: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    /// How long a claimed attempt stays this node's without a renewal.
    pub lease: Duration,
    /// The scheduler's own connections, as the owner: claims, loads and
    /// upkeep only, so a burst of ending attempts never delays a claim. (No
    /// job's SQL runs on them.)
    pub pool: deadpool_postgres::Pool,
    /// Connections, as the owner, for recording attempts: their ends, live
    /// log lines, alerts and `net.http_*` answers.
    pub records: deadpool_postgres::Pool,
    /// HTTP jobs' client (no redirects followed: a 3xx is the job's answer).
    pub http: reqwest::Client,
    /// Attempts running on this node (`cron_runs.id`), whose leases it renews;
    /// cancelling the token abandons an attempt whose lease was lost.
    pub running:
        parking_lot::Mutex<std::collections::HashMap<i64, tokio_util::sync::CancellationToken>>,
    /// Whether this node runs the scheduler (`cron.enabled`); when not, its
    /// inbox is never read and nothing is queued to it.
    enabled: bool,
    /// Attempts this node claimed and started (tests, metrics).
    pub started: AtomicU64,
    /// Ticks this node tried to claim (won or not).
    pub claim_tries: AtomicU64,
    /// Wakes followers of live logs on this node: the attempt id of each
    /// NOTIFY on [`logs::CHANNEL`].
    pub log_wake: tokio::sync::broadcast::Sender<i64>,
    /// The batch writer of attempts' ends ([`finish`]).
    pub finish: mpsc::UnboundedSender<finish::Ending>,
    /// Wakes the `net.http_*` worker (a NOTIFY on [`net::CHANNEL`]).
    pub net_kick: tokio::sync::Notify,
    /// Jobs on this node's timer after its last load (benchmarks wait on it).
    pub scheduled: std::sync::atomic::AtomicUsize,
}

impl Cron {
    /// A node's cron with `node` as its id (spawns its batch writer of
    /// attempts' ends: call it inside the runtime).
    pub fn new(
        node: uuid::Uuid,
        lease: Duration,
        pool: deadpool_postgres::Pool,
        records: deadpool_postgres::Pool,
        enabled: bool,
    ) -> Cron {
        let (events, rx) = mpsc::unbounded_channel();
        // The writer lives as long as this node's cron (it ends with the
        // last sender).
        let (finish, endings) = mpsc::unbounded_channel();
        tokio::spawn(finish::writer(records.clone(), endings));
        Cron {
            finish,
            node,
            events,
            inbox: parking_lot::Mutex::new(Some(rx)),
            lease,
            pool,
            records,
            running: Default::default(),
            enabled,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent("wasmbase-cron")
                .build()
                .unwrap_or_default(),
            started: AtomicU64::new(0),
            claim_tries: AtomicU64::new(0),
            scheduled: Default::default(),
            log_wake: tokio::sync::broadcast::channel(1024).0,
            net_kick: Default::default(),
        }
    }

    /// Hands a NOTIFY on [`CHANNEL`] (`job:<id>`, `run:<id>:<due ms>`) to
    /// the scheduler.
    pub fn on_notify(&self, payload: &str) {
        let mut parts = payload.split(':');
        let ev = match (parts.next(), parts.next(), parts.next()) {
            (Some("job"), Some(id), None) => id.parse().ok().map(Event::Job),
            (Some("run"), Some(id), Some(ms)) => match (id.parse(), ms.parse::<i64>()) {
                (Ok(id), Ok(ms)) => {
                    chrono::DateTime::from_timestamp_millis(ms).map(|t| Event::Run(id, t))
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(ev) = ev {
            self.send(ev);
        }
    }

    /// Tells the scheduler that notifications may have been missed.
    pub fn resync(&self) {
        self.send(Event::Resync);
    }

    /// An attempt this node queued itself (its NOTIFY reaches every node too).
    pub fn on_queued(&self, id: i64, due: chrono::DateTime<chrono::Utc>) {
        self.send(Event::Run(id, due));
    }

    fn send(&self, ev: Event) {
        if self.enabled {
            let _ = self.events.send(ev);
        }
    }

    /// The scheduler's inbox (taken once, by the scheduler task).
    fn take_inbox(&self) -> Option<mpsc::UnboundedReceiver<Event>> {
        self.inbox.lock().take()
    }
}
