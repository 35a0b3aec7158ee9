//! `wasmbase deploy` and `wasmbase functions …`: build locally, then talk to a
//! running server's `/admin/v1/functions` with a secret key (from flags, the
//! environment, or the project's `.wasmbase/env`).

use crate::functions::{build, function_dirs, manifest::Manifest};
use crate::project;
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Where the server is and how to authenticate.
#[derive(clap::Args, Clone)]
pub(crate) struct Target {
    /// Server URL (default: $WASMBASE_URL, else the local project's).
    #[arg(long, global = true)]
    url: Option<String>,
    /// Secret key (default: $WASMBASE_SECRET_KEY, else the local project's).
    #[arg(long, global = true)]
    key: Option<String>,
}

impl Target {
    /// (server URL without a trailing slash, secret key).
    pub(crate) fn resolve(&self) -> Result<(String, String)> {
        let env = project::read_env(&project::state_dir(&std::env::current_dir()?));
        let url = self
            .url
            .clone()
            .or_else(|| std::env::var("WASMBASE_URL").ok())
            .or_else(|| project::env_get(&env, "WASMBASE_URL").map(str::to_string))
            .context("no server: pass --url, set WASMBASE_URL, or run inside a project where `wasmbase dev` runs")?;
        let key = self
            .key
            .clone()
            .or_else(|| std::env::var("WASMBASE_SECRET_KEY").ok())
            .or_else(|| project::env_get(&env, "SECRET_KEY").map(str::to_string))
            .context("no secret key: pass --key or set WASMBASE_SECRET_KEY")?;
        Ok((url.trim_end_matches('/').to_string(), key))
    }
}

/// Arguments of `deploy`.
#[derive(clap::Args)]
pub struct DeployArgs {
    /// A function directory, or a name under ./functions (default: all of them).
    what: Option<String>,
    #[command(flatten)]
    target: Target,
}

