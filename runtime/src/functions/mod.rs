//! Edge functions: WebAssembly components served at `/functions/v1/:name` and
//! `/fn/:name`.
//!
//! [`engine`] (one wasmtime `Engine`, pooling allocator, epoch ticker, compiled
//! artifact cache) → [`load`] (manifest + component, checked against its
//! grants) → [`registry`] (what is serving, swapped atomically, versioned) →
//! [`invoke`] (one call in three steps: [`admission`] control, the
//! [`instance`] — a fresh `Store` per request from a cached `InstancePre`, or a
//! [`warm`] one for functions that opt in, with a memory cap, epoch yields and
//! a wall-clock timeout — and the invocation log [`record`]).
//! [`outbound`] is the host allowlist for outgoing HTTP; [`build`] runs cargo
//! for Rust functions and [`watch`] rebuilds them on change in `dev`.

pub mod admission;
pub mod buffered;
pub mod build;
pub mod deploy;
pub mod engine;
pub mod instance;
pub mod invoke;
pub mod js;
pub mod load;
pub mod logs;
pub mod manifest;
pub mod outbound;
pub mod record;
pub mod registry;
pub mod scheduled;
pub mod secrets;
pub mod warm;
pub mod watch;

pub use engine::Engine;
pub use registry::Registry;

use crate::server::state::AppState;
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The functions of a node: engine, what is serving, and what calls share.
pub struct Functions {
    /// Engine, linker, artifact cache.
    pub engine: Arc<Engine>,
    /// What is serving.
    pub registry: Registry,
    /// Calls in flight across all functions.
    pub global: Arc<Semaphore>,
    /// Guest database calls in flight (a bounded share of the pool).
    pub db_permits: Arc<Semaphore>,
    /// Raw SQL pool (`wasmbase_functions`, reset by clean recycling between uses).
    pub sql_pool: Pool,
    /// Directory of function sources.
    pub dir: PathBuf,
    /// Cargo target directory of guest builds.
    pub target_dir: PathBuf,
    /// Build Rust functions with cargo before loading them.
    pub build: bool,
    /// Watch `dir` and reload on change.
    pub watch: bool,
    /// Serve the functions of `dir` (dev); deployed ones are always served.
    pub local: bool,
    /// Env values functions may be granted: secrets over the dev `.env`.
    pub env: arc_swap::ArcSwap<HashMap<String, String>>,
    /// The project's `.env` (dev), merged under the secrets.
    pub dotenv: HashMap<String, String>,
    /// Cipher of `functions.secrets_key` (None: secrets unavailable).
    pub secrets: Option<aes_gcm::Aes256Gcm>,
    /// Invocation log queue.
    pub logs: logs::Sink,
    /// Serialises cargo builds (one at a time on small machines).
    pub build_lock: tokio::sync::Mutex<()>,
    /// Serialises installing deployed versions (see `deploy::sync_one`).
    pub sync_lock: tokio::sync::Mutex<()>,
}

/// Reads `KEY=VALUE` lines (a project's `.env`); missing file → empty.
pub fn read_dotenv(path: &Path) -> HashMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .unwrap_or(v);
            Some((
                k.trim().trim_start_matches("export ").to_string(),
                v.to_string(),
            ))
        })
        .collect()
}

/// Function directories under `dir` (those with a `function.toml`), sorted.
pub fn function_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.join("function.toml").is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Builds (if configured) and loads the function in `fdir`, swapping it in on
/// success; on failure the error is logged and recorded, and whatever was
/// serving keeps serving. Returns the registry version after the attempt.
pub async fn load_dir(st: &AppState, fdir: &Path) -> u64 {
    let fx = &st.functions;
    let manifest_path = fdir.join("function.toml");
    let manifest = match std::fs::read_to_string(&manifest_path)
        .map_err(|e| format!("{}: {e}", manifest_path.display()))
        .and_then(|t| manifest::Manifest::parse(&t).map_err(|e| format!("{}: {e}", fdir.display())))
    {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("{e}");
            let name = fdir.file_name().and_then(|n| n.to_str()).unwrap_or("?");
            return fx.registry.failed(name, e);
        }
    };
    let name = manifest.name.clone();
    if !matches!(fx.registry.get(&name), registry::Availability::Ready(_)) {
        fx.registry.starting(&name);
    }
    let result: anyhow::Result<load::Loaded> = async {
        let (wasm, source) = {
            let _one = fx.build_lock.lock().await;
            tracing::info!(function = %name, "building");
            build::component(&fx.engine, fdir, &manifest, &fx.target_dir, fx.build).await?
        };
        let engine = fx.engine.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            load::prepare(&engine, manifest, &wasm, source, None)
        })
        .await??;
        Ok(loaded)
    }
    .await;
    match result {
        Ok(loaded) => {
            tracing::info!(function = %name, hash = %&loaded.hash[..12], "function loaded");
            let jobs = loaded.manifest.cron_jobs();
            let version = fx.registry.install(loaded);
            // `dev` has no deploy step: its [[cron]] entries follow the files.
            let r = async {
                let c = st.system.get().await?;
                crate::cron::job::sync_manifest(&**c, &name, &jobs, "dev".into()).await?;
                anyhow::Ok(())
            };
            if let Err(e) = r.await {
                tracing::warn!(function = %name, error = %format!("{e:#}"), "registering its [[cron]] jobs");
            }
            version
        }
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::error!(function = %name, "not loaded (the previous version, if any, keeps serving): {msg}");
            fx.registry.failed(&name, msg)
        }
    }
}

/// Loads every function of the directory (in the background at start).
pub async fn load_all(st: AppState) {
    if !st.functions.local {
        return;
    }
    let dirs = function_dirs(&st.functions.dir);
    for d in &dirs {
        if let Ok(t) = std::fs::read_to_string(d.join("function.toml")) {
            if let Ok(m) = manifest::Manifest::parse(&t) {
                st.functions.registry.starting(&m.name);
            }
        }
    }
    for d in dirs {
        load_dir(&st, &d).await;
    }
}
