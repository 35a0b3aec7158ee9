//! `wasmbase storage buckets | ls | cp | rm [-r] | sign`: the storage API from
//! a terminal, with the secret key (from flags, the environment or the
//! project's `.wasmbase/env`, as `deploy`). Remote paths are written
//! `ss:///bucket/path` (as the Supabase CLI). Files stream both ways; a large
//! transfer prints its progress.

use super::deploy::Target;
use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// `wasmbase storage …`
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// List buckets.
    Buckets,
    /// List one folder level: `ss:///bucket[/prefix]`.
    Ls {
        /// `ss:///bucket/prefix`
        path: String,
    },
    /// Copy a local file to a bucket or back: `cp FILE ss:///b/p` or `cp ss:///b/p FILE`.
    Cp {
        /// Source.
        from: String,
        /// Destination.
        to: String,
    },
    /// Remove objects; with `-r`, folders and everything below them.
    Rm {
        /// Delete folders recursively.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// `ss:///bucket/path` (one bucket per call).
        paths: Vec<String>,
    },
    /// Print a signed download URL.
    Sign {
        /// `ss:///bucket/path`
        path: String,
        /// Seconds the URL works.
        #[arg(long, default_value_t = 3600)]
        expires_in: u64,
    },
}

/// `ss:///bucket/path` → (bucket, path).
fn remote(p: &str) -> Option<(String, String)> {
    let rest = p.strip_prefix("ss:///")?;
    let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (bucket.to_string(), path.to_string()))
}

