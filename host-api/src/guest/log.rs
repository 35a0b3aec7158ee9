//! `wasmbase:platform/log`: leveled, structured lines captured per invocation
//! (bounded, so a chatty guest cannot grow memory) and mirrored to the server
//! log with the function name and request id.

use super::bindings::wasmbase::platform::log::{Host, Level};
use super::{GuestCtx, LogLine};

/// Most log lines one invocation keeps.
const MAX_LINES: usize = 1000;

impl Host for GuestCtx {
    async fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        // Every line and field costs a fixed overhead too, so empty lines cannot
        // be logged for free; at most MAX_LINES lines per invocation.
        let size = 64
            + message.len()
            + fields
                .iter()
                .map(|(k, v)| 32 + k.len() + v.len())
                .sum::<usize>();
        if size > self.log_budget || self.logs.len() >= MAX_LINES {
            self.logs_dropped += 1;
            return;
        }
        self.log_budget -= size;
        // PostgreSQL's jsonb refuses \u0000: a NUL would sink a whole log batch.
        let message = message.replace('\0', "\u{fffd}");
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .map(|(k, v)| (k.replace('\0', "\u{fffd}"), v.replace('\0', "\u{fffd}")))
            .collect();
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
        let line = LogLine {
            level: lvl,
            message,
            fields,
        };
        if let Some(tap) = &self.log_tap {
            let _ = tap.send(line.clone());
        }
        self.logs.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Principal, Role};

    fn ctx() -> GuestCtx {
        GuestCtx {
            caller: Principal::for_role(Role::Anon),
            function: "t".into(),
            request_id: String::new(),
            db: None,
            storage: None,
            realtime: None,
            deadline: std::time::Instant::now(),
            logs: Vec::new(),
            log_budget: 64 * 1024,
            logs_dropped: 0,
            log_tap: None,
        }
    }

    #[tokio::test]
    async fn empty_lines_are_not_free_and_nul_is_replaced() {
        let mut c = ctx();
        for _ in 0..5000 {
            Host::log(&mut c, Level::Info, String::new(), vec![]).await;
        }
        // 64 KiB at 64 bytes a line: 1000 lines at most, the rest counted.
        assert_eq!(c.logs.len(), 1000);
        assert_eq!(c.logs_dropped, 4000);
        let mut c = ctx();
        Host::log(
            &mut c,
            Level::Warn,
            "a\0b".into(),
            vec![("k\0".into(), "v".into())],
        )
        .await;
        assert!(!c.logs[0].message.contains('\0') && !c.logs[0].fields[0].0.contains('\0'));
    }
}
