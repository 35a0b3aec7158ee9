//! `wasmbase migrate`.

use super::{cli_config, owner_client, ConfigArg};

/// Applies pending platform and project migrations and says which.
pub async fn run(a: ConfigArg) -> anyhow::Result<()> {
    let cfg = cli_config(a.config.as_deref())?;
    let mut client = owner_client(&cfg).await?;
    let report = crate::migrate::run(&mut client, Some(&cfg.migrations.dir)).await?;
    for m in &report.platform {
        println!("applied platform migration {m}");
    }
    for m in &report.user {
        println!("applied {}", cfg.migrations.dir.join(m).display());
    }
    if report.platform.is_empty() && report.user.is_empty() {
        println!("database is up to date");
    }
    Ok(())
}
