//! Command-line interface. Every command has a one-line `--help` saying what it does.

mod cron;
mod deploy;
mod dev;
mod fn_new;
mod keys;
mod mail;
mod migrate;
mod policy;
mod secrets;
pub(crate) mod serve;
mod status;
mod storage;
mod token;

use crate::config::{Config, Mode};
use crate::project;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Wasmbase: a Supabase-compatible backend with WebAssembly functions, in one binary.
#[derive(Parser)]
#[command(name = "wasmbase", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything locally: private PostgreSQL under .wasmbase/, no config needed.
    Dev(dev::Args),
    /// Run in production from wasmbase.toml (+ WASMBASE_* env) against external PostgreSQL.
    Serve(serve::Args),
    /// Apply the platform's migrations and the project's db/migrations/*.sql.
    Migrate(ConfigArg),
    /// Add row-level security presets to a table (writes and applies a migration).
    Policy(policy::Args),
    /// Print the local project's URLs and keys and whether its server is up.
    Status,
    /// Manage opaque API keys (sb_publishable_… / sb_secret_…).
    Keys(keys::Args),
    /// Print a signed JWT for testing (anon, authenticated or service_role).
    Token(token::Args),
    /// Show the dev mailbox: auth emails kept when no SMTP server is configured.
    Mail(mail::Args),
    /// Build functions and upload them to a server (new active version).
    Deploy(deploy::DeployArgs),
    /// Deployed functions: list, versions, rollback, logs, delete.
    Functions(deploy::FunctionsArgs),
    /// Encrypted env values for functions: set, list, unset.
    Secrets(secrets::Args),
    /// Storage from the terminal: buckets, ls, cp, rm [-r], sign.
    Storage(storage::Args),
    /// Scheduled jobs: list, add, rm, pause, resume, run, runs, logs.
    Cron(cron::Args),
    /// Scaffold a function: `wasmbase fn new NAME`.
    Fn(fn_new::Args),
    /// Serve a raw hyper hello (benchmark baseline; no middleware, no database).
    #[command(hide = true)]
    BenchHello {
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Serve on this many thread-per-core runtimes (0: one per core), as
        /// the server does, instead of tokio's work-stealing runtime.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Cron figures: tick precision, claims, idle cost (3 nodes in-process).
    #[command(hide = true)]
    BenchCron {
        /// Seconds of 1-second ticks for the precision figure.
        #[arg(long, default_value_t = 20)]
        secs: u64,
    },
    /// Serve a minimal fan-out WebSocket server (realtime benchmark baseline).
    #[command(hide = true)]
    BenchFanout {
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// Upload and download a file directly with aws-sdk-s3 (benchmark baseline).
    #[command(hide = true)]
    BenchS3 {
        /// The file to transfer.
        file: PathBuf,
    },
    /// Transform an image in a plain loop (the baseline of bench/storage-render.sh).
    #[command(hide = true)]
    BenchRender {
        /// The source image.
        file: PathBuf,
        /// The query of the transformation, e.g. `width=400&height=400`.
        #[arg(long, default_value = "width=400&height=400")]
        query: String,
        /// Encode WebP (as for a browser's `Accept`).
        #[arg(long)]
        webp: bool,
        /// Runs timed (after 2 untimed).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// First write a SIDE×SIDE gradient JPEG to `file` (the bench's source).
        #[arg(long)]
        make: Option<u32>,
    },
    /// Time per-request instantiation of a component (benchmark figure).
    #[command(hide = true)]
    BenchInstantiate {
        /// Component file, or a JS/TS function's directory (built first; the
        /// build time is printed too).
        wasm: PathBuf,
    },
}

/// `--config` for commands that read the project configuration.
#[derive(clap::Args)]
pub struct ConfigArg {
    /// Path of the config file (default: wasmbase.toml if present).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Dev(a) => dev::run(a).await,
            Command::Serve(a) => serve::run(a).await,
            Command::Migrate(a) => migrate::run(a).await,
            Command::Policy(a) => policy::run(a).await,
            Command::Status => status::run().await,
            Command::Keys(a) => keys::run(a).await,
            Command::Cron(a) => cron::run(a).await,
            Command::Token(a) => token::run(a),
            Command::Mail(a) => mail::run(a).await,
            Command::Deploy(a) => deploy::deploy(a).await,
            Command::Functions(a) => deploy::functions(a).await,
            Command::Secrets(a) => secrets::run(a).await,
            Command::Storage(a) => storage::run(a).await,
            Command::Fn(a) => fn_new::run(a),
            Command::BenchHello { listen, threads } => {
                crate::bench_hello::serve(listen, threads).await
            }
            Command::BenchFanout { listen } => crate::bench_fanout::serve(listen).await,
            Command::BenchCron { secs } => crate::bench_cron::run(secs).await,
            Command::BenchInstantiate { wasm } => bench_instantiate(&wasm).await,
            Command::BenchS3 { file } => crate::bench_s3::run(&file).await,
            Command::BenchRender {
                file,
                query,
                webp,
                runs,
                make,
            } => bench_render(&file, &query, webp, runs, make),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads config for the CLI's database commands: the file and env, falling back to
/// the local dev project's `.wasmbase/env` and `dev.json` for the database URL and
/// JWT secret, so `wasmbase keys list` works next to a running `wasmbase dev`.
pub(crate) fn cli_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let mut cfg = Config::load(path, path.is_some(), Mode::Serve)?;
    let dir = project::state_dir(&std::env::current_dir()?);
    if cfg.database.url.is_none() {
        let env = project::read_env(&dir);
        cfg.database.url = project::env_get(&env, "DATABASE_URL").map(str::to_string);
    }
    if cfg.auth.jwt_secret.is_none() {
        cfg.auth.jwt_secret = project::DevSecrets::load(&dir).map(|s| s.jwt_secret);
    }
    Ok(cfg)
}

/// The request id of this CLI run in the audit log (`cli:<uuid>`): a command
/// that changes the platform straight in the database has no HTTP request, and
/// its rows still tie together and stand apart from other runs'.
pub(crate) fn run_id() -> String {
    format!("cli:{}", uuid::Uuid::new_v4())
}

/// Connects to the owner database URL of `cfg`.
pub(crate) async fn owner_client(cfg: &Config) -> anyhow::Result<tokio_postgres::Client> {
    use anyhow::Context;
    let url = cfg.database.url.as_deref().context(
        "no database: set DATABASE_URL (or database.url in wasmbase.toml), or run this inside a project where `wasmbase dev` has run",
    )?;
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to the database (`database.url`)")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// `bench-render`: median and p99 of `runs` transformations of `file` by the
/// same code the server runs, without HTTP, storage or cache.
fn bench_render(
    file: &std::path::Path,
    query: &str,
    webp: bool,
    runs: usize,
    make: Option<u32>,
) -> anyhow::Result<()> {
    use wasmbase_host_api::storage::transform::{render, Transform};
    if let Some(side) = make {
        let img = image::RgbImage::from_fn(side, side, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        });
        img.save_with_format(file, image::ImageFormat::Jpeg)?;
        return Ok(());
    }
    let src = std::fs::read(file)?;
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let t = Transform::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs + 2 {
        let start = std::time::Instant::now();
        let out = render(&src, &t, webp).map_err(|e| anyhow::anyhow!("{}", e.message))?;
        std::hint::black_box(out);
        if i >= 2 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!("median_ms {:.2}", at(0.5));
    println!("p99_ms {:.2}", at(0.99));
    Ok(())
}

/// `bench-instantiate`: median and p99 of 2000 instantiations (after 200 warm-up).
async fn bench_instantiate(wasm: &std::path::Path) -> anyhow::Result<()> {
    let cache = std::env::temp_dir().join("wasmbase-bench-cache");
    let engine = crate::functions::Engine::new(cache, std::time::Duration::from_millis(2), 64, 0)?;
    let (bytes, m) = if wasm.is_dir() {
        let text = std::fs::read_to_string(wasm.join("function.toml"))?;
        let m = crate::functions::manifest::Manifest::parse(&text).map_err(anyhow::Error::msg)?;
        let t = std::time::Instant::now();
        let target = std::env::temp_dir().join("wasmbase-bench-target");
        let (bytes, _) =
            crate::functions::build::component(&engine, wasm, &m, &target, false).await?;
        println!(
            "build (first on this node, engine compiled once): {:.1} ms, component {} KiB",
            t.elapsed().as_secs_f64() * 1e3,
            bytes.len() / 1024
        );
        let t = std::time::Instant::now();
        crate::functions::build::component(&engine, wasm, &m, &target, false).await?;
        println!("build again: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        (bytes, m)
    } else {
        let m = crate::functions::manifest::Manifest::parse("name = \"bench\"")
            .map_err(anyhow::Error::msg)?;
        (std::fs::read(wasm)?, m)
    };
    let t = std::time::Instant::now();
    let f = crate::functions::load::prepare(&engine, m, &bytes, "bench".into(), None)?;
    println!(
        "load (compile, or the cached artifact): {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    crate::functions::invoke::time_instantiations(&f, 200).await?;
    let d = crate::functions::invoke::time_instantiations(&f, 2000).await?;
    let us = |i: usize| d[i.min(d.len() - 1)].as_secs_f64() * 1e6;
    println!(
        "median {:.1} us, p99 {:.1} us",
        us(d.len() / 2),
        us(d.len() * 99 / 100)
    );
    for (warm, what) in [(false, "fresh instance"), (true, "warm instance")] {
        let c = crate::functions::invoke::time_calls(&f, 2000, br#"{"a":1}"#, warm).await?;
        let cus = |i: usize| c[i.min(c.len() - 1)].as_secs_f64() * 1e6;
        eprintln!(
            "whole call (no HTTP server), {what}: median {:.1} us, p99 {:.1} us",
            cus(c.len() / 2),
            cus(c.len() * 99 / 100)
        );
    }
    Ok(())
}
