//! Log setup: JSON lines in `serve`, human-readable in `dev`. Nothing in the
//! codebase logs keys, passwords, tokens or Authorization values; the access log
//! records method, route, status and duration only.

use crate::config::{Config, Mode};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (no-op if one is already installed, e.g. in tests).
pub fn init(config: &Config, mode: Mode) {
    let level = &config.log.level;
    // Quiet the libraries unless the user asked for them by name.
    let filter = EnvFilter::try_new(format!("{level},tokio_postgres=warn,hyper=warn,h2=warn"))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match config.log.format.as_deref() {
        Some(f) => f == "json",
        None => mode == Mode::Serve,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
}
