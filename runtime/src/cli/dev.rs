//! `wasmbase dev`: everything on a laptop with no configuration.
//!
//! Starts (or adopts) the private PostgreSQL under `./.wasmbase/pg` unless
//! `DATABASE_URL` is set, generates secrets on first run, starts the server,
//! makes sure a publishable and a secret key exist, writes `./.wasmbase/env` and
//! prints it. Ctrl-C/SIGTERM drains requests and stops PostgreSQL cleanly.

use crate::config::{Config, Mode};
use crate::embedded_pg::{self, Cluster};
use crate::project::{self, DevSecrets, EnvFile};
use crate::server::serve_signal_or;
use crate::{logging, server};
use anyhow::{Context, Result};
use std::path::PathBuf;
use wasmbase_host_api::keys::{self, KeyKind};

/// Arguments of `dev`.
#[derive(clap::Args)]
pub struct Args {
    /// Config file (optional; defaults work without one).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// Runs the dev server until Ctrl-C.
pub async fn run(a: Args) -> Result<()> {
    let mut config = Config::load(a.config.as_deref(), a.config.is_some(), Mode::Dev)?;
    logging::init(&config, Mode::Dev);
    let root = std::env::current_dir()?;
    let dir = project::state_dir(&root);
    std::fs::create_dir_all(&dir)?;
    let secrets = DevSecrets::load_or_create(&dir)?;
    config
        .auth
        .jwt_secret
        .get_or_insert_with(|| secrets.jwt_secret.clone());
    // Sign-ups work without clicking a link locally (like `supabase start`).
    config.auth.autoconfirm.get_or_insert(true);
    // Guest sessions (`signInAnonymously`) work locally, as in `supabase start`.
    config.auth.anonymous_sign_ins.get_or_insert(true);
    // Mail without SMTP lands in the dev mailbox (`wasmbase mail`); serve needs this said.
    config.auth.dev_mailbox.get_or_insert(true);
    // Functions in ./functions are built, loaded and hot-reloaded.
    config.functions.build.get_or_insert(true);
    config.functions.watch.get_or_insert(true);
    config.functions.local.get_or_insert(true);
    if config.functions.secrets_key.is_none() {
        config.functions.secrets_key = secrets.secrets_key.clone();
    }
    config
        .functions
        .target_dir
        .get_or_insert_with(|| dir.join("target"));
    config
        .functions
        .cache_dir
        .get_or_insert_with(|| dir.join("cache"));
    config
        .storage
        .local_dir
        .get_or_insert_with(|| dir.join("storage"));

    let cluster = match &config.database.url {
        Some(_) => None,
        None => {
            let opts = embedded_pg::Options {
                dir: dir.clone(),
                fast: false,
            };
            let cluster =
                tokio::task::spawn_blocking(move || embedded_pg::ensure_running(&opts)).await??;
            ensure_database(&cluster, "wasmbase").await?;
            config.database.url = Some(cluster.superuser_url("wasmbase"));
            config.database.authenticator_password = Some(secrets.authenticator_password.clone());
            config.database.auth_password = secrets.auth_password.clone();
            config.database.functions_password = secrets.functions_password.clone();
            Some(cluster)
        }
    };
    config.validate()?;
    let srv = server::start(config).await?;
    let url = format!("http://{}", srv.addr);
    tokio::select! {
        _ = srv.wait_ready() => {}
        _ = crate::cli::serve::shutdown_signal() => {
            srv.shutdown().await;
            stop(cluster);
            return Ok(());
        }
    }
    let env = dev_env(&srv, &dir, &url).await?;
    project::write_env(&dir, &env)?;
    println!(
        "\nWasmbase is running.\n\n{}\n  (saved in {}/env; `wasmbase status` prints it again)\n",
        project::table(&env),
        project::STATE_DIR
    );
    serve_signal_or(srv.cancel_token()).await;
    tracing::info!("shutting down");
    srv.shutdown().await;
    stop(cluster);
    Ok(())
}

fn stop(cluster: Option<Cluster>) {
    if let Some(c) = cluster {
        match c.stop() {
            Ok(()) => tracing::info!("PostgreSQL stopped"),
            Err(e) => tracing::warn!("stopping PostgreSQL: {e:#}"),
        }
    }
}

/// Creates database `name` in the cluster if it does not exist.
async fn ensure_database(cluster: &Cluster, name: &str) -> Result<()> {
    let (client, conn) =
        tokio_postgres::connect(&cluster.superuser_url("postgres"), tokio_postgres::NoTls)
            .await
            .context("connecting to the private PostgreSQL")?;
    tokio::spawn(conn);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        // The name is ours (a constant), not user input.
        if let Err(e) = client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
        {
            if e.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Builds the env table, creating dev keys if the saved ones are missing or revoked.
async fn dev_env(srv: &server::RunningServer, dir: &std::path::Path, url: &str) -> Result<EnvFile> {
    let st = &srv.state;
    let old = project::read_env(dir);
    let client = st.system.get().await?;
    let key = |name: &str, kind: KeyKind| {
        let saved = project::env_get(&old, name).map(str::to_string);
        let client = &client;
        async move {
            if let Some(k) = saved {
                if st.gate.keys().resolve(&k) == Ok(kind) {
                    return anyhow::Ok(k);
                }
            }
            let (_, k) = keys::create(&***client, kind, "dev", "wasmbase dev").await?;
            anyhow::Ok(k)
        }
    };
    let publishable = key("PUBLISHABLE_KEY", KeyKind::Publishable).await?;
    let secret = key("SECRET_KEY", KeyKind::Secret).await?;
    st.gate.keys().reload(&**client).await?;
    let jwt = st.gate.jwt();
    let legacy = |role: &str| -> Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let claims = serde_json::json!({"role": role, "iss": jwt.issuer(), "iat": now, "exp": now + 10 * 365 * 24 * 3600});
        Ok(jwt.sign_hs256(&claims)?)
    };
    Ok(vec![
        ("WASMBASE_URL".into(), url.to_string()),
        ("PUBLISHABLE_KEY".into(), publishable),
        ("SECRET_KEY".into(), secret),
        ("ANON_KEY".into(), legacy("anon")?),
        ("SERVICE_KEY".into(), legacy("service_role")?),
        (
            "DATABASE_URL".into(),
            st.config.database.url.clone().unwrap_or_default(),
        ),
        (
            "JWT_SECRET".into(),
            st.config.auth.jwt_secret.clone().unwrap_or_default(),
        ),
    ])
}