async fn call(
    target: &Target,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let (url, key) = target.resolve()?;
    let mut req = reqwest::Client::new()
        .request(method, format!("{url}{path}"))
        .header("apikey", &key)
        .header("authorization", format!("Bearer {key}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("reaching {url}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    if !status.is_success() {
        let msg = v["message"].as_str().unwrap_or(&text).to_string();
        bail!("{status}: {msg}");
    }
    Ok(v)
}

fn function_dir(what: &str) -> Result<PathBuf> {
    let p = Path::new(what);
    if p.join("function.toml").is_file() {
        return Ok(p.to_path_buf());
    }
    let by_name = Path::new("functions").join(what);
    if by_name.join("function.toml").is_file() {
        return Ok(by_name);
    }
    bail!("{what}: neither a function directory nor a name under ./functions")
}

/// The engine a deploy builds JS/TS functions with (the same settings and
/// code cache as the server's).
fn engine() -> Result<std::sync::Arc<crate::functions::Engine>> {
    crate::functions::Engine::new(
        crate::cache_dir::default("functions"),
        std::time::Duration::from_millis(2),
        4,
        0,
    )
}

/// Builds and uploads one function; prints its new version.
async fn deploy_one(
    dir: &Path,
    target: &Target,
    engine: &std::sync::Arc<crate::functions::Engine>,
) -> Result<()> {
    let text = std::fs::read_to_string(dir.join("function.toml"))
        .with_context(|| format!("{}/function.toml", dir.display()))?;
    let manifest = Manifest::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let target_dir = project::state_dir(&std::env::current_dir()?).join("target");
    println!("building {} …", manifest.name);
    let (wasm, _) = build::component(engine, dir, &manifest, &target_dir, true).await?;
    let body = json!({
        "manifest": text,
        "component": base64::engine::general_purpose::STANDARD.encode(&wasm),
    });
    let v = call(
        target,
        reqwest::Method::POST,
        &format!("/admin/v1/functions/{}", manifest.name),
        Some(body),
    )
    .await?;
    println!(
        "deployed {} version {} ({} KiB, sha256 {})",
        manifest.name,
        v["version"],
        wasm.len() / 1024,
        v["hash"]
            .as_str()
            .map(|h| &h[..12.min(h.len())])
            .unwrap_or("?")
    );
    Ok(())
}

/// `wasmbase deploy [PATH|NAME]`.
pub async fn deploy(a: DeployArgs) -> Result<()> {
    let dirs = match &a.what {
        Some(w) => vec![function_dir(w)?],
        None => function_dirs(Path::new("functions")),
    };
    if dirs.is_empty() {
        bail!("no functions under ./functions (create one with `wasmbase fn new NAME`)");
    }
    let engine = engine()?;
    for d in dirs {
        deploy_one(&d, &a.target, &engine).await?;
    }
    Ok(())
}

/// Arguments of `functions`.
#[derive(clap::Args)]
pub struct FunctionsArgs {
    #[command(subcommand)]
    cmd: FunctionsCmd,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Subcommand)]
enum FunctionsCmd {
    /// Deployed and local functions, with their active versions.
    List,
    /// Every stored version of a function.
    Versions {
        /// Function name.
        name: String,
    },
    /// Make an earlier version active again (default: the one before the active one).
    Rollback {
        /// Function name.
        name: String,
        /// Version to activate.
        version: Option<i32>,
    },
    /// Recent invocations (status, duration, log lines) from every node.
    Logs {
        /// Function name.
        name: String,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Delete a deployed function and all its versions.
    Delete {
        /// Function name.
        name: String,
    },
}

/// Guest-written text with control characters (terminal escapes) made visible.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// `wasmbase functions …`.
pub async fn functions(a: FunctionsArgs) -> Result<()> {
    use reqwest::Method;
    let t = &a.target;
    match a.cmd {
        FunctionsCmd::List => {
            let v = call(t, Method::GET, "/admin/v1/functions", None).await?;
            for f in v["functions"].as_array().into_iter().flatten() {
                match f["source"].as_str() {
                    Some("deployed") => println!(
                        "{:<24} deployed  v{:<4} ({} versions, updated {})",
                        f["name"].as_str().unwrap_or(""),
                        f["active_version"],
                        f["versions"],
                        f["updated_at"].as_str().unwrap_or("")
                    ),
                    _ => {
                        println!("{:<24} local", f["name"].as_str().unwrap_or(""));
                        if let Some(e) = f["error"].as_str() {
                            println!("    last build/load failed: {e}");
                        }
                    }
                }
            }
        }
        FunctionsCmd::Versions { name } => {
            let v = call(
                t,
                Method::GET,
                &format!("/admin/v1/functions/{name}/versions"),
                None,
            )
            .await?;
            for x in v["versions"].as_array().into_iter().flatten() {
                println!(
                    "{}v{:<4} {}  {}  by {}",
                    if x["active"] == true { "* " } else { "  " },
                    x["version"],
                    x["created_at"].as_str().unwrap_or(""),
                    x["hash"]
                        .as_str()
                        .map(|h| &h[..12.min(h.len())])
                        .unwrap_or(""),
                    x["created_by"].as_str().unwrap_or("")
                );
            }
        }
        FunctionsCmd::Rollback { name, version } => {
            let v = call(
                t,
                Method::POST,
                &format!("/admin/v1/functions/{name}/rollback"),
                Some(json!({ "version": version })),
            )
            .await?;
            println!("{name} now serves version {}", v["version"]);
        }
        FunctionsCmd::Logs { name, limit } => {
            let v = call(
                t,
                Method::GET,
                &format!("/admin/v1/functions/{name}/logs?limit={limit}"),
                None,
            )
            .await?;
            for l in v["logs"].as_array().into_iter().flatten().rev() {
                println!(
                    "{} {} {} {}ms {}",
                    l["at"].as_str().unwrap_or(""),
                    l["status"],
                    l["outcome"].as_str().unwrap_or(""),
                    l["duration_ms"],
                    l["request_id"].as_str().unwrap_or("")
                );
                for line in l["lines"].as_array().into_iter().flatten() {
                    println!(
                        "    [{}] {}",
                        printable(line["level"].as_str().unwrap_or("")),
                        printable(line["message"].as_str().unwrap_or(""))
                    );
                }
            }
            if v["dropped"].as_u64().unwrap_or(0) > 0 {
                println!(
                    "({} records dropped on the serving node: log queue full)",
                    v["dropped"]
                );
            }
        }
        FunctionsCmd::Delete { name } => {
            call(
                t,
                Method::DELETE,
                &format!("/admin/v1/functions/{name}"),
                None,
            )
            .await?;
            println!("deleted {name}");
        }
    }
    Ok(())
}
