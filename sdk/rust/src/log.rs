//! Structured logs, captured per invocation (`wasmbase functions logs NAME`).

pub use crate::bindings::wasmbase::platform::log::Level;

/// Writes one log line with key/value fields.
pub fn write(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    crate::bindings::wasmbase::platform::log::log(level, message, &fields);
}

/// `info!("saved {}", id)`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, &format!($($arg)*), &[]) };
}

/// `warn!("slow: {}", ms)`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, &format!($($arg)*), &[]) };
}

/// `error!("failed: {}", e)`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, &format!($($arg)*), &[]) };
}

/// `debug!("x = {}", x)`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, &format!($($arg)*), &[]) };
}
