//! `wasmbase secrets set|list|unset`: env values for functions, encrypted
//! (AES-256-GCM, `functions.secrets_key`) in PostgreSQL so every node sees
//! them. A value is never printed; `set NAME` without `=VALUE` reads it from
//! stdin so it stays out of shell history.

use super::{cli_config, owner_client};
use crate::functions::secrets;
use crate::project;
use anyhow::{bail, Context, Result};
use std::io::Read;
use wasmbase_host_api::audit::Actor;

/// Arguments of `secrets`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// Config file (database.url, functions.secrets_key); default wasmbase.toml or the dev project.
    #[arg(long, short, global = true)]
    config: Option<std::path::PathBuf>,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Store NAME=VALUE (or NAME, reading the value from stdin).
    Set {
        /// NAME=VALUE or NAME.
        assignment: String,
    },
    /// Names and update times (never values).
    List,
    /// Remove a secret.
    Unset {
        /// Name.
        name: String,
    },
}

/// Runs `secrets`.
pub async fn run(a: Args) -> Result<()> {
    let cfg = cli_config(a.config.as_deref())?;
    let mut client = owner_client(&cfg).await?;
    // The audit row's columns (as `wasmbase keys` does).
    crate::migrate::run(&mut client, None).await?;
    let run = super::run_id();
    let actor = Actor::new("cli", Some(run.as_str()));
    match a.cmd {
        Cmd::List => {
            let rows = secrets::list(&client).await?;
            if rows.is_empty() {
                println!("no secrets");
            }
            for (name, at) in rows {
                println!("{name:<32} updated {at}");
            }
        }
        Cmd::Unset { name } => {
            let tx = client.transaction().await?;
            if secrets::unset(&tx, &name, actor).await? {
                tx.commit().await?;
                println!("removed {name}");
            } else {
                bail!("no secret named {name}");
            }
        }
        Cmd::Set { assignment } => {
            let key = match &cfg.functions.secrets_key {
                Some(k) => k.clone(),
                None => project::DevSecrets::load(&project::state_dir(&std::env::current_dir()?))
                    .and_then(|s| s.secrets_key)
                    .context("no `functions.secrets_key` (set WASMBASE_FUNCTIONS_SECRETS_KEY to base64 of 32 random bytes)")?,
            };
            let cipher = secrets::cipher(&key)?;
            let (name, value) = match assignment.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let mut v = String::new();
                    std::io::stdin().read_to_string(&mut v)?;
                    (
                        assignment.clone(),
                        v.trim_end_matches(['\n', '\r']).to_string(),
                    )
                }
            };
            let tx = client.transaction().await?;
            secrets::set(&tx, &cipher, &name, &value, actor).await?;
            tx.commit().await?;
            println!("stored {name} (every node picks it up within a second)");
        }
    }
    Ok(())
}
