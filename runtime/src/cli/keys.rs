//! `wasmbase keys`: the CLI face of host-api's key functions (the admin API's too).

use super::{cli_config, owner_client};
use anyhow::bail;
use wasmbase_host_api::audit::Actor;
use wasmbase_host_api::keys::{self, KeyKind};

/// Arguments of `keys`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// Config file (for database.url); default wasmbase.toml or .wasmbase/env.
    #[arg(long, short, global = true)]
    config: Option<std::path::PathBuf>,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// List keys (never their secret part).
    List,
    /// Create a key and print it once.
    Create {
        /// publishable (anon, safe in apps) or secret (service_role, servers only).
        #[arg(long)]
        kind: String,
        /// A label.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Replace a key with a new one of the same kind and revoke the old one.
    Rotate {
        /// Key id (from `keys list`).
        id: uuid::Uuid,
    },
    /// Revoke a key; every node refuses it within a second.
    Revoke {
        /// Key id (from `keys list`).
        id: uuid::Uuid,
    },
    /// Print a new ES256 private key (PEM) for `auth.signing_keys`.
    SigningKey,
}

/// Runs a keys subcommand against the owner database.
pub async fn run(a: Args) -> anyhow::Result<()> {
    if let Cmd::SigningKey = a.cmd {
        print!("{}", wasmbase_host_api::jwt::generate_es256_pem());
        return Ok(());
    }
    let cfg = cli_config(a.config.as_deref())?;
    let mut client = owner_client(&cfg).await?;
    crate::migrate::run(&mut client, None).await?;
    let run = super::run_id();
    let actor = Actor::new("cli", Some(run.as_str()));
    match a.cmd {
        Cmd::List => {
            println!(
                "{:<36}  {:<11}  {:<26}  {:<20}  {:<20}  NAME",
                "ID", "KIND", "KEY", "CREATED", "REVOKED"
            );
            for k in keys::list(&client).await? {
                println!(
                    "{:<36}  {:<11}  {:<26}  {:<20}  {:<20}  {}",
                    k.id,
                    k.kind.as_str(),
                    k.prefix,
                    k.created_at,
                    k.revoked_at.as_deref().unwrap_or("-"),
                    k.name
                );
            }
        }
        Cmd::Create { kind, name } => {
            let Some(kind) = KeyKind::parse(&kind) else {
                bail!("--kind must be publishable or secret")
            };
            let (info, key) = keys::create(&client, kind, &name, actor).await?;
            eprintln!(
                "created {} key {} (shown once; only its hash is stored)",
                info.kind.as_str(),
                info.id
            );
            println!("{key}");
        }
        Cmd::Rotate { id } => match keys::rotate(&mut client, id, actor).await? {
            Some((info, key)) => {
                eprintln!(
                    "revoked {id}; new {} key {} (shown once)",
                    info.kind.as_str(),
                    info.id
                );
                println!("{key}");
            }
            None => bail!("no active key with id {id}"),
        },
        Cmd::Revoke { id } => match keys::revoke(&client, id, actor).await? {
            Some(_) => println!("revoked {id}"),
            None => bail!("no active key with id {id}"),
        },
        Cmd::SigningKey => unreachable!("handled above"),
    }
    Ok(())
}
