//! The record step of a call: one invocation log record (status, outcome,
//! duration, the guest's log lines) pushed to the node's log sink when the
//! guest is done, which for a streaming body is after the response head has
//! gone out. Kept apart so every way a call ends (answered, answered with an
//! error, no answer, failed) writes the same record in one place, and so the
//! record costs nothing but a queue push on the hot path (the writer batches
//! them; see `logs`).

use super::instance::Failure;
use super::logs::Record;
use crate::server::state::AppState;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use wasmbase_host_api::guest::LogLine;

/// What one call's record needs besides how it ended; started when the
/// instance is ready, so the duration is the guest's.
pub(super) struct Recorder {
    state: AppState,
    name: Arc<str>,
    version: Option<i32>,
    started: Instant,
}

impl Recorder {
    /// Starts timing a call of `name` (at `version`, when deployed).
    pub(super) fn start(state: AppState, name: Arc<str>, version: Option<i64>) -> Recorder {
        Recorder {
            state,
            name,
            version: version.map(|v| v as i32),
            started: Instant::now(),
        }
    }

    /// Pushes the call's record, unless invocation logs are off.
    pub(super) fn record(
        self,
        status: u16,
        outcome: &'static str,
        lines: Vec<LogLine>,
        request_id: String,
    ) {
        if !self.state.config.functions.invocation_logs {
            return;
        }
        self.state.functions.logs.push(Record {
            at: SystemTime::now(),
            name: self.name.to_string(),
            version: self.version,
            request_id,
            status,
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            outcome,
            lines,
        });
    }
}

/// The record's `outcome` for how the guest ended.
pub(super) fn outcome(r: &Result<(), Failure>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(Failure::Timeout) | Err(Failure::Cpu) => "timeout",
        Err(Failure::Memory) => "memory",
        Err(Failure::Trap(_)) => "trap",
        Err(Failure::Stack) => "stack_overflow",
    }
}