/// Runs a `storage` command.
pub async fn run(a: Args) -> Result<()> {
    let (url, key) = a.target.resolve()?;
    let http = reqwest::Client::new();
    let api = |m: reqwest::Method, path: &str| {
        http.request(m, format!("{url}/storage/v1{path}"))
            .header("apikey", &key)
            .header("authorization", format!("Bearer {key}"))
    };
    let check = |r: reqwest::Response| async move {
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        let v: Value = r.json().await.unwrap_or(Value::Null);
        bail!(
            "{} ({}): {}",
            v["code"].as_str().unwrap_or("error"),
            v["statusCode"].as_str().unwrap_or(status.as_str()),
            v["message"].as_str().unwrap_or("")
        )
    };
    match a.cmd {
        Cmd::Buckets => {
            let v: Value = check(api(reqwest::Method::GET, "/bucket").send().await?)
                .await?
                .json()
                .await?;
            for b in v.as_array().into_iter().flatten() {
                println!(
                    "{}\t{}\t{}",
                    b["id"].as_str().unwrap_or(""),
                    if b["public"] == true {
                        "public"
                    } else {
                        "private"
                    },
                    b["file_size_limit"]
                );
            }
        }
        Cmd::Ls { path } => {
            let (bucket, prefix) = remote(&path).context("ls takes ss:///bucket[/prefix]")?;
            let prefix = if prefix.is_empty() || prefix.ends_with('/') {
                prefix
            } else {
                format!("{prefix}/")
            };
            let mut cursor: Option<String> = None;
            loop {
                let body = json!({"prefix": prefix, "with_delimiter": true, "cursor": cursor});
                let v: Value = check(
                    api(reqwest::Method::POST, &format!("/object/list-v2/{bucket}"))
                        .json(&body)
                        .send()
                        .await?,
                )
                .await?
                .json()
                .await?;
                for f in v["folders"].as_array().into_iter().flatten() {
                    println!("{}", f["name"].as_str().unwrap_or(""));
                }
                for o in v["objects"].as_array().into_iter().flatten() {
                    println!(
                        "{}\t{}",
                        o["name"].as_str().unwrap_or(""),
                        o["metadata"]["size"]
                    );
                }
                match v["nextCursor"].as_str() {
                    Some(c) if v["hasNext"] == true => cursor = Some(c.to_string()),
                    _ => break,
                }
            }
        }
        Cmd::Cp { from, to } => match (remote(&from), remote(&to)) {
            (None, Some((bucket, path))) => {
                let file = tokio::fs::File::open(&from)
                    .await
                    .with_context(|| format!("opening {from}"))?;
                let size = file.metadata().await?.len();
                let progress = Progress::new(size);
                let body =
                    tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |c| {
                        if let Ok(c) = &c {
                            progress.add(c.len() as u64);
                        }
                        c
                    });
                check(
                    api(reqwest::Method::POST, &format!("/object/{bucket}/{path}"))
                        .header("x-upsert", "true")
                        .header("content-type", "application/octet-stream")
                        .header("content-length", size)
                        .body(reqwest::Body::wrap_stream(body))
                        .send()
                        .await?,
                )
                .await?;
            }
            (Some((bucket, path)), None) => {
                let r = check(
                    api(reqwest::Method::GET, &format!("/object/{bucket}/{path}"))
                        .send()
                        .await?,
                )
                .await?;
                let progress = Progress::new(r.content_length().unwrap_or(0));
                // Written beside the destination, renamed when whole.
                let part = format!("{to}.part");
                let mut out = tokio::fs::File::create(&part)
                    .await
                    .with_context(|| format!("creating {part}"))?;
                let mut s = r.bytes_stream();
                while let Some(c) = s.next().await {
                    let c = c?;
                    progress.add(c.len() as u64);
                    out.write_all(&c).await?;
                }
                out.sync_all().await?;
                tokio::fs::rename(&part, Path::new(&to)).await?;
            }
            _ => bail!("cp copies a local file to ss:///bucket/path or back"),
        },
        Cmd::Rm { recursive, paths } => {
            let mut bucket = None;
            let mut names = Vec::new();
            for p in &paths {
                let (b, n) = remote(p).context("rm takes ss:///bucket/path")?;
                if bucket.get_or_insert_with(|| b.clone()) != &b {
                    bail!("rm takes paths of one bucket per call");
                }
                names.push(n);
            }
            let bucket = bucket.context("rm needs a path")?;
            let v: Value = check(
                api(reqwest::Method::DELETE, &format!("/object/{bucket}"))
                    .json(&json!({"prefixes": names, "recursive": recursive}))
                    .send()
                    .await?,
            )
            .await?
            .json()
            .await?;
            for o in v.as_array().into_iter().flatten() {
                println!("removed {}", o["name"].as_str().unwrap_or(""));
            }
        }
        Cmd::Sign { path, expires_in } => {
            let (bucket, path) = remote(&path).context("sign takes ss:///bucket/path")?;
            let v: Value = check(
                api(
                    reqwest::Method::POST,
                    &format!("/object/sign/{bucket}/{path}"),
                )
                .json(&json!({"expiresIn": expires_in}))
                .send()
                .await?,
            )
            .await?
            .json()
            .await?;
            println!("{url}/storage/v1{}", v["signedURL"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}

/// A progress line on stderr for transfers over 8 MiB, at most once a second.
struct Progress {
    total: u64,
    state: std::sync::Mutex<(u64, Instant)>,
}

impl Progress {
    fn new(total: u64) -> std::sync::Arc<Progress> {
        std::sync::Arc::new(Progress {
            total,
            state: std::sync::Mutex::new((0, Instant::now())),
        })
    }

    fn add(&self, n: u64) {
        if self.total < 8 * 1024 * 1024 {
            return;
        }
        let mut s = self.state.lock().expect("progress lock");
        s.0 += n;
        if s.1.elapsed() >= Duration::from_secs(1) || s.0 == self.total {
            s.1 = Instant::now();
            eprint!(
                "\r{:>3}% {} / {} MiB",
                s.0 * 100 / self.total.max(1),
                s.0 >> 20,
                self.total >> 20
            );
            if s.0 == self.total {
                eprintln!();
            }
        }
    }
}
