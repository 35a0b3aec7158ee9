//! `wasmbase mail`: the dev mailbox, so confirmation and magic links can be
//! followed by hand (the MailHog role).

use super::{cli_config, owner_client};

/// Arguments of `mail`.
#[derive(clap::Args)]
pub struct Args {
    /// Only mail to this address.
    #[arg(long)]
    to: Option<String>,
    /// How many messages, newest first.
    #[arg(long, default_value_t = 5)]
    last: i64,
    /// Config file (for database.url); default wasmbase.toml or .wasmbase/env.
    #[arg(long, short)]
    config: Option<std::path::PathBuf>,
}

/// Prints the newest messages with their text bodies (links and codes).
pub async fn run(a: Args) -> anyhow::Result<()> {
    let cfg = cli_config(a.config.as_deref())?;
    let client = owner_client(&cfg).await?;
    let mail = crate::api::auth::mail::mailbox(&client, a.to.as_deref(), a.last).await?;
    let list = mail.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no mail");
    }
    for m in list {
        println!(
            "── #{} {} → {}\n   {}\n\n{}\n",
            m["id"],
            m["created_at"].as_str().unwrap_or(""),
            m["to"].as_str().unwrap_or(""),
            m["subject"].as_str().unwrap_or(""),
            m["text"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
