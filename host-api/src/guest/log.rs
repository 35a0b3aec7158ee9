//! `wasmbase:platform/log`: leveled, structured lines captured per invocation
//! (bounded, so a chatty guest cannot grow memory) and mirrored to the server
//! log with the function name and request id.

use super::bindings::wasmbase::platform::log::{Host, Level};
use super::{GuestCtx, LogLine};

impl Host for GuestCtx {
    async fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        let size = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if size > self.log_budget {
            self.logs_dropped += 1;
            return;
        }
        self.log_budget -= size;
        let lvl = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        let f = &*self.function;
        let rid = &self.request_id;
        match level {
            Level::Debug => tracing::debug!(function = f, request_id = rid, "{message}"),
            Level::Info => tracing::info!(function = f, request_id = rid, "{message}"),
            Level::Warn => tracing::warn!(function = f, request_id = rid, "{message}"),
            Level::Error => tracing::error!(function = f, request_id = rid, "{message}"),
        }
        self.logs.push(LogLine {
            level: lvl,
            message,
            fields,
        });
    }
}
