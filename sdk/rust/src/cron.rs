//! Scheduled handlers: implement [`CronHandler`] and call
//! [`export_cron!`](crate::export_cron), then list the schedules in
//! `function.toml`:
//!
//! ```toml
//! [[cron]]
//! name = "nightly-report"
//! schedule = "0 3 * * *"
//! timezone = "Europe/Berlin"
//! payload = { kind = "daily" }
//! ```
//!
//! ```ignore
//! use wasmbase_sdk::{CronHandler, ScheduleEvent};
//! struct Jobs;
//! impl CronHandler for Jobs {
//!     fn on_schedule(event: ScheduleEvent) -> Result<(), String> {
//!         wasmbase_sdk::info!("{} for {}", event.name, event.scheduled_at);
//!         Ok(())
//!     }
//! }
//! wasmbase_sdk::export_cron!(Jobs);
//! ```
//!
//! An attempt that returns `Err` (or traps, or runs past its timeout) is
//! recorded as failed and retried per the entry's `max_attempts`. A retry
//! carries the same `run_id` and a higher `attempt`: use them to make the work
//! idempotent.

use crate::bindings::cron::exports::wasmbase::platform::cron_handler as wit;

/// One attempt of one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleEvent {
    /// The `[[cron]]` entry's name.
    pub name: String,
    /// The tick, RFC 3339 in UTC.
    pub scheduled_at: String,
    /// The same for every attempt of this tick.
    pub run_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The entry's `payload` as JSON text.
    pub payload: Option<String>,
}

impl ScheduleEvent {
    /// The payload parsed as `T` (`None` when the entry has none).
    pub fn payload_json<T: serde::de::DeserializeOwned>(&self) -> Option<Result<T, serde_json::Error>> {
        self.payload.as_deref().map(serde_json::from_str)
    }
}

/// A function's scheduled entry point.
pub trait CronHandler {
    /// Handles one attempt of a tick of one of the function's schedules.
    fn on_schedule(event: ScheduleEvent) -> Result<(), String>;
}

#[doc(hidden)]
pub fn event(e: wit::ScheduleEvent) -> ScheduleEvent {
    ScheduleEvent {
        name: e.name,
        scheduled_at: e.scheduled_at,
        run_id: e.run_id,
        attempt: e.attempt,
        payload: e.payload,
    }
}
