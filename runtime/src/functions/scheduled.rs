//! A function's scheduled entry point, `wasmbase:platform/cron-handler`: what
//! its `[[cron]]` entries call (docs/CRON.md). The call takes the same steps
//! as an HTTP call (`invoke`): admission under the function's and the node's
//! caps, a fresh instance with the manifest's memory cap, the epoch budget
//! and a wall-clock timeout, the grants of `function.toml`, and an invocation
//! log record. Only the principal differs: service_role unless the entry says
//! `role = "anon"`.

use super::admission;
use super::instance::{self, Failure};
use super::invoke;
use super::load::Loaded;
use super::record::{self, Recorder};
use crate::server::state::AppState;
use std::sync::Arc;
use std::time::Duration;
use wasmbase_host_api::guest::LogLine;
use wasmbase_host_api::Principal;

/// Generated bindings of world `wasmbase:platform/cron` (the export only).
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasmbase:platform/cron",
        exports: { default: async },
    });
}

pub use bindings::exports::wasmbase::platform::cron_handler::ScheduleEvent;
pub use bindings::CronPre;

/// How one scheduled call ended.
pub struct Outcome {
    /// `Err` carries the handler's error or what stopped it.
    pub result: Result<(), String>,
    /// The wall-clock timeout or the CPU budget ended it.
    pub timed_out: bool,
    /// What the guest logged.
    pub logs: Vec<LogLine>,
}

fn failed(message: String) -> Outcome {
    Outcome {
        result: Err(message),
        timed_out: false,
        logs: Vec::new(),
    }
}

/// Calls `f`'s cron handler with `event` as `caller`, within `timeout`.
pub async fn call(
    st: &AppState,
    f: Arc<Loaded>,
    event: ScheduleEvent,
    caller: Principal,
    timeout: Duration,
    log_tap: Option<tokio::sync::mpsc::UnboundedSender<LogLine>>,
) -> Outcome {
    let name: Arc<str> = Arc::from(f.manifest.name.as_str());
    let Some(pre) = f.cron.clone() else {
        return failed(format!(
            "function {name} does not export wasmbase:platform/cron-handler"
        ));
    };
    let inputs = invoke::inputs(st, &f, caller);
    let permits = match admission::admit(&f, inputs.global.clone()) {
        Ok(p) => p,
        Err(e) => return failed(format!("function {name}: {} ({})", e.message, e.code)),
    };
    let rid = event.run_id.clone();
    let mut guest = instance::call_ctx(
        name.clone(),
        inputs.caller,
        rid.clone(),
        admission::db_share(&f, inputs.db),
        inputs.storage,
        inputs.realtime,
        timeout,
    );
    guest.log_tap = log_tap;
    let mut store = instance::new_store(&f, guest, &inputs.env, inputs.tick, timeout);
    let recorder = Recorder::start(st.clone(), name.clone(), f.version);
    let run = async {
        let handler = pre.instantiate_async(&mut store).await?;
        handler
            .wasmbase_platform_cron_handler()
            .call_on_schedule(&mut store, &event)
            .await
    };
    let ended = tokio::time::timeout(timeout, run).await;
    drop(permits);
    let (call, result) = match ended {
        Ok(Ok(Ok(()))) => (Ok(()), Ok(())),
        Ok(Ok(Err(message))) => (Ok(()), Err(format!("the handler failed: {message}"))),
        Ok(Err(e)) => {
            let f = instance::failure(&store, e);
            let m = format!("function {name}: {f}");
            (Err(f), Err(m))
        }
        Err(_) => (
            Err(Failure::Timeout),
            Err(format!("function {name}: wall-clock timeout")),
        ),
    };
    let timed_out = matches!(call, Err(Failure::Timeout | Failure::Cpu));
    let logs = std::mem::take(&mut store.data_mut().guest.logs);
    // Closes the live log: its forwarder flushes and ends.
    drop(store);
    let status = match (&call, &result) {
        (Ok(()), Ok(())) => 200,
        (Ok(()), Err(_)) => 500,
        (Err(f), _) => f.error(&name, timeout.as_millis() as u64).status.as_u16(),
    };
    recorder.record(status, record::outcome(&call), logs.clone(), rid);
    Outcome {
        result,
        timed_out,
        logs,
    }
}
