//! `wasmbase serve`: production mode.

use crate::config::{Config, Mode};
use crate::{logging, server};
use std::path::PathBuf;

/// Arguments of `serve`.
#[derive(clap::Args)]
pub struct Args {
    /// Path of the config file.
    #[arg(long, short, default_value = "wasmbase.toml")]
    config: PathBuf,
}

/// Runs until SIGINT/SIGTERM, then drains in-flight requests.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let explicit = a.config.as_os_str() != "wasmbase.toml";
    let config = Config::load(Some(&a.config), explicit, Mode::Serve)?;
    config.validate()?;
    logging::init(&config, Mode::Serve);
    let srv = server::start(config).await?;
    tracing::info!(addr = %srv.addr, "wasmbase serve listening");
    shutdown_signal().await;
    tracing::info!("shutting down");
    srv.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
