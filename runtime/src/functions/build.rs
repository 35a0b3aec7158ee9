//! The component a function directory provides: JS/TS built here (see
//! `js`), Rust built with cargo (`--target wasm32-wasip2 --release`) into one
//! shared guest target directory, or a `<name>.wasm` found as is.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where the component of the function in `dir` is: the cargo artifact for a
/// Rust crate, else `<dir>/<name>.wasm`.
pub fn artifact(dir: &Path, name: &str, target_dir: &Path) -> Result<PathBuf> {
    let cargo = dir.join("Cargo.toml");
    if cargo.exists() {
        let text = std::fs::read_to_string(&cargo)?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("{}", cargo.display()))?;
        let pkg = table
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .with_context(|| format!("{}: no [package] name", cargo.display()))?;
        let lib = table
            .get("lib")
            .and_then(|l| l.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or(pkg);
        if lib.is_empty()
            || !lib
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            anyhow::bail!(
                "{}: crate name {lib:?} is not a plain name",
                cargo.display()
            );
        }
        return Ok(target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", lib.replace('-', "_"))));
    }
    Ok(dir.join(format!("{name}.wasm")))
}

/// Runs cargo for the function in `dir` (no-op without a Cargo.toml). The
/// output goes to the log; the error names the function.
pub async fn cargo_build(dir: &Path, target_dir: &Path) -> Result<()> {
    if !dir.join("Cargo.toml").exists() {
        return Ok(());
    }
    let out =
        tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--target", "wasm32-wasip2", "--release", "--quiet"])
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", target_dir)
            .env_remove("RUSTFLAGS")
            .kill_on_drop(true)
            .output()
            .await
            .context("running cargo (is Rust installed? `rustup target add wasm32-wasip2`)")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "cargo build failed in {}:\n{}",
            dir.display(),
            tail.join("\n")
        );
    }
    Ok(())
}

/// The component of the function in `dir` and where it came from: a JS/TS
/// function is built here (always: it needs no toolchain); a Rust one is
/// built with cargo when `cargo` is set, else its last build is read.
pub async fn component(
    engine: &std::sync::Arc<super::Engine>,
    dir: &Path,
    manifest: &super::manifest::Manifest,
    target_dir: &Path,
    cargo: bool,
) -> Result<(Vec<u8>, String)> {
    if super::js::is_js(dir, manifest) {
        let m = std::sync::Arc::new(manifest.clone());
        return Ok((
            super::js::build(engine, dir, &m).await?,
            dir.display().to_string(),
        ));
    }
    if cargo {
        cargo_build(dir, target_dir).await?;
    }
    let path = artifact(dir, &manifest.name, target_dir)?;
    let wasm = std::fs::read(&path).with_context(|| {
        format!(
            "reading {}; build it first (cargo build --target wasm32-wasip2 --release)",
            path.display()
        )
    })?;
    Ok((wasm, path.display().to_string()))
}
